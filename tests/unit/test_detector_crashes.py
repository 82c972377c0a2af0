"""The detector stage across crashes between its two writes, two crashes in a row,
replays cut into other batch sizes, users first seen in a lost batch, users back
after the idle horizon, and random combinations of those (pure: no broker).

Every run must end with the counters, peer figures and user states of a run
without a crash.
"""
# ruff: noqa: E501

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from stream_processors.detection.agent import NEW_PROGRESS, Batch, delete_pruned, feed, finish, prune, settle
from stream_processors.detection.stage import DetectorStage
from stream_processors.table_writes import BufferedTable
from tests.unit.test_detector_replay import PRICES, Inner, Message, Table
from tokentrail.envelope import encode_event

T = 1_794_787_200_000 - 40 * 86_400_000
DAY = 86_400_000


def ev(user: str, ts: int, eid: str, org: str = "acme/eng", tokens: int = 500) -> bytes:
    stamp = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raw = {"event_id": eid, "timestamp": stamp, "user_id": user, "org_id": org, "model": "claude-sonnet-4",
           "input_tokens": tokens, "output_tokens": 10, "client": "api", "prompt_hash": f"{abs(hash(eid)) % 65536:04x}",
           "session_id": "s"}
    return encode_event(raw, PRICES)


def msgs(plan: list[list[tuple[str, int]]]) -> list[Message]:
    """plan[offset] = [(user, ts), ...] -> one envelope per offset."""
    out = []
    for offset, events in enumerate(plan):
        out.append(Message(Inner(offset), orjson.dumps([ev(u, ts, f"{u}-{offset}-{i}") for i, (u, ts) in enumerate(events)])))
    return out


def run_batch(stage: DetectorStage, table: BufferedTable, prog: dict[str, Any], batch_msgs: list[Message],
              with_prune: bool = False, crash: bool = False) -> Batch:
    """As the agent: feed, finish, (prune), states durable, then the progress record
    (the caller keeps it, or with ``crash`` drops it: the process dies before it is
    written), then the pruned users' deletions."""
    batch = Batch()
    feed(stage, table, prog, batch_msgs, PRICES, batch, 0)
    finish(stage, table, batch)
    if with_prune:
        prune(stage, table, prog, 0, partitions=1)
    table.flush()  # (2) user states durable
    if crash:
        return batch
    settle(stage, batch, 0, prog)  # (3) progress
    delete_pruned(stage, table, prog, 0)
    table.flush()
    return batch


def crash_and_replay(messages, first_hi, lost_hi, replay_cuts, with_prune=False):
    """Batch [0, first_hi) durable; batch [first_hi, lost_hi) states durable, progress lost;
    restart and replay from first_hi in the given cuts up to len(messages)."""
    stage, table, prog = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    run_batch(stage, table, prog, messages[:first_hi], with_prune)
    durable = dict(prog)
    run_batch(stage, table, prog, messages[first_hi:lost_hi], with_prune, crash=True)
    stage, prog = DetectorStage(partitions=1), dict(durable)
    bounds = [first_hi, *replay_cuts, len(messages)]
    for lo, hi in itertools.pairwise(bounds):
        run_batch(stage, table, prog, messages[lo:hi], with_prune)
    return stage, prog


def clean_run(messages, cuts, with_prune=False):
    stage, table, prog = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    bounds = [0, *cuts, len(messages)]
    for lo, hi in itertools.pairwise(bounds):
        run_batch(stage, table, prog, messages[lo:hi], with_prune)
    return stage, prog


def test_new_user_in_the_lost_batch_is_counted() -> None:
    """A user first seen in the batch whose progress is lost: its skipped events must be
    handed back and counted."""
    plan = [[("old", T + i * 60_000)] for i in range(10)] + [[("new", T + i * 60_000)] for i in range(10, 20)]
    messages = msgs(plan)
    _, clean = clean_run(messages, [10])
    _, prog = crash_and_replay(messages, 10, 20, [])
    assert clean["fed"] == 20
    assert prog["fed"] == clean["fed"], (prog["fed"], clean["fed"])


def test_user_untouched_by_the_first_replay_batch_is_counted() -> None:
    """The replay is split differently from the lost batch: a user whose lost-batch events
    all lie in the second replay batch is still owed its counts there."""
    plan = ([[("a", T + i * 60_000), ("b", T + i * 60_000 + 1)] for i in range(10)]
            + [[("a", T + i * 60_000)] for i in range(10, 20)]
            + [[("b", T + i * 60_000)] for i in range(20, 30)])
    messages = msgs(plan)
    _, clean = clean_run(messages, [10])
    _, prog = crash_and_replay(messages, 10, 30, [20])
    assert clean["fed"] == 40
    assert prog["fed"] == clean["fed"], (prog["fed"], clean["fed"])


def test_risk_updates_of_the_lost_batch_are_counted() -> None:
    """Risk updates published by the lost batch: the replay skips the user and publishes
    nothing, so the user's state must hand the count back."""
    plan = [[("bot", T + (o * 20 + k) * 10_000) for k in range(20)] for o in range(54)]  # 3 h of a 10 s loop
    messages = msgs(plan)
    _, clean = clean_run(messages, [2])
    _, prog = crash_and_replay(messages, 2, 54, [])
    assert clean["fed"] == prog["fed"]
    assert clean["risk_updates"] > 0
    assert prog["risk_updates"] == clean["risk_updates"], (prog["risk_updates"], clean["risk_updates"])


