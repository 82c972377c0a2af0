"""Python producer SDK: send usage events straight to Kafka.

    from producers.sdk import UsageProducer
    with UsageProducer("127.0.0.1:9092") as producer:
        producer.send({...v1 event...})   # validated here; raises EventError if invalid

Events are validated and priced at the edge (like HTTP ingest), batched per
partition into envelopes (partition = crc32(user_id), librdkafka's
"consistent" hash), and produced by an idempotent acks=all producer. The
send buffer is bounded (``buffer_mb``): when it is full, ``send`` waits for
deliveries instead of raising BufferError. What could not be delivered is
counted and kept (up to ``keep_failed``) in ``failed`` for the caller.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from tokentrail.envelope import MAX_EVENTS_PER_MESSAGE, build_envelopes, encode_event
from tokentrail.errors import BrokerUnavailable
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher, Ticket
from tokentrail.runtime.topics import topic_partitions
from tokentrail.settings import Settings

log = logging.getLogger(__name__)


def _partitions_of(bootstrap: str, topic: str) -> int | None:
    """The topic's own partition count, not a setting that might differ from it: a user
    must hash to the partition every other producer sends it to. A broker that is down
    now does not stop the producer (it buffers); the setting stands in."""
    try:
        return topic_partitions(bootstrap, topic, timeout_s=5)
    except BrokerUnavailable:
        log.warning("broker %s unreachable: assuming TOKENTRAIL_PARTITIONS for %s", bootstrap, topic)
        return None


class UsageProducer:
    def __init__(
        self, bootstrap: str, topic: str | None = None, partitions: int | None = None,
        batch_events: int = MAX_EVENTS_PER_MESSAGE, buffer_mb: int = 64, keep_failed: int = 10_000,
        prices: PriceTable | None = None,
    ) -> None:
        settings = Settings()
        self.topic = topic or settings.usage_topic
        self.partitions = partitions or _partitions_of(bootstrap, self.topic) or settings.partitions
        self.batch_events = batch_events
        self.prices = prices or PriceTable.load(settings.prices_file)
        self._publisher = Publisher(bootstrap, self.topic, buffer_kbytes=buffer_mb * 1024)
        self._buffer: list[dict[str, Any]] = []
        self._tickets: list[tuple[Ticket, list[dict[str, Any]]]] = []
        self._lock = threading.Lock()
        self.keep_failed = keep_failed
        self.sent = 0
        self.delivered = 0
        self.failed: list[dict[str, Any]] = []
        self.failed_count = 0

    def send(self, event: dict[str, Any]) -> None:
        """Validate and queue one v1 event (raises tokentrail.errors.EventError)."""
        wire = encode_event(event, self.prices)
        with self._lock:
            self._buffer.append(wire)
            if len(self._buffer) >= self.batch_events * self.partitions:
                self._send_buffer()

    def _send_buffer(self) -> None:
        events, self._buffer = self._buffer, []
        if not events:
            return
        envelopes = list(build_envelopes(events, self.partitions, self.batch_events))
        ticket = self._publisher.publish(envelopes, len(envelopes), len(events), block_s=300)
        self._tickets.append((ticket, events))
        self.sent += len(events)
        self._reap(wait_s=0)

    def _reap(self, wait_s: float) -> None:
        still: list[tuple[Ticket, list[dict[str, Any]]]] = []
        for ticket, events in self._tickets:
            if not ticket.wait(wait_s) and ticket.pending > 0:
                still.append((ticket, events))
                continue
            self.delivered += ticket.delivered_events
            if ticket.failed_events:
                self.failed_count += ticket.failed_events
                room = self.keep_failed - len(self.failed)
                self.failed.extend(events[:max(room, 0)])
        self._tickets = still

    def flush(self, timeout_s: float = 60.0) -> int:
        """Send what is buffered and wait for delivery; returns events not yet acknowledged."""
        with self._lock:
            self._send_buffer()
            self._publisher.flush(timeout_s)
            self._reap(wait_s=0)
            return sum(t.events for t, _ in self._tickets)

    def close(self, timeout_s: float = 60.0) -> int:
        left = self.flush(timeout_s)
        self._publisher.close(1)
        return left

    def __enter__(self) -> UsageProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
