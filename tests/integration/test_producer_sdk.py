"""The producer SDK and `tokentrail replay` against the real embedded broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from producers import replay
from producers.sdk import UsageProducer
from tests.helpers import isolated_settings, read_all
from tokentrail.envelope import partition_for
from tokentrail.errors import EventError, TokenTrailError
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.runtime.topics import create_missing, pipeline_topics
from tokentrail.settings import Settings

pytestmark = pytest.mark.integration


def fresh(broker: EmbeddedBroker) -> Settings:
    return isolated_settings(broker.bootstrap, partitions=3)


def event(i: int) -> dict[str, Any]:
    return {"event_id": f"sdk-{i}", "timestamp": "2026-11-23T09:15:02Z", "user_id": f"u{i % 11}",
            "org_id": "acme", "model": "gpt-5", "input_tokens": i, "output_tokens": 1}


def test_sdk_delivers_batches_partitioned_by_user(broker: EmbeddedBroker) -> None:
    s = fresh(broker)
    with UsageProducer(broker.bootstrap, s.usage_topic, s.partitions, batch_events=50) as producer:
        for i in range(2000):
            producer.send(event(i))
        with pytest.raises(EventError, match="input_tokens"):
            producer.send({**event(1), "input_tokens": -1})
    assert producer.delivered == 2000 and producer.failed_count == 0
    seen = {}
    for partition, batch in read_all(broker.bootstrap, s.usage_topic, s.partitions):
        assert len(batch) <= 50
        for e in batch:
            assert partition == partition_for(e["user_id"], s.partitions)  # a user's events stay in order
            seen[e["event_id"]] = e["input_tokens"]
    assert seen == {f"sdk-{i}": i for i in range(2000)}


def test_replay_sends_a_file_in_order_and_dead_letters_bad_lines(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = fresh(broker)
    path = tmp_path / "events.ndjson"
    lines = [orjson.dumps(event(i)) for i in range(500)]
    lines.insert(100, b"{not json")
    lines.insert(300, orjson.dumps({**event(9999), "model": ""}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert replay.run(path, broker.bootstrap, s) == 0
    got = [e for _, batch in read_all(broker.bootstrap, s.usage_topic, s.partitions) for e in batch]
    assert len(got) == 500
    per_user: dict[str, list[int]] = {}
    for e in got:
        per_user.setdefault(e["user_id"], []).append(e["input_tokens"])
    assert all(v == sorted(v) for v in per_user.values())  # file order kept per user
    letters = [v for _, v in read_all(broker.bootstrap, s.dead_letter_topic, 1)]
    assert sorted(letter["reason"].split(":")[0] for letter in letters) == ["line 101", "line 301"]


def test_producers_follow_the_topics_partitions_and_stages_refuse_another_count(broker: EmbeddedBroker) -> None:
    """The hash that keeps a user on one partition depends on the count: a producer
    configured with another one would scatter users (and their re-sends) across partitions."""
    s = fresh(broker)  # 3 partitions
    wrong = s.model_copy(update={"partitions": 5})
    with UsageProducer(broker.bootstrap, wrong.usage_topic) as producer:
        assert producer.partitions == 3
        for i in range(200):
            producer.send(event(i))
    for partition, batch in read_all(broker.bootstrap, s.usage_topic, 3):
        assert all(partition == partition_for(e["user_id"], 3) for e in batch)
    with pytest.raises(TokenTrailError, match="has 3 partitions, but this stage expects 5"):
        create_missing(broker.bootstrap, pipeline_topics(wrong))
