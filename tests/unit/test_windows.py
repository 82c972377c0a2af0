"""Event-time windows: exact sums, duplicates once, late events, org deltas idempotent."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from stream_processors import windows as w

T0 = 1_795_425_300_000  # a minute boundary
M0 = T0 // 60_000
HOUR = 3_600_000


def ev(i: int, ts: int, user: str = "u1", org: str = "a/b", tokens: int = 10) -> dict[str, Any]:
    return {"event_id": f"e{i}", "ts_ms": ts, "user_id": user, "org_id": org, "input_tokens": tokens,
            "output_tokens": 1, "cache_read_tokens": 2, "cache_write_tokens": 3, "cost_nanos": 100}


def run(state: w.UserWindows, envelopes: list[list[dict[str, Any]]], first: int = 0,
        stored: dict[str, bytes] | None = None) -> tuple[tuple[int, int, int], list[w.OrgMessage], dict[str, bytes]]:
    """One batch of one partition, as the usage agent runs it: fold, expire, take the deltas."""
    stored = {} if stored is None else stored
    counts = [0, 0, 0]
    for envelope in envelopes:
        for i, n in enumerate(state.fold(envelope)):
            counts[i] += n
    for key in state.expire():
        stored.pop(key)
    sums: w.OrgSums = {}
    last = first + len(envelopes) - 1
    records, orgs = state.take_deltas(first, last)
    for key, value in records:
        assert key not in stored  # a delta is never rewritten
        stored[key] = value
    w.add_org_sums(sums, orgs)
    return (counts[0], counts[1], counts[2]), w.org_messages(sums, [state.partition, last]), stored


def test_batch_sums_per_user_minute_and_org_prefix() -> None:
    state = w.UserWindows(0, 0, HOUR)
    events = [ev(1, T0), ev(2, T0 + 30_000), ev(3, T0 + 60_000), ev(4, T0, user="u2", org="a/c")]
    counts, messages, stored = run(state, [events[:2], events[2:]])
    assert counts == (4, 0, 0)
    buckets = w.merge_deltas(stored.items())
    assert buckets[("u1", M0)][: w.N_SUMS] == [2, 20, 2, 4, 6, 32, 200]
    assert buckets[("u1", M0)][w.N_SUMS] == ["e1", "e2"]
    assert buckets[("u2", M0)][0] == 1 and buckets[("u1", M0 + 1)][0] == 1
    by_org = {(m["org"], e[0]): e[1:] for m in messages for e in m["entries"]}
    assert by_org[("a", M0)][0] == 3  # u1 twice + u2 once in minute 0
    assert by_org[("a/b", M0 + 1)][0] == 1 and ("a/c", M0) in by_org
    assert all(m["tags"] == [0, 1] for m in messages)  # tagged with the batch end
    assert state.watermark_ms == T0 + 60_000
    assert len(stored) == 2  # one record per minute of the batch, not per user


def test_duplicates_count_once_within_and_across_batches_and_restarts() -> None:
    state = w.UserWindows(0, 0, HOUR)
    counts, _, stored = run(state, [[ev(1, T0), ev(1, T0)]])
    assert counts == (1, 1, 0)
    counts, _, stored = run(state, [[ev(1, T0), ev(2, T0)]], first=1, stored=stored)
    assert counts == (1, 1, 0)
    # after a restart the ids come back from the stored deltas
    restored = w.UserWindows(0, state.watermark_ms, HOUR)
    restored.load(stored.items())
    counts, _, stored = run(restored, [[ev(2, T0), ev(1, T0), ev(3, T0)]], first=2, stored=stored)
    assert counts == (1, 2, 0)
    assert w.merge_deltas(stored.items())[("u1", M0)][:2] == [3, 30]


def test_sealed_chunks_of_one_batch_sum_per_user_and_restore_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(w, "SEAL_EVENTS", 2)
    state = w.UserWindows(0, 0, HOUR)
    events = [ev(i, T0 + i, user=f"u{i % 2}") for i in range(5)]
    counts, _, stored = run(state, [events[:2], events[2:3], events[3:]])
    assert counts == (5, 0, 0) and len(stored) == 1
    [value] = stored.values()
    assert len(orjson.loads(value)[0]) == 2  # sealed after 2 events, then the rest at take_deltas
    buckets = w.merge_deltas(stored.items())
    assert buckets[("u0", M0)][0] == 3 and sorted(buckets[("u0", M0)][w.N_SUMS]) == ["e0", "e2", "e4"]
    restored = w.UserWindows(0, state.watermark_ms, HOUR)
    restored.load(stored.items())
    assert run(restored, [events], first=3, stored=stored)[0] == (0, 5, 0)


def test_records_of_the_unsealed_format_still_load() -> None:
    old = orjson.dumps([{"u1": [1, 10, 1, 2, 3, 16, 100, "e1"]}, {"a/b": [1, 10, 1, 2, 3, 16, 100]}])
    stored = {w.delta_key(0, M0, 0, 0): old}
    state = w.UserWindows(0, T0, HOUR)
    state.load(stored.items())
    assert run(state, [[ev(1, T0), ev(2, T0)]], first=1, stored=stored)[0] == (1, 1, 0)
    assert w.merge_deltas(stored.items())[("u1", M0)][:2] == [2, 20]


def test_replayed_batch_writes_nothing_new() -> None:
    """A batch re-processed after a crash (its deltas were stored) adds no delta,
    so a delta key is never written twice with different contents."""
    state = w.UserWindows(0, 0, HOUR)
    batch = [[ev(i, T0 + i * 20_000, user=f"u{i % 3}") for i in range(9)]]
    _, _, stored = run(state, batch, first=5)
    restored = w.UserWindows(0, 0, HOUR)
    restored.load(stored.items())
    counts, messages, again = run(restored, batch, first=5, stored=dict(stored))
    assert counts == (0, 9, 0) and messages == [] and again == stored


def test_same_event_id_of_two_users_counts_for_each_once() -> None:
    state = w.UserWindows(0, 0, HOUR)
    counts, _, stored = run(state, [[ev(1, T0, user="a"), ev(1, T0, user="b"), ev(1, T0, user="b")]])
    assert counts == (2, 1, 0)
    restored = w.UserWindows(0, state.watermark_ms, HOUR)
    restored.load(stored.items())
    assert run(restored, [[ev(1, T0, user="a"), ev(1, T0, user="b")]], first=1, stored=stored)[0] == (0, 2, 0)


def test_late_events_are_counted_not_windowed() -> None:
    state = w.UserWindows(0, 0, HOUR)
    counts, _, stored = run(state, [[ev(1, T0 + 2 * HOUR), ev(2, T0)]])
    assert counts == (1, 0, 1)
    assert ("u1", M0) not in w.merge_deltas(stored.items())


def test_expiry_deletes_old_minutes_and_drops_their_ids() -> None:
    state = w.UserWindows(0, 0, HOUR)
    _, _, stored = run(state, [[ev(1, T0), ev(2, T0 + 60_000)]])
    # counted, then expired within one batch: nothing is stored for that minute
    _, _, stored = run(state, [[ev(3, T0 + 30 * 60_000), ev(4, T0 + 2 * HOUR)]], first=1, stored=stored)
    assert sorted(m for _u, m in w.merge_deltas(stored.items())) == [M0 + 120]
    assert list(state.seen) == [M0 + 120]
    assert run(state, [[ev(5, T0 + HOUR + 60_000)]], first=2, stored=stored)[0] == (1, 0, 0)
    # restored deltas of minutes already out of retention are deleted by the first expiry
    restored = w.UserWindows(0, 0, HOUR)
    restored.load(stored.items())
    restored.watermark_ms = T0 + 4 * HOUR
    assert sorted(restored.expire()) == sorted(stored)


def test_org_deltas_are_re_sent_from_stored_deltas_after_a_crash() -> None:
    state = w.UserWindows(3, 0, HOUR)
    _, first_messages, stored = run(state, [[ev(1, T0)], [ev(2, T0 + 60_000)]], first=10)
    _, second_messages, stored = run(state, [[ev(3, T0 + 120_000)]], first=12, stored=stored)
    assert w.resend_org_deltas(3, stored.items(), delivered=11) == second_messages  # same entries and tags
    assert w.resend_org_deltas(3, stored.items(), delivered=9) == first_messages + second_messages
    assert w.resend_org_deltas(3, stored.items(), delivered=12) == []


def message(org: str, tags: list[int], *minutes: int, sources: int = -1) -> w.OrgMessage:
    return {"org": org, "tags": tags, "entries": [[m, 1, 2, 3, 4, 5, 14, 7, sources] for m in minutes]}


def record(**minutes: list[Any]) -> list[Any]:
    """An org-window record of the hour of M0 with buckets at minutes "m<i>" (M0 + i)."""
    slots: list[Any] = [None] * w.ORG_RECORD_MINUTES
    for name, bucket in minutes.items():
        slots[(M0 + int(name[1:])) % w.ORG_RECORD_MINUTES] = bucket
    return slots


def test_org_fold_applies_each_tag_once_in_the_stored_records() -> None:
    assert M0 % w.ORG_RECORD_MINUTES < 50  # the minutes below share one record
    key = w.org_key("x", M0)
    assert key == w.org_key("x", M0 + 1) and key.endswith(str(M0 - M0 % 60))
    stored = {key: record(m0=[1, 0, 0, 0, 0, 0, 0, {"0": 2}])}
    fold = w.OrgFold(stored)
    assert fold.apply(1, message("x", [0, 3, 1, 7], M0, M0 + 1)) == (M0 + 2) * 60_000 - 1
    fold.apply(1, message("x", [0, 5, 1, 9], M0 + 1, sources=0b10))  # only source 1's batch 9 sums into it
    fold.apply(1, message("x", [1, 9], M0, M0 + 1))  # re-sent alone after a crash: applied where it was not
    fold.apply(1, message("x", [0, 2], M0))  # applied before the batch
    got = {k: b for k, (_p, b) in fold.buckets.items()}
    assert got[key] is stored[key]  # updated in place, and listed to be written
    assert got == {key: record(m0=[3, 4, 6, 8, 10, 28, 14, {"0": 3, "1": 9}],
                               m1=[2, 4, 6, 8, 10, 28, 14, {"0": 3, "1": 9}])}
    assert w.org_minutes(got) == {("x", M0): [3, 4, 6, 8, 10, 28, 14], ("x", M0 + 1): [2, 4, 6, 8, 10, 28, 14]}
    assert fold.conflicts == 0
    fold.apply(1, message("x", [0, 4, 1, 9], M0))  # 1's batch 9 applied, 0's batch 4 not: cannot be split
    assert fold.conflicts == 1 and got[key][M0 % 60][0] == 3
    assert fold.new == []
    fold.apply(1, message("x", [2, 1], M0 + 60))  # the next hour: a new record
    assert fold.new == [(1, w.org_key("x", M0 + 60), M0 - M0 % 60 + 119)]


def test_a_minute_takes_a_lower_tag_than_another_minute_of_its_hour() -> None:
    """A batch re-done after a crash with other boundaries: its minute 62 is tagged
    (0, 4) after minute 61 of the same hour took (0, 8) from the first try's stored delta."""
    fold = w.OrgFold({})
    fold.apply(0, message("x", [0, 8], M0 + 1))
    fold.apply(0, message("x", [0, 4], M0 + 2))
    assert fold.conflicts == 0
    assert w.org_minutes({k: b for k, (_p, b) in fold.buckets.items()}) == {
        ("x", M0 + 1): [1, 2, 3, 4, 5, 14, 7], ("x", M0 + 2): [1, 2, 3, 4, 5, 14, 7]}


