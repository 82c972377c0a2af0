"""The C fold (stream_processors/_fold.c) against its references: UserWindows._fold_py
and windows._add_org_sums_py.

Both must leave exactly the same state for the same events: counts, watermark,
ids seen per minute, pending user and org buckets, canonical user strings and
ids counted for two users. Skipped only where the C module was not built (no C
compiler at install time); CI builds it.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from stream_processors import windows as w

pytestmark = pytest.mark.skipif(w._fold_c is None, reason="stream_processors._fold was not built (no C compiler)")

T0 = 1_795_425_300_000
HOUR = 3_600_000


def state_of(windows: w.UserWindows) -> tuple[Any, ...]:
    return (windows.watermark_ms, windows.seen, windows.pending, windows.pending_orgs, windows.users,
            windows.shared_ids, windows.sealed, windows.unsealed)


def random_envelopes(rng: random.Random, n: int) -> list[list[dict[str, Any]]]:
    """Envelopes with re-sent events, ids shared by two users, late and out-of-order events."""
    pool: list[dict[str, Any]] = []
    envelopes = []
    for _ in range(n):
        envelope = []
        for _ in range(rng.randrange(0, 40)):
            roll = rng.random()
            if pool and roll < 0.15:
                event = rng.choice(pool)  # re-sent
            elif pool and roll < 0.2:
                event = {**rng.choice(pool), "user_id": f"u{rng.randrange(9)}"}  # the same id, another user
            else:
                ts = T0 + rng.randrange(-30 * HOUR, 3 * HOUR) if rng.random() < 0.1 else \
                    T0 + len(pool) * 1_000 + rng.randrange(-120_000, 120_000)
                event = {"event_id": f"e{len(pool)}", "ts_ms": ts, "user_id": f"u{rng.randrange(9)}",
                         "org_id": rng.choice(["a", "a/b", "c"]), "input_tokens": rng.randrange(10**7),
                         "output_tokens": rng.randrange(1000), "cache_read_tokens": rng.randrange(10**6),
                         "cache_write_tokens": rng.randrange(100), "cost_nanos": rng.randrange(10**12)}
                pool.append(event)
            envelope.append(event)
        envelopes.append(envelope)
    return envelopes


@pytest.mark.parametrize("seed", range(20))
def test_c_fold_leaves_the_same_state_as_the_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    envelopes = random_envelopes(rng, 60)
    in_c = w.UserWindows(1, T0, 26 * HOUR)
    in_python = w.UserWindows(1, T0, 26 * HOUR)
    sums_c: w.OrgSums = {}
    sums_python: w.OrgSums = {}
    for envelope in envelopes:
        monkeypatch.setattr(w, "USE_C_FOLD", True)
        got = in_c.fold(envelope)
        monkeypatch.setattr(w, "USE_C_FOLD", False)
        assert got == in_python.fold(envelope)
        assert state_of(in_c) == state_of(in_python)
        if rng.random() < 0.2:  # batch boundaries: deltas taken, minutes expired, org sums by prefix
            records, orgs = in_c.take_deltas(0, 1)
            assert (records, orgs) == in_python.take_deltas(0, 1)
            assert in_c.expire() == in_python.expire()
            source = 1 << rng.randrange(3)
            monkeypatch.setattr(w, "USE_C_FOLD", True)
            w.add_org_sums(sums_c, orgs, source)
            w._add_org_sums_py(sums_python, orgs, source)
            assert sums_c == sums_python
    assert sum(len(s) for s in in_c.shared_ids.values()) > 0  # the rare path was taken
    assert sums_c and any(e[8] not in (1, 2, 4) for by_minute in sums_c.values() for e in by_minute.values())


def _event(i: int, org: str, step_ms: int = 7_000, **values: Any) -> dict[str, Any]:
    return {"event_id": f"x{i}", "ts_ms": T0 + i * step_ms, "user_id": f"u{i % 3}", "org_id": org,
            "input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 3, "cache_write_tokens": 4, "cost_nanos": 5,
            **values}


@pytest.mark.parametrize("case", ["near-overflow", "total-overflow", "big-ints", "floats", "float-first",
                                  "many-orgs", "non-str-org"])
def test_c_org_sums_stay_exact_on_every_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C fold sums an envelope's org values in 64-bit integers: sums that
    would overflow, values too big for 64 bits or not ints, floats (whose sums
    depend on the order of additions), and more (minute, org) pairs than its
    table holds must leave exactly what the reference leaves."""
    big = 2**62
    if case == "near-overflow":  # each fits, two of them do not
        events = [_event(i, "o/a", cost_nanos=big + i, input_tokens=big) for i in range(30)]
    elif case == "total-overflow":  # each value fits, the event's total does not
        events = [_event(i, "o/a", input_tokens=big if i % 2 else 1, output_tokens=big) for i in range(30)]
    elif case == "big-ints":  # some do not fit at all
        events = [_event(i, "o/a", cost_nanos=2**70 if i % 4 == 0 else i) for i in range(30)]
    elif case == "floats":  # 2**53 + 1 + 0.0 + 1 is not 2**53 + (1 + 1) + 0.0 in floats
        costs = [2**53, 1, 0.0, 1] * 8
        events = [_event(i, "o/a", cost_nanos=c) for i, c in enumerate(costs)]
    elif case == "float-first":  # the bucket is a float before any int is summed in C
        costs = [1e16, *[1] * 29]
        events = [_event(i, "o/a", cost_nanos=c) for i, c in enumerate(costs)]
    elif case == "many-orgs":  # one minute, more (minute, org) pairs than the table's slots, each seen again
        events = [_event(i, f"org{i % 50}", step_ms=1) for i in range(600)]
    else:
        events = [_event(i, ("tuple", i % 2)) for i in range(30)]  # type: ignore[arg-type]
    states = []
    for use_c in (True, False):
        monkeypatch.setattr(w, "USE_C_FOLD", use_c)
        windows = w.UserWindows(0, T0, 26 * HOUR)
        assert windows.fold(events) == (len(events), 0, 0)
        states.append(state_of(windows))
    assert states[0] == states[1]
    pending_orgs = states[0][3]
    assert sum(s[0] for orgs in pending_orgs.values() for s in orgs.values()) == len(events)


