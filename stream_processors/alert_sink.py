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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_processors.batch_sink import BatchSink
from tokentrail.alerts import MessageError, decode_alert, decode_risk
from tokentrail.publish import Ticket
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


class AlertSink(BatchSink):
    name = "alert-sink"

    def __init__(self, settings: Settings, bootstrap: str, store: Store,
                 dead_letter: Callable[[object, str], Ticket | None] | None = None) -> None:
        super().__init__(settings, bootstrap, settings.alert_sink_group, [settings.alerts_topic, settings.risk_topic])
        self.store = store
        self.dead_letter = dead_letter or (lambda raw, why: None)
        self.stats = AlertSinkStats()
        self._alerts: dict[str, tuple[Any, ...]] = {}  # by alert_id: copies in one batch collapse here
        self._risk: dict[str, tuple[Any, ...]] = {}  # by user: the latest in the batch
        # Alert messages of the pending batch: counted in the stats once stored,
        # so that a client waiting for the count can then read every alert.
        self._alert_messages = 0

    def take(self, msg: Any) -> None:
        try:
            if msg.topic() == self.settings.alerts_topic:
                doc = decode_alert(msg.value())
                self._add_alert(alert_row(doc))
                self._alert_messages += 1
            else:
                doc = decode_risk(msg.value())
                row = risk_row(doc)
                old = self._risk.get(doc["user_id"])
                if old is None or old[3] <= row[3]:
                    self._risk[doc["user_id"]] = row
        except MessageError as exc:
            self.track_dead_letter(self.dead_letter(msg.value(), f"{msg.topic()}: {exc}"))
            with self.stats.lock:
                self.stats.invalid += 1

    def pending_size(self) -> int:
        return len(self._alerts) + len(self._risk)

    def _add_alert(self, row: tuple[Any, ...]) -> None:
        """Keep the latest version (window_end) with the earliest detected_at."""
        old = self._alerts.get(row[0])
        if old is not None:
            newest = row if row[7] >= old[7] else old
            row = (*newest[:8], min(old[8], row[8]), newest[9])
        self._alerts[row[0]] = row

    def write(self) -> None:
        self.store.insert("alerts", ALERT_COLUMNS, first_detections(self.store, self._alerts))
        self.store.insert("user_risk", RISK_COLUMNS, list(self._risk.values()))

    def on_store_failure(self, exc: StoreError) -> None:
        with self.stats.lock:
            self.stats.store_failures += 1
            self.stats.last_error = str(exc)[:500]

    def committed(self) -> None:
        with self.stats.lock:
            self.stats.alert_messages += self._alert_messages
            self.stats.alerts += len(self._alerts)
            self.stats.risk_updates += len(self._risk)
            self.stats.batches += 1
        self._alerts, self._risk, self._alert_messages = {}, {}, 0
