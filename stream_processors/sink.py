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

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tokentrail.envelope import decode_envelope
from tokentrail.pricing import PriceTable
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


class HistorySink:
    def __init__(
        self, settings: Settings, bootstrap: str, store: Store, prices: PriceTable,
        dead_letter: Callable[[object, str], None],
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.prices = prices
        self.dead_letter = dead_letter
        self.stats = SinkStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[dict[str, Any]] = []
        self._offsets: dict[int, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="history-sink", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming; what was read is stored and committed first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.settings.sink_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(self.settings.session_timeout_ms // 5, 500),
            "max.poll.interval.ms": 600_000,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "log_level": 3,
        })

    def _run(self) -> None:
        consumer = self._consumer()
        consumer.subscribe([self.settings.usage_topic], on_revoke=lambda c, parts: self._flush(c))
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    self._take(msg)
                due = time.monotonic() - last_flush >= self.settings.sink_flush_s
                if self._pending and (due or len(self._pending) >= self.settings.sink_batch_events):
                    self._flush(consumer)
                    last_flush = time.monotonic()
                elif not self._pending:
                    last_flush = time.monotonic()
            self._flush(consumer)
        except Exception:
            log.exception("history sink crashed")
            raise
        finally:
            consumer.close()

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("sink consumer: %s", err)
            return
        good, bad = decode_envelope(msg.value(), self.prices)
        for raw, reason in bad:
            self.dead_letter(raw, reason)
        with self.stats.lock:
            self.stats.invalid += len(bad)
        self._pending.extend(good)
        self._offsets[msg.partition()] = msg.offset() + 1

    def _flush(self, consumer: Consumer) -> None:
        """Store the pending batch (retrying while the store is down), then commit."""
        if not self._offsets:
            return
        delay = 0.5
        while True:
            try:
                stored, dups = store_batch(self.store, self._pending)
                break
            except StoreError as exc:
                if self._stop.is_set():
                    # Leave offsets uncommitted: the batch is read again on start.
                    log.warning("stopping with an unstored batch (%s); it will be re-read", exc)
                    return
                self._on_store_failure(consumer, exc, delay)
                delay = min(delay * 2, 30.0)
        if self.stats.paused:
            consumer.resume(consumer.assignment())
        topic = self.settings.usage_topic
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in self._offsets.items()], asynchronous=False)
        with self.stats.lock:
            self.stats.stored += stored
            self.stats.duplicates += dups
            self.stats.batches += 1
            self.stats.paused = False
            self.stats.last_flush_ms = int(time.time() * 1000)
        self._pending = []
        self._offsets = {}

    def _on_store_failure(self, consumer: Consumer, exc: StoreError, delay: float) -> None:
        log.warning("store write failed (%s); retrying in %.1f s", exc, delay)
        with self.stats.lock:
            self.stats.store_failures += 1
            self.stats.last_error = str(exc)[:500]
            self.stats.paused = True
        # Paused partitions keep the group membership alive without fetching more.
        consumer.pause(consumer.assignment())
        consumer.poll(delay)
