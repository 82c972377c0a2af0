"""Buffered writes to Faust tables: one changelog record per key per batch,
produced by librdkafka.

Every table write is a changelog record, the main cost of Faust state. The
processors take many envelopes at a time and write each touched key once, to
the changelog partition of the source partition whose events produced it
(where Faust's own ``table[key] = value`` would put it, given the event
context that Faust's batching does not provide).

The records themselves go through a confluent-kafka producer (C, ~1 µs a
record) instead of Faust's pure-Python one (~60 µs). They are byte-for-byte
what Faust writes (JSON key and value; a tombstone for a delete), so Faust's
own recovery reads them back. ``ChangelogWriter.flush`` blocks until every
record is acknowledged; the agents call it before they ack a batch's events,
and Faust commits only acked offsets, so a crash can never commit offsets
whose state changes were lost.

End markers. The embedded broker (Tansu 0.6) reports a partition's high
watermark as the base offset of its LAST BATCH plus one, so after a batch of
ten records it says the end is 1, not 10. Faust recovers a table by reading
its changelog up to that high watermark, and would silently stop short of the
last batch's records. So ``flush`` ends every changelog partition it wrote
with a one-record batch of its own: a tombstone for ``END_MARKER``, a key no
table ever holds (deleting it is a no-op). Then the reported end is the true
end on Tansu, and on Apache Kafka the marker costs one compacted record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from tokentrail.errors import BrokerUnavailable
from tokentrail.publish import producer_config

END_MARKER = orjson.dumps("\u0000changelog-end")


class ChangelogWriter:
    def __init__(self, bootstrap: str) -> None:
        # Delivery reports only for failures: a Python callback per record
        # would cost more than the record itself.
        self._producer = Producer(producer_config(bootstrap, **{"linger.ms": 2, "delivery.report.only.error": True}))
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._written: set[tuple[str, int]] = set()  # changelog partitions since the last flush

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(str(err))

    def send(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        with self._lock:  # two agents share a writer; flush runs in a thread
            self._written.add((topic, partition))
        self._produce(topic, partition, key, value)

    def send_many(self, topic: str, records: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """``send`` for many (partition, key, value) records of one topic."""
        produce = self._producer.produce
        on_delivery = self._on_delivery
        partitions = set()
        for partition, key, value in records:
            partitions.add(partition)
            try:
                produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery)
            except BufferError:
                self._produce(topic, partition, key, value)
        with self._lock:
            self._written.update((topic, p) for p in partitions)

    def _produce(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain it

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every record sent so far is acknowledged, or raise.

        Then end each written partition with its own one-record batch (see
        "End markers" above), acknowledged too.
        """
        with self._lock:
            written, self._written = self._written, set()
        left = self._producer.flush(timeout_s)
        if not left and written:
            # Produced only after the batch is acknowledged, so never in one batch with it.
            for topic, partition in sorted(written):
                self._produce(topic, partition, END_MARKER, None)
            left = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if left or errors:
            raise BrokerUnavailable(f"changelog writes not acknowledged ({left} pending): {errors[:3]}")


class BufferedTable:
    def __init__(self, table: Any, writer: ChangelogWriter | None = None) -> None:
        self.table = table
        self.writer = writer
        # Faust's memory store wraps a plain dict; reading it directly skips
        # the Mapping protocol (a KeyError per miss), the processors' top cost.
        inner = getattr(table.data, "data", None)
        self.local: Any = inner if isinstance(inner, dict) else table.data
        self.topic = table.changelog_topic.get_topic_name()
        self.pending: dict[Any, tuple[int, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self.pending.get(key)
        if hit is not None:
            return hit[1]
        return self.local.get(key)

    def set(self, partition: int, key: Any, value: Any) -> None:
        self.pending[key] = (partition, value)

    def delete(self, partition: int, key: Any) -> None:
        self.pending[key] = (partition, None)

    def keys(self) -> list[Any]:
        return list(self.local.keys())

    def flush(self) -> int:
        """Apply pending writes locally and send them to the changelog.

        With a writer, the caller must call ``writer.flush()`` before the
        batch's offsets may be committed.
        """
        data = self.local
        if self.writer is not None:
            records = self.take_records()
            self.writer.send_many(self.topic, records)
            return len(records)
        for key, (partition, value) in self.pending.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
            if value is None:
                self.table.send_changelog(partition, key, None, value_serializer="raw")
            else:
                self.table.send_changelog(partition, key, value)
        n = len(self.pending)
        self.pending = {}
        return n

    def take_records(self) -> list[tuple[int, bytes, bytes | None]]:
        """Apply the pending writes locally and take them as changelog records
        (partition, key, value), to be sent later with ``writer.send_many``:
        reads see them at once, and the caller chooses when they go out."""
        records = list(self._apply_encoded())
        self.pending = {}
        return records

    def _apply_encoded(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """Apply the pending writes locally, yielding each as a changelog record."""
        data = self.local
        dumps = orjson.dumps
        for key, (partition, value) in self.pending.items():
            if value is None:
                data.pop(key, None)
                yield partition, dumps(key), None
            else:
                data[key] = value
                yield partition, dumps(key), value if type(value) is bytes else dumps(value)


def _encode(value: Any) -> bytes | None:
    """As Faust encodes a table value: bytes as they are ("raw"), else JSON; None = tombstone."""
    if value is None or isinstance(value, bytes):
        return value
    return orjson.dumps(value)
