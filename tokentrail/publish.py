"""Publishing batch envelopes to Kafka with delivery tracking.

Shared by HTTP ingest and the producer SDK. The confluent-kafka producer is
idempotent with acks=all, so a retried send never duplicates a message in a
partition; a background thread serves delivery reports so callers can wait
for *their* messages to be acknowledged (and answer 503 when they are not).
The producer is created lazily: constructing a Publisher never touches the
network.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from tokentrail.envelope import FORMAT_HEADER
from tokentrail.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def producer_config(bootstrap: str, buffer_kbytes: int = 256 * 1024, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 4 * 1024 * 1024,
        # Memory bound of the local send buffer; beyond it produce() raises
        # BufferError, which Publisher turns into waiting (back-pressure).
        "queue.buffering.max.kbytes": buffer_kbytes,
        "message.timeout.ms": 60_000,
        "log_level": 3,
        **extra,
    }


class Ticket:
    """Delivery state of one group of messages (one HTTP request, say)."""

    def __init__(self, messages: int, events: int) -> None:
        self.pending = messages
        self.events = events
        self.delivered_events = 0
        self.failed_events = 0
        self.errors: list[str] = []
        self._done = threading.Event()
        self._lock = threading.Lock()
        if messages == 0:
            self._done.set()

    def _report(self, err: KafkaError | None, count: int) -> None:
        with self._lock:
            if err is None:
                self.delivered_events += count
            else:
                self.failed_events += count
                self.errors.append(str(err))
            self.pending -= 1
            if self.pending <= 0:
                self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """True when every message was acknowledged by the broker in time."""
        return self._done.wait(timeout_s) and self.failed_events == 0


class Publisher:
    def __init__(self, bootstrap: str, topic: str, **config: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._config = producer_config(bootstrap, **config)
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._config)
                self._poller = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
                self._poller.start()
            return self._producer

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            assert self._producer is not None
            self._producer.poll(0.1)

    def publish(
        self, messages: Iterable[tuple[int, bytes, int]], total_messages: int, total_events: int,
        topic: str | None = None, block_s: float = 30.0,
    ) -> Ticket:
        """Send (partition, value, event count) messages; returns their Ticket."""
        ticket = Ticket(total_messages, total_events)
        producer = self.producer
        for partition, value, count in messages:
            def on_delivery(err: KafkaError | None, _msg: Message, n: int = count) -> None:
                ticket._report(err, n)

            self._produce(producer, topic or self.topic, partition, value, on_delivery, block_s)
        return ticket

    def _produce(
        self, producer: Producer, topic: str, partition: int, value: bytes, cb: Any, block_s: float,
        key: bytes | None = None,
    ) -> None:
        deadline = time.monotonic() + block_s
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, partition=partition, headers=[FORMAT_HEADER], on_delivery=cb
                )
                return
            except BufferError:
                # Local buffer full: wait for deliveries to drain it rather
                # than letting the error escape to the caller.
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"send buffer still full after {block_s:.0f} s; broker {self.bootstrap} not keeping up"
                    ) from None
                time.sleep(0.01)

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None, block_s: float = 30.0) -> Ticket:
        """Send one message to ``topic`` with the default partitioner."""
        ticket = Ticket(1, 0)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                log.warning("send to %s failed: %s", topic, err)
            ticket._report(err, 0)

        # -1 = RD_KAFKA_PARTITION_UA: let librdkafka pick (by key when given).
        self._produce(self.producer, topic, -1, value, on_delivery, block_s, key=key)
        return ticket

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> int:
        left = self.flush(timeout_s)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(2)
        return left
