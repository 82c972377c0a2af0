"""The loop every sink shares: consume, batch, store, then commit.

A subclass turns messages into pending rows (``take``) and writes them in one
go (``write``); this base owns the consumer, the flush schedule, the retry
while the store is down, and the offset commit, which happens only after the
write succeeded and the batch's dead letters were acknowledged. Writes are
idempotent in every subclass (dedup by event_id / versioned by alert_id), so
a batch read twice (a crash before the commit, a rebalance mid-outage) is
harmless: that is what makes "commit after store" exactly-once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tokentrail.publish import Ticket
from tokentrail.settings import Settings
from tokentrail.store import StoreError

log = logging.getLogger(__name__)


class BatchSink:
    name = "sink"

    def __init__(self, settings: Settings, bootstrap: str, group: str, topics: list[str]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offsets: dict[tuple[str, int], int] = {}
        self._letters: list[Ticket] = []
        self._flushing = False
        self.paused = False
        self.store_failures = 0
        self.last_error = ""

    # -- what a subclass provides -------------------------------------------
    def take(self, msg: Any) -> None:
        """Add one message's rows to the pending batch."""
        raise NotImplementedError

    def pending_size(self) -> int:
        return 0

    def write(self) -> None:
        """Store the pending batch in one go (raise StoreError to retry)."""
        raise NotImplementedError

    def committed(self) -> None:
        """The batch is stored and committed: count it and clear it."""
        raise NotImplementedError

    def on_store_failure(self, exc: StoreError) -> None:
        """Hook for counters; the retry itself is handled here."""

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming; what was read is stored and committed first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def track_dead_letter(self, ticket: Ticket | None) -> None:
        """Dead letters of this batch must be acknowledged before its commit."""
        if ticket is not None:
            self._letters.append(ticket)

    def _consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
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
        consumer.subscribe(self.topics, on_revoke=lambda c, parts: None if self._flushing else self._flush(c))
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    self._take(msg)
                due = time.monotonic() - last_flush >= self.settings.sink_flush_s
                if due or self.pending_size() >= self.settings.sink_batch_events:
                    self._flush(consumer)
                    last_flush = time.monotonic()
            self._flush(consumer)
        except Exception:
            log.exception("%s crashed", self.name)
            raise
        finally:
            consumer.close()

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s consumer: %s", self.name, err)
            return
        self.take(msg)
        self._offsets[(msg.topic(), msg.partition())] = msg.offset() + 1

    def _flush(self, consumer: Consumer) -> None:
        """Store the pending batch (retrying while the store is down), then commit."""
        if not self._offsets:
            return
        self._flushing = True
        try:
            if not self._write_with_retry(consumer):
                return
            if not all(t.wait(self.settings.produce_timeout_s) for t in self._letters):
                # Not committing: the batch (and its dead letters) will be read again.
                log.warning("%s: dead letters not acknowledged; batch left uncommitted", self.name)
                return
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in self._offsets.items()],
                                asynchronous=False)
            except KafkaException as exc:
                # Lost the partitions (rebalance) or the broker: the new owner re-reads
                # the batch and the idempotent write absorbs it.
                log.warning("%s: commit failed (%s); the batch will be re-read", self.name, exc)
            self.committed()
            self._offsets, self._letters = {}, []
        finally:
            self._flushing = False

    def _write_with_retry(self, consumer: Consumer) -> bool:
        delay = 0.5
        while True:
            try:
                self.write()
            except StoreError as exc:
                if self._stop.is_set():
                    log.warning("%s stopping with an unstored batch (%s); it will be re-read", self.name, exc)
                    return False
                log.warning("%s: store write failed (%s); retrying in %.1f s", self.name, exc, delay)
                self.store_failures += 1
                self.last_error = str(exc)[:500]
                self.on_store_failure(exc)
                if not self.paused:
                    # Paused partitions stay assigned without fetching more.
                    consumer.pause(consumer.assignment())
                    self.paused = True
                # Wait without polling: a poll could run a rebalance callback
                # in the middle of this flush.
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.paused:
                consumer.resume(consumer.assignment())
                self.paused = False
            return True
