"""Faust recovers a table by reading its changelog up to the reported high
watermark. On the embedded broker that figure is the last batch's base offset
plus one, so without the end marker the last batch of a flush is not recovered."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from stream_processors.table_writes import END_MARKER, ChangelogWriter
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.runtime.topics import TopicSpec, create_missing


def read_to_high_watermark(bootstrap: str, topic: str, partition: int) -> list[bytes]:
    """What a reader that trusts the high watermark (as Faust recovery does) gets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    tp = TopicPartition(topic, partition)
    _, high = consumer.get_watermark_offsets(tp, timeout=10)
    consumer.assign([TopicPartition(topic, partition, 0)])
    keys: list[bytes] = []
    offset = -1
    while offset < high - 1:
        msg = consumer.poll(5)
        assert msg is not None, f"nothing more to read before the high watermark {high}"
        assert msg.error() is None
        offset = msg.offset()
        keys.append(msg.key() or b"")
    consumer.close()
    return keys


def test_a_reader_up_to_the_high_watermark_sees_every_record_of_a_flush(broker: EmbeddedBroker) -> None:
    topic = f"marker-{uuid.uuid4().hex[:8]}-changelog"
    create_missing(broker.bootstrap, [TopicSpec(topic, 2, {"cleanup.policy": "compact", "retention.ms": "-1"})], 1)
    writer = ChangelogWriter(broker.bootstrap)
    for round_ in range(2):
        for i in range(25):
            writer.send(topic, 0, f'"k{round_}-{i}"'.encode(), b"[1]")
        writer.flush()
    keys = read_to_high_watermark(broker.bootstrap, topic, 0)
    written = [k for k in keys if k != END_MARKER]
    assert written == [f'"k{r}-{i}"'.encode() for r in range(2) for i in range(25)]
    assert keys[-1] == END_MARKER  # and nothing was written to partition 1, so no marker there
    _, high = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"}).get_watermark_offsets(
        TopicPartition(topic, 1), timeout=10)
    assert high == 0
