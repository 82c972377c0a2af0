"""History sink: usage topic -> ClickHouse, exactly once.

The sink reads envelopes with its own consumer group and, per batch:
1. drops events whose ``event_id`` is already stored (or repeated in the batch),
2. writes the rest in ONE insert (roll-ups follow through materialized views),
3. only then commits the consumed offsets.
A crash between 2 and 3 re-reads the batch after restart, and step 1 drops
what was stored: nothing lost, nothing counted twice. While the store is
unavailable the sink pauses its partitions, keeps the batch, and retries
with back-off (the broker keeps the rest).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_processors.batch_sink import BatchSink
from tokentrail.envelope import decode_envelope, from_our_producers
from tokentrail.pricing import PriceTable
from tokentrail.publish import Ticket
from tokentrail.settings import Settings
from tokentrail.store import Store, StoreError

log = logging.getLogger(__name__)

COLUMNS = (
    "event_id", "ts", "user_id", "org_id", "model", "provider", "client", "session_id",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "total_tokens",
    "cost_nanos", "cost_source", "price_version", "latency_ms", "prompt_hash", "metadata", "ingested_at",
)
_LOOKUP_CHUNK = 10_000


def to_row(e: dict[str, Any], now: datetime) -> tuple[Any, ...]:
    total = e["input_tokens"] + e["output_tokens"] + e["cache_read_tokens"] + e["cache_write_tokens"]
    ts = datetime.fromtimestamp(e["ts_ms"] / 1000, tz=UTC)
    return (
        e["event_id"], ts, e["user_id"], e["org_id"], e["model"], e.get("provider", ""), e.get("client", ""),
        e.get("session_id", ""), e["input_tokens"], e["output_tokens"], e["cache_read_tokens"],
        e["cache_write_tokens"], total, e["cost_nanos"], e["cost_source"], e.get("price_version", ""),
        e.get("latency_ms"), e.get("prompt_hash", ""), e.get("metadata", ""), now,
    )


def already_stored(store: Store, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[i : i + _LOOKUP_CHUNK]
        rows = store.query("SELECT event_id FROM event_ids WHERE event_id IN {ids:Array(String)}", {"ids": chunk})
        found.update(r[0] for r in rows)
    return found


def store_batch(store: Store, events: list[dict[str, Any]]) -> tuple[int, int]:
    """Insert the events not stored yet; returns (stored, duplicates)."""
    unique: dict[str, dict[str, Any]] = {}
    for e in events:
        unique.setdefault(e["event_id"], e)
    seen = already_stored(store, list(unique))
    now = datetime.now(tz=UTC)
    rows = [to_row(e, now) for eid, e in unique.items() if eid not in seen]
    if rows:
        store.insert("usage_events", COLUMNS, rows)
    return len(rows), len(events) - len(rows)


@dataclass
class SinkStats:
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    batches: int = 0
    store_failures: int = 0
    last_error: str = ""
    last_flush_ms: int = 0
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class HistorySink(BatchSink):
    name = "history-sink"

    def __init__(
        self, settings: Settings, bootstrap: str, store: Store, prices: PriceTable,
        dead_letter: Callable[[object, str], Ticket | None],
    ) -> None:
        super().__init__(settings, bootstrap, settings.sink_group, [settings.usage_topic])
        self.store = store
        self.prices = prices
        self.dead_letter = dead_letter
        self.stats = SinkStats()
        self._pending: list[dict[str, Any]] = []
        self._result = (0, 0)

    def take(self, msg: Any) -> None:
        good, bad = decode_envelope(msg.value(), self.prices, from_our_producers(msg.headers()))
        for raw, reason in bad:
            self.track_dead_letter(self.dead_letter(raw, reason))
        with self.stats.lock:
            self.stats.invalid += len(bad)
        self._pending.extend(good)

    def pending_size(self) -> int:
        return len(self._pending)

    def write(self) -> None:
        self._result = store_batch(self.store, self._pending)

    def on_store_failure(self, exc: StoreError) -> None:
        with self.stats.lock:
            self.stats.store_failures += 1
            self.stats.last_error = str(exc)[:500]
            self.stats.paused = True

    def committed(self) -> None:
        stored, dups = self._result
        with self.stats.lock:
            self.stats.stored += stored
            self.stats.duplicates += dups
            self.stats.batches += 1
            self.stats.paused = False
            self.stats.last_flush_ms = int(time.time() * 1000)
        self._pending = []
        self._result = (0, 0)