def test_expiry_index_pops_a_record_once_all_its_minutes_are_old() -> None:
    idx = w.ExpiryIndex()
    old, new = w.org_key("o", M0), w.org_key("o", M0 + 120)
    idx.ensure_loaded(0, lambda: [old, new])
    old_end = M0 - M0 % 60 + 59
    assert idx.pop_expired(0, (old_end + 60) * 60_000, 60 * 60_000) == []  # its last minute is still live
    assert idx.pop_expired(0, (old_end + 61) * 60_000, 60 * 60_000) == [old]
    assert idx.pop_expired(0, (old_end + 61) * 60_000, 60 * 60_000) == []


class Crash(Exception):
    pass


@pytest.mark.parametrize("fold_in_c", [True, False])
@pytest.mark.parametrize("seal_events", [w.SEAL_EVENTS, 3])
@pytest.mark.parametrize("seed", range(8))
def test_batch_protocol_is_exact_under_crashes_at_every_step(seed: int, seal_events: int, fold_in_c: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The usage agent's order (fold; store deltas; progress; then org deltas),
    re-run after crashes at random points with random batch boundaries, ends
    with exact user and org windows, re-sent events counted once; also when
    pending buckets are sealed every few events (a user in several chunks);
    with the fold in C (where it was built) and in Python."""
    monkeypatch.setattr(w, "SEAL_EVENTS", seal_events)
    monkeypatch.setattr(w, "USE_C_FOLD", fold_in_c)
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(7)]
    # Minutes of three hours: org-window records shared by many minutes and batches.
    pool = [ev(i, T0 + rng.randrange(30) * 20_000 + rng.randrange(3) * HOUR, user=rng.choice(users),
               org=rng.choice(["a/b", "a/c", "d"]), tokens=rng.randrange(100))
            for i in range(300)]  # a re-sent event is the same event
    envelopes: dict[int, list[list[dict[str, Any]]]] = {0: [], 1: [], 2: []}
    for part in (0, 1, 2):
        mine = [e for e in pool if int(e["user_id"][1:]) % 3 == part]
        for _ in range(60):
            envelopes[part].append([rng.choice(mine) for _ in range(5)])
    stored: dict[str, bytes] = {}
    progress = {part: {"offset": -1, "orgs_sent": -1, "watermark_ms": 0} for part in (0, 1, 2)}
    org_store: dict[str, list[Any]] = {}
    memory: dict[int, w.UserWindows] = {}

    def maybe_crash(p: float) -> None:
        if rng.random() < p:
            raise Crash

    def batch(parts: list[int]) -> None:
        """The usage agent's fold_batch and the sends after it, over several partitions."""
        resend: list[w.OrgMessage] = []
        sums: w.OrgSums = {}
        tags: list[int] = []
        for part in parts:
            prog = progress[part]
            state = memory.get(part)
            if state is None or state.offset != prog["offset"]:
                state = w.UserWindows(part, prog["watermark_ms"], 10 * HOUR)
                mine = [(k, v) for k, v in stored.items() if k.startswith(w.delta_prefix(part))]
                state.load(mine)
                state.offset = prog["offset"]
                again = w.resend_org_deltas(part, mine, prog["orgs_sent"])
                resend += again
                state.resent = bool(again)
                memory[part] = state
            first = prog["offset"] + 1
            last = min(first + rng.randrange(1, 8), len(envelopes[part])) - 1
            if last < first:
                continue
            for offset in range(first, last + 1):
                state.fold(envelopes[part][offset])
            for key in state.expire():
                stored.pop(key, None)
            records, orgs = state.take_deltas(first, last)
            for key, value in records:
                maybe_crash(0.05)
                stored[key] = value
            w.add_org_sums(sums, orgs, 1 << (len(tags) // 2))
            tags += [part, last]
            maybe_crash(0.05)
            progress[part] = {"offset": last, "watermark_ms": state.watermark_ms,
                              "orgs_sent": prog["orgs_sent"] if state.resent else prog["offset"]}
            state.resent = False
            state.offset = last
        for m in resend + w.org_messages(sums, tags, chunk=3):
            maybe_crash(0.03)
            fold = w.OrgFold(org_store)
            fold.apply(0, orjson.loads(orjson.dumps(m)))
            assert fold.conflicts == 0
            org_store.update({k: b for k, (_p, b) in fold.buckets.items()})

    while any(progress[p]["offset"] < len(envelopes[p]) - 1 for p in (0, 1, 2)):
        try:
            batch(rng.sample([0, 1, 2], rng.randrange(1, 4)))
        except Crash:
            memory.clear()
    while True:  # a last restart re-sends what a final crash may have cut off
        memory.clear()
        try:
            batch([0, 1, 2])
            break
        except Crash:
            pass

    unique = {e["event_id"]: e for part in (0, 1, 2) for env in envelopes[part] for e in env}
    expected_users: dict[tuple[str, int], int] = {}
    expected_orgs: dict[tuple[str, int], int] = {}
    for e in unique.values():
        minute = e["ts_ms"] // 60_000
        expected_users[(e["user_id"], minute)] = expected_users.get((e["user_id"], minute), 0) + e["input_tokens"]
        for org in ({"a/b": ["a", "a/b"], "a/c": ["a", "a/c"], "d": ["d"]}[e["org_id"]]):
            expected_orgs[(org, minute)] = expected_orgs.get((org, minute), 0) + e["input_tokens"]
    assert {k: b[1] for k, b in w.merge_deltas(stored.items()).items()} == expected_users
    assert {k: sums[1] for k, sums in w.org_minutes(org_store).items()} == expected_orgs


def test_freed_memory_is_handed_back_at_most_once_per_interval() -> None:
    from stream_processors.agents import FreeMemoryReturner

    calls: list[int] = []
    returner = FreeMemoryReturner(every_s=3600)
    returner._trim = calls.append  # type: ignore[assignment]  # the real one is glibc's malloc_trim
    returner.last -= 3600
    for _ in range(5):
        returner.maybe()
    assert calls == [0]


def test_the_expiry_index_forgotten_is_rebuilt_from_the_table_keys() -> None:
    """After a rebalance the org-window records other workers made meanwhile are
    only in the table: a forgotten index indexes the partition's keys again."""
    index = w.ExpiryIndex()
    mine = w.org_key("acme", 0)
    index.ensure_loaded(0, lambda: [mine])
    index.forget()
    theirs = w.org_key("acme", 120)
    index.ensure_loaded(0, lambda: [mine, theirs])
    horizon_past_both = (w.org_record_last_minute(theirs) + 1) * w.MINUTE_MS + 1
    assert sorted(index.pop_expired(0, horizon_past_both, 0)) == sorted([mine, theirs])
