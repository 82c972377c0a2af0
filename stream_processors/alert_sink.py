"""Alert sink: alerts and risk topics -> ClickHouse tables `alerts` and `user_risk`.

Same pattern as the history sink (sink.py): its own consumer group; per batch,
ONE insert per table, then the offsets are committed. A message with a known
alert id (a replay, or the same alert grown to a later window_end) is a new
version of that alert: it keeps the first detection's detected_at (looked up
in the store), so the alert keeps its place in GET /v1/alerts; versions are
ordered by window_end (ReplacingMergeTree(window_end); readers take the latest).
A user's risk row is versioned by event time (ReplacingMergeTree(updated_at)).
While the store is down the sink pauses its partitions and retries with back-off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tokentrail.alerts import MessageError, decode_alert, decode_risk
from tokentrail.settings import Settings
from tokentrail.store import Store, StoreError

log = logging.getLogger(__name__)

ALERT_COLUMNS = ("alert_id", "user_id", "org_id", "kind", "severity", "score", "window_start", "window_end",
                 "detected_at", "reasons")
RISK_COLUMNS = ("user_id", "bot_score", "reasons", "updated_at")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def alert_row(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """A decoded alert message (tokentrail.alerts.decode_alert) -> an `alerts` row."""
    return (doc["alert_id"], doc["user_id"], doc["org_id"], doc["kind"], doc["severity"], float(doc["score"]),
            _dt(doc["window_start_ms"]), _dt(doc["window_end_ms"]), _dt(doc["detected_at_ms"]),
            list(doc["reasons"]))


def risk_row(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """A decoded risk message (tokentrail.alerts.decode_risk) -> a `user_risk` row."""
    return (doc["user_id"], float(doc["bot_score"]), list(doc["reasons"]), _dt(doc["updated_ms"]))


def first_detections(store: Store, alerts: dict[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows with detected_at set to the first detection already stored, if any."""
    if not alerts:
        return []
    rows = store.query("SELECT alert_id, min(detected_at) FROM alerts WHERE alert_id IN {ids:Array(String)} "
                       "GROUP BY alert_id", {"ids": list(alerts)})
    first = {str(r[0]): r[1] for r in rows}
    return [(*row[:8], min(row[8], first.get(row[0], row[8])), row[9]) for row in alerts.values()]


@dataclass
class AlertSinkStats:
    alert_messages: int = 0
    alerts: int = 0
    risk_updates: int = 0
    invalid: int = 0
    batches: int = 0
    store_failures: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"alert_messages": self.alert_messages, "alerts": self.alerts, "risk_updates": self.risk_updates,
                    "invalid": self.invalid, "batches": self.batches, "store_failures": self.store_failures,
                    "last_error": self.last_error}


class AlertSink:
    def __init__(self, settings: Settings, bootstrap: str, store: Store,
                 dead_letter: Callable[[object, str], None] | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.dead_letter = dead_letter or (lambda raw, why: None)
        self.stats = AlertSinkStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alerts: dict[str, tuple[Any, ...]] = {}  # by alert_id: copies in one batch collapse here
        self._risk: dict[str, tuple[Any, ...]] = {}  # by user: the latest in the batch
        self._offsets: dict[tuple[str, int], int] = {}
        self._paused = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-sink", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming; what was read is stored and committed first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.settings.alert_sink_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(self.settings.session_timeout_ms // 5, 500),
            "max.poll.interval.ms": 600_000,
            "log_level": 3,
        })

    def _run(self) -> None:
        consumer = self._consumer()
        consumer.subscribe([self.settings.alerts_topic, self.settings.risk_topic],
                           on_revoke=lambda c, parts: self._flush(c))
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    self._take(msg)
                if time.monotonic() - last_flush >= self.settings.sink_flush_s:
                    self._flush(consumer)
                    last_flush = time.monotonic()
            self._flush(consumer)
        except Exception:
            log.exception("alert sink crashed")
            raise
        finally:
            consumer.close()

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("alert sink consumer: %s", err)
            return
        try:
            if msg.topic() == self.settings.alerts_topic:
                doc = decode_alert(msg.value())
                self._add_alert(alert_row(doc))
                with self.stats.lock:
                    self.stats.alert_messages += 1
            else:
                doc = decode_risk(msg.value())
                row = risk_row(doc)
                old = self._risk.get(doc["user_id"])
                if old is None or old[3] <= row[3]:
                    self._risk[doc["user_id"]] = row
        except MessageError as exc:
            self.dead_letter(msg.value(), f"{msg.topic()}: {exc}")
            with self.stats.lock:
                self.stats.invalid += 1
        self._offsets[(msg.topic(), msg.partition())] = msg.offset() + 1

    def _add_alert(self, row: tuple[Any, ...]) -> None:
        """Keep the latest version (window_end) with the earliest detected_at."""
        old = self._alerts.get(row[0])
        if old is not None:
            newest = row if row[7] >= old[7] else old
            row = (*newest[:8], min(old[8], row[8]), newest[9])
        self._alerts[row[0]] = row

    def _flush(self, consumer: Consumer) -> None:
        """Store what is pending (retrying while the store is down), then commit."""
        if not self._offsets:
            return
        delay = 0.5
        while True:
            try:
                self.store.insert("alerts", ALERT_COLUMNS, first_detections(self.store, self._alerts))
                self.store.insert("user_risk", RISK_COLUMNS, list(self._risk.values()))
                break
            except StoreError as exc:
                if self._stop.is_set():
                    log.warning("stopping with unstored alerts (%s); they will be re-read", exc)
                    return
                self._on_store_failure(consumer, exc, delay)
                delay = min(delay * 2, 30.0)
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in self._offsets.items()], asynchronous=False)
        with self.stats.lock:
            self.stats.alerts += len(self._alerts)
            self.stats.risk_updates += len(self._risk)
            self.stats.batches += 1
        self._alerts, self._risk, self._offsets = {}, {}, {}

    def _on_store_failure(self, consumer: Consumer, exc: StoreError, delay: float) -> None:
        log.warning("alert store write failed (%s); retrying in %.1f s", exc, delay)
        with self.stats.lock:
            self.stats.store_failures += 1
            self.stats.last_error = str(exc)[:500]
        consumer.pause(consumer.assignment())
        self._paused = True
        consumer.poll(delay)
