"""The detector agent's feed across a crash between its two writes (pure: no broker).

A batch's user states are written and acknowledged before the partition's
progress. A crash in between leaves states that are ahead of the progress; the
replayed batch must neither feed an event twice nor lose the batch's counts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from stream_processors.detection.agent import NEW_PROGRESS, Batch, delete_pruned, feed, finish, prune, settle
from stream_processors.detection.stage import DetectorStage
from stream_processors.table_writes import BufferedTable
from tokentrail.envelope import FORMAT_HEADER, encode_event
from tokentrail.pricing import PriceTable

PRICES = PriceTable.load()
T0 = "2026-11-16T00:00:{:02d}Z"


class Table:
    """What BufferedTable touches of a Faust table; the changelog is not needed here."""

    class Topic:
        def get_topic_name(self) -> str:
            return "detector-user-state-changelog"

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog_topic = self.Topic()

    def send_changelog(self, *_: Any, **__: Any) -> None:
        pass


@dataclass
class Inner:
    offset: int
    partition: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [FORMAT_HEADER])  # from our producers


@dataclass
class Message:
    message: Inner
    value: bytes


def envelopes(n: int, users: int = 3, resend_every: int = 7) -> list[Message]:
    """n envelopes of a few events each; every ``resend_every``-th event is a re-send."""
    out = []
    k = 0
    for offset in range(n):
        events = []
        for _ in range(4):
            k += 1
            i = k - 1 if k % resend_every == 0 else k  # re-send of the previous event id
            user = f"user-{i % users}"  # a re-send goes to the same user, as it must
            raw = {"event_id": f"e-{i}", "timestamp": T0.format(i % 60), "user_id": user,
                   "org_id": "acme/eng", "model": "claude-sonnet-4", "input_tokens": 100 + i,
                   "output_tokens": 10, "client": "api", "prompt_hash": f"{i:04x}"}
            events.append(encode_event(raw, PRICES))
        out.append(Message(Inner(offset), orjson.dumps(events)))
    return out


def days_of_envelopes(n: int, users: int = 6, days: int = 4) -> list[Message]:
    """n envelopes of 4 events each, ``users`` users of two orgs over ``days`` days of
    event time (so users close days and feed their org's peer figures); some re-sends."""
    out, k = [], 0
    step = days * 86_400_000 // (4 * n)
    for offset in range(n):
        events = []
        for _ in range(4):
            k += 1
            i = k - 1 if k % 11 == 0 else k
            ts = 1_794_787_200_000 + i * step
            stamp = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raw = {"event_id": f"e-{i}", "timestamp": stamp, "user_id": f"user-{i % users}",
                   "org_id": "acme/eng" if i % users < users // 2 else "acme/ops", "model": "claude-sonnet-4",
                   "input_tokens": 100 + 37 * (i % 13) * (1 + i % users), "output_tokens": 10,
                   "client": "api", "prompt_hash": f"{i:04x}", "session_id": f"s-{i // 40}"}
            events.append(encode_event(raw, PRICES))
        out.append(Message(Inner(offset), orjson.dumps(events)))
    return out


def run_batch(stage: DetectorStage, states: BufferedTable, prog: dict[str, Any], batch_msgs: list[Message]) -> None:
    batch = Batch()
    feed(stage, states, prog, batch_msgs, PRICES, batch, 0)
    finish(stage, states, batch)
    settle(stage, batch, 0, prog)


def test_a_crash_between_state_and_progress_writes_feeds_and_counts_each_event_once() -> None:
    messages = envelopes(30)
    # Without a crash: two batches.
    clean_stage, clean_table = DetectorStage(), BufferedTable(Table())
    clean = dict(NEW_PROGRESS)
    for part in (messages[:15], messages[15:]):
        run_batch(clean_stage, clean_table, clean, part)
        clean_table.flush()

    # With a crash: the second batch's states are written, its progress is not.
    stage, table = DetectorStage(), BufferedTable(Table())
    prog = dict(NEW_PROGRESS)
    run_batch(stage, table, prog, messages[:15])
    table.flush()
    after_first = dict(prog)
    run_batch(stage, table, prog, messages[15:])
    table.flush()  # states durable ... then kill -9: the progress write is lost
    restarted, prog = DetectorStage(), dict(after_first)
    # Faust re-delivers from the last committed offset, in batches that need not match the lost one.
    for part in (messages[15:22], messages[22:]):
        run_batch(restarted, table, prog, part)
        table.flush()

    assert prog["fed"] == clean["fed"] > 0
    assert prog["duplicates"] == clean["duplicates"] > 0
    assert prog["offset"] == clean["offset"] == 29
    for user in ("user-0", "user-1", "user-2"):
        assert restarted.meta[user].fed == clean_stage.meta[user].fed
        assert restarted.meta[user].ids == clean_stage.meta[user].ids
        assert restarted.detector.state_bytes(user) == clean_stage.detector.state_bytes(user)


def _run(messages: list[Message], cuts: list[int]) -> tuple[DetectorStage, BufferedTable, dict[str, Any]]:
    stage, table, prog = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    for lo, hi in itertools.pairwise([0, *cuts, len(messages)]):
        run_batch(stage, table, prog, messages[lo:hi])
        table.flush()
    return stage, table, prog


@pytest.mark.parametrize("crashes", [1, 2])
def test_peer_figures_and_counts_survive_crashes_between_the_two_writes(crashes: int) -> None:
    """Users close days (feeding their org's peer figures) inside a batch whose progress
    is lost, once or twice in a row; the replay, in other batch sizes, must end with the
    same peer figures, counts and user states as a run without a crash."""
    messages = days_of_envelopes(120)
    clean_stage, _, clean = _run(messages, [40, 80])
    assert clean["peers"]["orgs"] and all(o[0] >= 4 for o in clean["peers"]["orgs"].values())

    stage, table, prog = _run(messages[:40], [])
    durable = dict(prog)
    run_batch(stage, table, prog, messages[40:80])
    table.flush()  # states durable, progress lost
    for _ in range(crashes - 1):  # restart, replay part of it, states durable, progress lost again
        stage, prog = DetectorStage(partitions=1), dict(durable)
        run_batch(stage, table, prog, messages[40:63])
        table.flush()
    stage, prog = DetectorStage(partitions=1), dict(durable)
    for lo, hi in ((40, 57), (57, 95), (95, 120)):
        run_batch(stage, table, prog, messages[lo:hi])
        table.flush()

    assert prog["peers"] == clean["peers"]
    for key in ("fed", "duplicates", "offset", "alerts"):
        assert prog[key] == clean[key], key
    for user in clean_stage.meta:
        assert stage.detector.state_bytes(user) == clean_stage.detector.state_bytes(user)


def test_a_replayed_batch_whose_progress_was_written_is_skipped() -> None:
    messages = envelopes(10)
    stage, table = DetectorStage(), BufferedTable(Table())
    prog = dict(NEW_PROGRESS)
    run_batch(stage, table, prog, messages)
    table.flush()
    done = dict(prog)
    run_batch(DetectorStage(), table, prog, messages)  # re-delivered after a restart
    assert prog == done


def test_users_idle_past_the_horizon_are_deleted_from_the_table() -> None:
    stage, table = DetectorStage(), BufferedTable(Table())
    prog = dict(NEW_PROGRESS)
    run_batch(stage, table, prog, envelopes(5))
    table.flush()
    assert set(table.local) == {"user-0", "user-1", "user-2"}
    stage.detector.part_now[0] += stage.detector.idle_ms + 86_400_000  # another user's events, weeks later
    prune(stage, table, prog, 0, partitions=1)
    assert prog["pruned"] == 3 and sorted(prog["prune_pending"]) == ["user-0", "user-1", "user-2"]
    durable = dict(prog)  # the progress record that counts them is written first ...
    assert delete_pruned(stage, table, prog, 0) == 3  # ... then they are deleted
    table.flush()
    assert table.local == {} and stage.meta == {} and "prune_pending" not in prog
    prune(stage, table, prog, 0, partitions=1)  # once per day of event time
    assert prog["pruned"] == 3

    # A crash after that record but before the deletions: the next batch deletes them.
    stage, table, prog = DetectorStage(), BufferedTable(Table()), dict(NEW_PROGRESS)
    run_batch(stage, table, prog, envelopes(5))
    table.flush()
    restarted, prog = DetectorStage(), {**durable, "offset": prog["offset"]}
    run_batch(restarted, table, prog, [])
    table.flush()
    assert table.local == {} and prog["pruned"] == 3


def test_batch_size_does_not_change_the_alerts_published() -> None:
    """A fast replay takes hours of event time per batch; live takes seconds. The alert
    messages (every version of every alert) must be the same either way."""
    from producers.simulator import build
    from stream_processors.detection.evaluate import START_MS
    from tokentrail.envelope import build_envelopes

    scenario = build(5, humans=4, days=1, start_ms=START_MS, bots_per_archetype=1)
    wire = [encode_event(e, PRICES) for e in scenario.events()]

    def published(events_per_batch: int) -> list[tuple[str, int]]:
        stage, table = DetectorStage(), BufferedTable(Table())
        prog, out, offset = dict(NEW_PROGRESS), [], 0
        for i in range(0, len(wire), events_per_batch):
            messages = []
            for _, value, _ in build_envelopes(wire[i:i + events_per_batch], 1):
                messages.append(Message(Inner(offset), value))
                offset += 1
            batch = Batch()
            feed(stage, table, prog, messages, PRICES, batch, 0)
            finish(stage, table, batch)
            table.flush()
            out += [(a.alert_id, a.window_end_ms) for a in batch.alerts]
        return out

    live = published(200)
    assert len(live) > len({a for a, _ in live}) > 0  # some alert grew: raised again with the same id
    assert published(len(wire)) == live