def test_c_fold_keeps_what_it_folded_before_a_bad_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error mid-envelope leaves the events before it folded, org sums included, as the reference does."""
    events = [_event(i, "o") for i in range(20)] + [{"event_id": "bad"}]
    states = []
    for use_c in (True, False):
        monkeypatch.setattr(w, "USE_C_FOLD", use_c)
        windows = w.UserWindows(0, T0, 26 * HOUR)
        with pytest.raises(KeyError):
            windows.fold(events)
        states.append(state_of(windows))
    assert states[0] == states[1]
    assert sum(s[0] for orgs in states[0][3].values() for s in orgs.values()) == 20


def test_c_fold_refuses_bad_events_without_crashing() -> None:
    good = {"event_id": "e1", "ts_ms": T0, "user_id": "u", "org_id": "o", "input_tokens": 1, "output_tokens": 2,
            "cache_read_tokens": 3, "cache_write_tokens": 4, "cost_nanos": 5}
    windows = w.UserWindows(0, T0, HOUR)
    for bad, error in [({**good, "ts_ms": "soon"}, TypeError), ({k: v for k, v in good.items() if k != "user_id"},
                       KeyError), ({**good, "input_tokens": None}, TypeError), (7, TypeError),
                       ({**good, "ts_ms": 2**70}, OverflowError)]:
        with pytest.raises(error):
            w._fold_c.fold([bad], T0, HOUR, {}, {}, {}, {}, windows._shared_seen)
    assert windows.fold([good, good]) == (1, 1, 0)


def test_c_add_org_sums_refuses_bad_input_without_crashing() -> None:
    with pytest.raises(TypeError):
        w._fold_c.add_org_sums({}, {1: {"a": [1, 2]}}, 1, {}, w.org_prefixes)
    with pytest.raises(TypeError):
        w._fold_c.add_org_sums({"a": {1: [1]}}, {1: {"a": [1] * 7}}, 1, {}, w.org_prefixes)
    out: w.OrgSums = {}
    w._fold_c.add_org_sums(out, {1: {"a/b": [1] * 7}}, 2, {}, w.org_prefixes)
    assert out == {"a": {1: [1, 1, 1, 1, 1, 1, 1, 1, 2]}, "a/b": {1: [1, 1, 1, 1, 1, 1, 1, 1, 2]}}


@pytest.mark.parametrize("seed", range(20))
def test_c_org_apply_leaves_the_same_records_as_the_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Org-delta messages (tags of 1-4 source batches, re-sent ones, out-of-order
    minutes over a few hours) applied in C and in Python to the same stored records."""
    rng = random.Random(seed)
    m0 = T0 // 60_000
    stored: dict[str, list[Any]] = {}
    seed_fold = w.OrgFold({})
    monkeypatch.setattr(w, "USE_C_FOLD", False)
    seed_fold.apply(0, {"org": "x", "tags": [0, 5], "entries": [[m0 + i, 1, 1, 1, 1, 1, 4, 9, 1] for i in range(90)]})
    stored.update({k: b for k, (_p, b) in seed_fold.buckets.items()})
    frozen = orjson.dumps(stored)
    messages = []
    for _ in range(40):
        n_tags = rng.randrange(1, 5)
        tags = [v for part in rng.sample(range(6), n_tags) for v in (part, rng.randrange(20))]
        entries = [[m0 + rng.randrange(-30, 200), *[rng.randrange(10**9) for _ in range(7)],
                    rng.randrange(1, 1 << n_tags)] for _ in range(rng.randrange(1, 30))]
        messages.append({"org": rng.choice(["x", "y"]), "tags": tags, "entries": entries})
    results = []
    for use_c in (True, False):
        monkeypatch.setattr(w, "USE_C_FOLD", use_c)
        fold = w.OrgFold(orjson.loads(frozen))  # the same stored records, each time
        newest = [fold.apply(rng_part, m) for rng_part, m in zip([1, 2] * 20, messages, strict=True)]
        results.append((newest, fold.buckets, fold.new, fold.conflicts))
    assert results[0] == results[1]
    assert results[0][3] > 0  # partly applied entries were met, and counted alike


def test_c_org_apply_refuses_bad_input_without_crashing() -> None:
    def open_record(first: int) -> list[Any]:
        return [None] * w.ORG_RECORD_MINUTES

    with pytest.raises(TypeError):
        w._fold_c.org_apply([[1, 2]], [], open_record, w.ORG_RECORD_MINUTES)
    with pytest.raises(TypeError):
        w._fold_c.org_apply([[1] * 9], [(1, "0")], open_record, w.ORG_RECORD_MINUTES)
    with pytest.raises(TypeError):
        w._fold_c.org_apply([[1] * 9], [], lambda first: [None], w.ORG_RECORD_MINUTES)
    with pytest.raises(TypeError):
        w._fold_c.org_apply([["m", 1, 1, 1, 1, 1, 1, 1, 1]], [], open_record, w.ORG_RECORD_MINUTES)
    with pytest.raises(ValueError):
        w._fold_c.org_apply([], [], open_record, 0)
