"""Event-time windows: exact sums, duplicates once, late events, org deltas idempotent."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_processors import windows as w

T0 = 1_795_425_300_000  # a minute boundary
M0 = T0 // 60_000
HOUR = 3_600_000


def ev(i: int, ts: int, user: str = "u1", org: str = "a/b", tokens: int = 10) -> dict[str, Any]:
    return {"event_id": f"e{i}", "ts_ms": ts, "user_id": user, "org_id": org, "input_tokens": tokens,
            "output_tokens": 1, "cache_read_tokens": 2, "cache_write_tokens": 3, "cost_nanos": 100}


def run(state: w.UserWindows, envelopes: list[list[dict[str, Any]]], first: int = 0,
        stored: dict[str, bytes] | None = None) -> tuple[tuple[int, int, int], w.OrgEntries, dict[str, bytes]]:
    """One batch, as the usage agent runs it: fold, expire, take the deltas."""
    stored = {} if stored is None else stored
    counts = [0, 0, 0]
    for envelope in envelopes:
        for i, n in enumerate(state.fold(envelope)):
            counts[i] += n
    for key in state.expire():
        stored.pop(key)
    entries: w.OrgEntries = {}
    last = first + len(envelopes) - 1
    records, orgs = state.take_deltas(first, last)
    for key, value in records:
        assert key not in stored  # a delta is never rewritten
        stored[key] = value
    w.add_org_entries(entries, state.partition, last, orgs)
    return (counts[0], counts[1], counts[2]), entries, stored


def test_batch_sums_per_user_minute_and_org_prefix() -> None:
    state = w.UserWindows(0, 0, HOUR)
    events = [ev(1, T0), ev(2, T0 + 30_000), ev(3, T0 + 60_000), ev(4, T0, user="u2", org="a/c")]
    counts, entries, stored = run(state, [events[:2], events[2:]])
    assert counts == (4, 0, 0)
    buckets = w.merge_deltas(stored.items())
    assert buckets[("u1", M0)][: w.N_SUMS] == [2, 20, 2, 4, 6, 32, 200]
    assert buckets[("u1", M0)][w.N_SUMS] == ["e1", "e2"]
    assert buckets[("u2", M0)][0] == 1 and buckets[("u1", M0 + 1)][0] == 1
    by_org = {(org, e[2]): e[3:] for org, es in entries.items() for e in es}
    assert by_org[("a", M0)][0] == 3  # u1 twice + u2 once in minute 0
    assert by_org[("a/b", M0 + 1)][0] == 1 and ("a/c", M0) in by_org
    assert {(e[0], e[1]) for es in entries.values() for e in es} == {(0, 1)}  # tagged with the batch end
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


def test_replayed_batch_writes_nothing_new() -> None:
    """A batch re-processed after a crash (its deltas were stored) adds no delta,
    so a delta key is never written twice with different contents."""
    state = w.UserWindows(0, 0, HOUR)
    batch = [[ev(i, T0 + i * 20_000, user=f"u{i % 3}") for i in range(9)]]
    _, _, stored = run(state, batch, first=5)
    restored = w.UserWindows(0, 0, HOUR)
    restored.load(stored.items())
    counts, entries, again = run(restored, batch, first=5, stored=dict(stored))
    assert counts == (0, 9, 0) and entries == {} and again == stored


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
    _, first_entries, stored = run(state, [[ev(1, T0)], [ev(2, T0 + 60_000)]], first=10)
    _, second_entries, stored = run(state, [[ev(3, T0 + 120_000)]], first=12, stored=stored)
    out: w.OrgEntries = {}
    assert w.resend_org_deltas(3, stored.items(), delivered=11, out=out)
    assert out == second_entries  # only what was not known delivered, with the same tags
    out = {}
    assert w.resend_org_deltas(3, stored.items(), delivered=9, out=out)
    assert out == {org: first_entries[org] + second_entries[org] for org in out}
    assert not w.resend_org_deltas(3, stored.items(), delivered=12, out={})


def test_org_delta_applies_once_per_source_offset() -> None:
    b1 = w.apply_org_delta(None, [1, 1, 1, 1, 1, 4, 9], source_partition=0, source_offset=5)
    assert b1 is not None and b1[0] == 1
    assert w.apply_org_delta(b1, [1, 1, 1, 1, 1, 4, 9], 0, 5) is None  # re-sent after a crash
    b2 = w.apply_org_delta(b1, [1, 1, 1, 1, 1, 4, 9], 1, 2)  # other source partition
    assert b2 is not None and b2[0] == 2 and b2[5] == 8


def test_org_fold_matches_apply_org_delta_and_leaves_stored_untouched() -> None:
    rng = random.Random(5)
    messages = [(rng.randrange(2), rng.choice("xy"), [[rng.randrange(3), rng.randrange(6), M0 + rng.randrange(3),
                                                       1, 2, 3, 4, 5, 14, 7] for _ in range(4)])
                for _ in range(40)]
    expected: dict[str, list[Any]] = {}
    for _part, org, entries in messages:
        for sp, so, minute, *sums in entries:
            key = w.org_key(org, minute)
            bucket = w.apply_org_delta(expected.get(key), sums, sp, so)
            if bucket is not None:
                expected[key] = bucket
    stored = {w.org_key("x", M0): [1, 0, 0, 0, 0, 0, 0, {"0": 2}]}
    frozen = repr(stored)
    fold = w.OrgFold(stored)
    newest = max(fold.apply(part, org, entries) for part, org, entries in messages)
    assert newest == (M0 + 3) * 60_000 - 1 if any(e[2] == M0 + 2 for m in messages for e in m[2]) else True
    assert repr(stored) == frozen
    got = {k: b for k, (_p, b) in fold.buckets.items()}
    # the stored bucket had applied source (0, 2) and one request before any message
    base = w.apply_org_delta(None, [1, 0, 0, 0, 0, 0, 0], 0, 2)
    assert base is not None
    redo: dict[str, list[Any]] = {w.org_key("x", M0): base}
    for _part, org, entries in messages:
        for sp, so, minute, *sums in entries:
            key = w.org_key(org, minute)
            bucket = w.apply_org_delta(redo.get(key), sums, sp, so)
            if bucket is not None:
                redo[key] = bucket
    assert got == redo
    assert {k for _p, k, _m in fold.new} == set(redo) - {w.org_key("x", M0)}


def test_expiry_index_pops_only_old_minutes() -> None:
    idx = w.ExpiryIndex()
    old, new = w.org_key("o", M0), w.org_key("o", M0 + 120)
    idx.ensure_loaded(0, lambda: [old, new])
    assert idx.pop_expired(0, T0 + 121 * 60_000, 60 * 60_000) == [old]
    assert idx.pop_expired(0, T0 + 121 * 60_000, 60 * 60_000) == []


class Crash(Exception):
    pass


@pytest.mark.parametrize("seed", range(8))
def test_batch_protocol_is_exact_under_crashes_at_every_step(seed: int) -> None:
    """The usage agent's order (fold; store deltas; progress; then org deltas),
    re-run after crashes at random points with random batch boundaries, ends
    with exact user and org windows, re-sent events counted once."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(7)]
    pool = [ev(i, T0 + rng.randrange(30) * 20_000, user=rng.choice(users), org=rng.choice(["a/b", "a/c", "d"]),
               tokens=rng.randrange(100)) for i in range(300)]  # a re-sent event is the same event
    envelopes: dict[int, list[list[dict[str, Any]]]] = {0: [], 1: []}
    for part in (0, 1):
        mine = [e for e in pool if int(e["user_id"][1:]) % 2 == part]
        for _ in range(60):
            envelopes[part].append([rng.choice(mine) for _ in range(5)])
    stored: dict[str, bytes] = {}
    progress = {part: {"offset": -1, "orgs_sent": -1, "watermark_ms": 0} for part in (0, 1)}
    org_store: dict[str, list[Any]] = {}
    memory: dict[int, w.UserWindows] = {}

    def maybe_crash(p: float) -> None:
        if rng.random() < p:
            raise Crash

    def batch(part: int) -> None:
        prog = progress[part]
        entries: w.OrgEntries = {}
        state = memory.get(part)
        if state is None or state.offset != prog["offset"]:
            state = w.UserWindows(part, prog["watermark_ms"], 10 * HOUR)
            mine = [(k, v) for k, v in stored.items() if k.startswith(w.delta_prefix(part))]
            state.load(mine)
            state.offset = prog["offset"]
            state.resent = w.resend_org_deltas(part, mine, prog["orgs_sent"], entries)
            memory[part] = state
        first = prog["offset"] + 1
        last = min(first + rng.randrange(1, 8), len(envelopes[part])) - 1
        if last >= first:
            for offset in range(first, last + 1):
                state.fold(envelopes[part][offset])
            for key in state.expire():
                stored.pop(key, None)
            records, orgs = state.take_deltas(first, last)
            for key, value in records:
                maybe_crash(0.1)
                stored[key] = value
            w.add_org_entries(entries, part, last, orgs)
            maybe_crash(0.1)
            progress[part] = {"offset": last, "watermark_ms": state.watermark_ms,
                              "orgs_sent": prog["orgs_sent"] if state.resent else prog["offset"]}
            state.resent = False
            state.offset = last
        for org, org_entries in entries.items():
            maybe_crash(0.05)
            fold = w.OrgFold(org_store)
            fold.apply(0, org, org_entries)
            org_store.update({k: b for k, (_p, b) in fold.buckets.items()})

    while any(progress[p]["offset"] < len(envelopes[p]) - 1 for p in (0, 1)):
        try:
            batch(rng.randrange(2))
        except Crash:
            memory.clear()
    for part in (0, 1):  # a last restart re-sends what a final crash may have cut off
        while True:
            memory.clear()
            try:
                batch(part)
                break
            except Crash:
                pass

    unique = {e["event_id"]: e for part in (0, 1) for env in envelopes[part] for e in env}
    expected_users: dict[tuple[str, int], int] = {}
    expected_orgs: dict[str, int] = {}
    for e in unique.values():
        minute = e["ts_ms"] // 60_000
        expected_users[(e["user_id"], minute)] = expected_users.get((e["user_id"], minute), 0) + e["input_tokens"]
        for org in ({"a/b": ["a", "a/b"], "a/c": ["a", "a/c"], "d": ["d"]}[e["org_id"]]):
            key = w.org_key(org, minute)
            expected_orgs[key] = expected_orgs.get(key, 0) + e["input_tokens"]
    assert {k: b[1] for k, b in w.merge_deltas(stored.items()).items()} == expected_users
    assert {k: b[1] for k, b in org_store.items()} == expected_orgs