def test_users_pruned_by_the_lost_batch_are_counted() -> None:
    """Users pruned by the lost batch are counted once (their deletions wait for the record)."""
    plan = [[("z", T), ("w", T)], [("w", T + 20 * DAY)]]
    messages = msgs(plan)
    _, clean = clean_run(messages, [1], with_prune=True)
    _, prog = crash_and_replay(messages, 1, 2, [], with_prune=True)
    assert clean["pruned"] == 1
    assert prog["pruned"] == clean["pruned"], (prog["pruned"], clean["pruned"])


def test_a_restart_does_not_change_a_user_returning_after_the_idle_horizon() -> None:
    """Whether a user back after the idle horizon continues or starts afresh is decided by
    its own events, not by what the process saw or when it restarted."""
    plan = [[("z", T), ("w", T)], [("w", T + 15 * DAY), ("z", T + 15 * DAY + 60_000)]]
    messages = msgs(plan)
    clean_stage, _ = clean_run(messages, [1])
    stage, table, prog = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    run_batch(stage, table, prog, messages[:1])
    restarted = DetectorStage(partitions=1)  # clean restart: progress was written
    run_batch(restarted, table, prog, messages[1:])
    assert clean_stage.meta["z"].fed == 2
    assert restarted.meta["z"].fed == clean_stage.meta["z"].fed
    assert restarted.detector.state_bytes("z") == clean_stage.detector.state_bytes("z")


# Random crash points, split replays, a second crash, users joining over time, late events.
FUZZ_T = 1_794_787_200_000 - 40 * DAY


def random_envelopes(n: int, seed: int) -> list[Message]:
    r = random.Random(seed)
    out: list[Message] = []
    k, last = 0, None
    step = 5 * DAY // (4 * n)
    for offset in range(n):
        events = []
        for _ in range(r.randint(1, 5)):
            k += 1
            if last and r.random() < 0.08:
                raw = last  # a re-send
            else:
                u = r.randrange(min(12, 1 + offset // 4))  # users appear over time
                ts = FUZZ_T + k * step + r.randint(-3_600_000, 0)  # some late events
                org = ["o1", "o2"][u % 2] if offset < n * 0.6 or u != 3 else "o2"  # one user changes org
                raw = {"event_id": f"e{k}", "timestamp": datetime.fromtimestamp(ts / 1000, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"), "user_id": f"u{u}", "org_id": org, "model": "m",
                    "input_tokens": r.randint(10, 50_000), "output_tokens": 10, "client": "api",
                    "prompt_hash": f"{r.randrange(64):04x}", "session_id": f"s{k // 30}"}
            last = raw
            events.append(encode_event(raw, PRICES))
        out.append(Message(Inner(offset), orjson.dumps(events)))
    return out


def random_cuts(r: random.Random, lo: int, hi: int) -> list[int]:
    inner = sorted(r.sample(range(lo + 1, hi), min(3, hi - lo - 1))) if hi - lo > 1 else []
    return [lo, *inner, hi]


def fuzz_differences(seed: int) -> list[str]:
    """Run the same envelopes without a crash and with random crashes; what differs."""
    r = random.Random(seed)
    messages = random_envelopes(160, seed)
    clean_stage, clean_table, clean = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    for lo, hi in itertools.pairwise(random_cuts(r, 0, 160)):
        run_batch(clean_stage, clean_table, clean, messages[lo:hi])

    stage, table, prog = DetectorStage(partitions=1), BufferedTable(Table()), dict(NEW_PROGRESS)
    first = r.randrange(1, 100)
    lost = r.randrange(first + 1, 150)
    run_batch(stage, table, prog, messages[:first])
    durable = dict(prog)
    run_batch(stage, table, prog, messages[first:lost], crash=True)  # states durable, progress lost
    if r.random() < 0.5:  # a second crash in the middle of the replay
        stage, prog = DetectorStage(partitions=1), dict(durable)
        bounds = random_cuts(r, first, r.randrange(first + 1, 160))
        for lo, hi in itertools.pairwise(bounds[:-1]):
            run_batch(stage, table, prog, messages[lo:hi])
            durable = dict(prog)
        run_batch(stage, table, prog, messages[bounds[-2]:bounds[-1]], crash=True)  # lost again
    stage, prog = DetectorStage(partitions=1), dict(durable)
    for lo, hi in itertools.pairwise(random_cuts(r, prog["offset"] + 1, 160)):
        run_batch(stage, table, prog, messages[lo:hi])

    differ = [k for k in ("fed", "duplicates", "alerts", "risk_updates", "offset", "peers") if prog[k] != clean[k]]
    for user in clean_stage.detector.users:
        want = clean_stage.detector.state_bytes(user)
        got = stage.detector.state_bytes(user) if user in stage.detector.users else table.local[user][-len(want):]
        if got != want:
            differ.append(user)
    return differ


@pytest.mark.parametrize("seed", range(30))
def test_random_crashes_and_replays_end_like_a_run_without_one(seed: int) -> None:
    assert fuzz_differences(seed) == []
