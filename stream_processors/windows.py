"""Event-time minute windows per user and per org: the pure part of the processors.

Live state is one bucket per (entity, minute of event time). A user bucket also
keeps 64-bit hashes of the event ids it counted, which is how a re-sent event
(same ``event_id``, hence same timestamp and minute) is counted once — also
when a batch is re-processed after a crash, because the hashes travel in the
same changelog record as the sums.

Org buckets are fed by *org deltas*: per batch, the sums of the new events per
(org prefix, minute), tagged with the source partition and offset. Deltas are
re-keyed by org (a repartition), and an org bucket remembers the last source
offset it applied per source partition, so a re-sent delta is skipped.

Windows are kept for ``retention`` of event time behind the partition's
watermark (the largest event time seen). An event older than that is *late*:
it is not added to live windows (they have been expired) but is counted, and
the sink stores it in history like any other event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokentrail.events import org_prefixes

MINUTE_MS = 60_000
# Bucket layout: sums first, then (user buckets only) the id hashes.
SUM_FIELDS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
              "total_tokens", "cost_nanos")
N_SUMS = len(SUM_FIELDS)
SEP = "\x1f"  # unit separator: cannot clash with anything sensible in an id


def user_key(user_id: str, minute: int) -> str:
    return f"u{SEP}{user_id}{SEP}{minute}"


def org_key(org: str, minute: int) -> str:
    return f"o{SEP}{org}{SEP}{minute}"


def key_minute(key: str) -> int:
    return int(key.rsplit(SEP, 1)[1])


def id_hash(event_id: str) -> int:
    """Stable 63-bit hash of an event id (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


def event_sums(event: Mapping[str, Any]) -> list[int]:
    total = (event["input_tokens"] + event["output_tokens"]
             + event["cache_read_tokens"] + event["cache_write_tokens"])
    return [1, event["input_tokens"], event["output_tokens"], event["cache_read_tokens"],
            event["cache_write_tokens"], total, event["cost_nanos"]]


def add_into(target: list[int], sums: list[int]) -> None:
    for i in range(N_SUMS):
        target[i] += sums[i]


@dataclass
class BatchResult:
    """What one batch changes: user buckets to write, org deltas to send, counts."""

    user_buckets: dict[str, list[Any]] = field(default_factory=dict)
    new_buckets: list[tuple[str, int]] = field(default_factory=list)  # (key, minute) not stored before
    org_deltas: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    counted: int = 0
    duplicates: int = 0
    late: int = 0
    watermark_ms: int = 0


def apply_batch(
    events: Iterable[Mapping[str, Any]],
    lookup: Mapping[str, list[Any]] | Any,
    watermark_ms: int,
    retention_ms: int,
) -> BatchResult:
    """Fold a batch of wire events into user buckets.

    ``lookup.get(key)`` returns the stored bucket of a user key (or None).
    Buckets are copied before change, so a failure mid-batch leaves stored
    state untouched. This is the processors' per-event hot path: sums are
    added field by field, and org sums are kept per (org_id, minute) and
    expanded to every org prefix once per batch, not once per event.
    """
    result = BatchResult(watermark_ms=watermark_ms)
    buckets = result.user_buckets
    per_org: dict[tuple[str, int], list[int]] = {}
    watermark = watermark_ms
    for event in events:
        ts = event["ts_ms"]
        if ts > watermark:
            watermark = ts
        elif ts < watermark - retention_ms:
            result.late += 1
            continue
        minute = ts // MINUTE_MS
        key = f"u{SEP}{event['user_id']}{SEP}{minute}"
        bucket = buckets.get(key)
        if bucket is None:
            stored = lookup.get(key)
            if stored:
                bucket = [*stored[:N_SUMS], list(stored[N_SUMS])]
            else:
                bucket = [0, 0, 0, 0, 0, 0, 0, []]
                result.new_buckets.append((key, minute))
            buckets[key] = bucket
        h = id_hash(event["event_id"])
        hashes = bucket[N_SUMS]
        if h in hashes:
            result.duplicates += 1
            continue
        hashes.append(h)
        inp, out = event["input_tokens"], event["output_tokens"]
        cr, cw, cost = event["cache_read_tokens"], event["cache_write_tokens"], event["cost_nanos"]
        total = inp + out + cr + cw
        bucket[0] += 1
        bucket[1] += inp
        bucket[2] += out
        bucket[3] += cr
        bucket[4] += cw
        bucket[5] += total
        bucket[6] += cost
        acc = per_org.get((event["org_id"], minute))
        if acc is None:
            per_org[(event["org_id"], minute)] = [1, inp, out, cr, cw, total, cost]
        else:
            acc[0] += 1
            acc[1] += inp
            acc[2] += out
            acc[3] += cr
            acc[4] += cw
            acc[5] += total
            acc[6] += cost
        result.counted += 1
    result.watermark_ms = watermark
    for (org_id, minute), sums in per_org.items():
        for org in org_prefixes(org_id):
            per_minute = result.org_deltas.setdefault(org, {})
            acc = per_minute.get(minute)
            if acc is None:
                per_minute[minute] = list(sums)
            else:
                add_into(acc, sums)
    return result


def apply_org_delta(
    stored: list[Any] | None, sums: list[int], source_partition: int, source_offset: int
) -> list[Any] | None:
    """New org bucket after a delta, or None when the delta was applied before.

    Layout: N_SUMS sums, then {source partition: last applied source offset}.
    """
    if stored is None:
        stored = [0] * N_SUMS + [{}]
    applied: dict[str, int] = stored[N_SUMS]
    part = str(source_partition)  # JSON object keys are strings in the changelog
    if applied.get(part, -1) >= source_offset:
        return None
    bucket = [*stored[:N_SUMS], {**applied, part: source_offset}]
    add_into(bucket, sums)
    return bucket


class ExpiryIndex:
    """Which live bucket keys of each partition fall out of retention, cheaply.

    In memory only: after a restart it is rebuilt from the restored table keys
    (``ensure_loaded``), so no extra changelog writes are needed for it.
    """

    def __init__(self) -> None:
        self._by_minute: dict[int, dict[int, set[str]]] = {}
        self._loaded: set[int] = set()

    def ensure_loaded(self, partition: int, keys: Callable[[], Iterable[str]]) -> None:
        """Index the partition's restored keys, once (``keys`` is only called then)."""
        if partition in self._loaded:
            return
        self._loaded.add(partition)
        for key in keys():
            self.add(partition, key)

    def add(self, partition: int, key: str, minute: int | None = None) -> None:
        minute = key_minute(key) if minute is None else minute
        self._by_minute.setdefault(partition, {}).setdefault(minute, set()).add(key)

    def pop_expired(self, partition: int, watermark_ms: int, retention_ms: int) -> list[str]:
        minutes = self._by_minute.get(partition)
        if not minutes:
            return []
        horizon = (watermark_ms - retention_ms) // MINUTE_MS
        old = [m for m in minutes if m < horizon]
        out: list[str] = []
        for m in old:
            out.extend(minutes.pop(m))
        return out
