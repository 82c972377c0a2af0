"""Event-time windows: exact sums, duplicates once, late events, org deltas idempotent."""

from __future__ import annotations

from typing import Any

from stream_processors import windows as w

T0 = 1_795_425_300_000  # a minute boundary


def ev(i: int, ts: int, user: str = "u1", org: str = "a/b", tokens: int = 10) -> dict[str, Any]:
    return {"event_id": f"e{i}", "ts_ms": ts, "user_id": user, "org_id": org, "input_tokens": tokens,
            "output_tokens": 1, "cache_read_tokens": 2, "cache_write_tokens": 3, "cost_nanos": 100}


def test_batch_sums_per_user_minute_and_org_prefix() -> None:
    events = [ev(1, T0), ev(2, T0 + 30_000), ev(3, T0 + 60_000), ev(4, T0, user="u2", org="a/c")]
    r = w.apply_batch(events, {}, 0, 3_600_000)
    assert r.counted == 4 and r.duplicates == 0 and r.late == 0
    first = r.user_buckets[w.user_key("u1", T0 // 60_000)]
    assert first[: w.N_SUMS] == [2, 20, 2, 4, 6, 32, 200]
    assert len(first[w.N_SUMS]) == 2
    assert r.org_deltas["a"][T0 // 60_000][0] == 3  # u1 twice + u2 once in minute 0
    assert r.org_deltas["a/b"][T0 // 60_000 + 1][0] == 1
    assert "a/c" in r.org_deltas and r.watermark_ms == T0 + 60_000


def test_duplicates_count_once_within_and_across_batches() -> None:
    first = w.apply_batch([ev(1, T0), ev(1, T0)], {}, 0, 3_600_000)
    assert (first.counted, first.duplicates) == (1, 1)
    stored = dict(first.user_buckets)
    again = w.apply_batch([ev(1, T0), ev(2, T0)], stored, first.watermark_ms, 3_600_000)
    assert (again.counted, again.duplicates) == (1, 1)
    assert again.user_buckets[w.user_key("u1", T0 // 60_000)][0] == 2
    # the stored bucket is not mutated (a failed batch leaves state untouched)
    assert stored[w.user_key("u1", T0 // 60_000)][0] == 1


def test_late_events_are_counted_not_windowed() -> None:
    r = w.apply_batch([ev(1, T0 + 7_200_000), ev(2, T0)], {}, 0, 3_600_000)
    assert (r.counted, r.late) == (1, 1)
    assert w.user_key("u1", T0 // 60_000) not in r.user_buckets


def test_org_delta_applies_once_per_source_offset() -> None:
    b1 = w.apply_org_delta(None, [1, 1, 1, 1, 1, 4, 9], source_partition=0, source_offset=5)
    assert b1 is not None and b1[0] == 1
    assert w.apply_org_delta(b1, [1, 1, 1, 1, 1, 4, 9], 0, 5) is None  # re-sent after a crash
    b2 = w.apply_org_delta(b1, [1, 1, 1, 1, 1, 4, 9], 1, 2)  # other source partition
    assert b2 is not None and b2[0] == 2 and b2[5] == 8


def test_expiry_index_pops_only_old_minutes() -> None:
    idx = w.ExpiryIndex()
    old, new = w.user_key("u", T0 // 60_000), w.user_key("u", T0 // 60_000 + 120)
    idx.ensure_loaded(0, lambda: [old, new])
    assert idx.pop_expired(0, T0 + 121 * 60_000, 60 * 60_000) == [old]
    assert idx.pop_expired(0, T0 + 121 * 60_000, 60 * 60_000) == []
    assert w.id_hash("abc") == w.id_hash("abc") != w.id_hash("abd")
