"""The producer path and the history sink against real Apache Kafka (KRaft).

Runs when a Docker daemon is reachable (testcontainers); skipped otherwise,
which is the case on machines without a Docker engine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import require_docker

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    require_docker()
    from testcontainers.community.kafka import KafkaContainer

    # Confluent's build of Apache Kafka 3.6, run in KRaft mode (no ZooKeeper).
    with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


def test_sdk_to_sink_exactly_once_on_apache_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    from producers.sdk import UsageProducer
    from stream_processors.sink import HistorySink
    from tokentrail.pricing import PriceTable
    from tokentrail.runtime.topics import create_missing, pipeline_topics
    from tokentrail.settings import Settings
    from tokentrail.store import open_store

    tag = uuid.uuid4().hex[:8]
    settings = Settings(usage_topic=f"usage-{tag}", sink_group=f"sink-{tag}", partitions=3)
    create_missing(kafka_bootstrap, pipeline_topics(settings))
    events = [{"event_id": f"k-{i}", "timestamp": "2026-11-23T09:15:02Z", "user_id": f"u{i % 9}",
               "org_id": "acme", "model": "gpt-5", "input_tokens": i, "output_tokens": 1} for i in range(5000)]
    with UsageProducer(kafka_bootstrap, settings.usage_topic, 3) as producer:
        for e in events + events[:100]:
            producer.send(e)
    assert producer.delivered == 5100 and producer.failed_count == 0
    store = open_store(str(tmp_path / "chdb"), None)
    store.apply_migrations()
    sink = HistorySink(settings, kafka_bootstrap, store, PriceTable.load(), lambda raw, why: None)
    sink.start()
    deadline = time.monotonic() + 120
    while sink.stats.stored + sink.stats.duplicates < 5100 and time.monotonic() < deadline:
        time.sleep(0.5)
    sink.stop()
    rows = store.query("SELECT count(), sum(input_tokens) FROM usage_events")
    store.close()
    assert (rows[0][0], rows[0][1]) == (5000, sum(range(5000)))
