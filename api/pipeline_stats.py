"""What each stage has done, for GET /v1/pipeline and /metrics.

Counts come from the stages themselves (the processors publish cumulative
per-partition progress to the stats topic; the sink counts in-process and the
store counts distinct stored events), because the embedded broker's end
offsets can trail the real end. Consumer lag is reported too, as a hint.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tokentrail.settings import Settings

log = logging.getLogger(__name__)


class StatsReader:
    """Follows the stats topic from the start, keeping the latest value per key."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "tokentrail-stats-reader",
                             "enable.auto.commit": False, "log_level": 3})
        try:
            consumer.assign([TopicPartition(self.settings.stats_topic, 0, 0)])  # from the beginning
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                try:
                    value = orjson.loads(msg.value() or b"")
                    key = (msg.key() or b"").decode()
                except (orjson.JSONDecodeError, AttributeError, UnicodeDecodeError):
                    continue
                with self._lock:
                    self.latest[key] = value
        finally:
            consumer.close()

    def processor_totals(self) -> dict[str, int]:
        totals = {"processed": 0, "duplicates": 0, "late": 0, "invalid": 0, "partitions": 0}
        with self._lock:
            for key, value in self.latest.items():
                if key.startswith("processor/"):
                    for name in ("processed", "duplicates", "late", "invalid"):
                        totals[name] += int(value.get(name, 0))
                    totals["partitions"] += 1
        return totals

    def detector_totals(self) -> dict[str, int]:
        totals = {"fed": 0, "duplicates": 0, "invalid": 0, "alerts": 0, "risk_updates": 0, "partitions": 0}
        with self._lock:
            for key, value in self.latest.items():
                if key.startswith("detector/"):
                    for name in ("fed", "duplicates", "invalid", "alerts", "risk_updates"):
                        totals[name] += int(value.get(name, 0))
                    totals["partitions"] += 1
        return totals

    def supervisor(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest.get("supervisor", {}))


class LagProbe:
    """Committed offsets of a consumer group vs. partition end offsets."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self._consumer: Consumer | None = None
        self._config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                        "log_level": 0}
        self._cache: tuple[float, int | None] = (0.0, None)
        self._lock = threading.Lock()

    def lag(self) -> int | None:
        with self._lock:
            at, value = self._cache
            if time.monotonic() - at < 1.0:
                return value
            try:
                value = self._measure()
            except Exception as exc:  # broker away: lag unknown, not an error of the caller
                log.debug("lag probe failed: %s", exc)
                value = None
            self._cache = (time.monotonic(), value)
            return value

    def _measure(self) -> int:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        committed = self._consumer.committed(parts, timeout=2)
        total = 0
        for tp in committed:
            if tp.error is not None and tp.error.code() != KafkaError.NO_ERROR:
                raise RuntimeError(str(tp.error))
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=2)
            total += max(high - max(tp.offset, 0), 0)
        return total

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
