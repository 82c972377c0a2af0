"""Create the topics TokenTrail needs, with explicit configs, if missing.

Explicit configs matter for the embedded broker: Tansu's describe-configs
returns only configs set at creation, and Faust/librdkafka read them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from tokentrail.errors import BrokerUnavailable, TokenTrailError
from tokentrail.settings import Settings

log = logging.getLogger(__name__)

# Usage history lives in ClickHouse; the topic only has to outlive the longest
# expected sink outage, so a week is kept.
_WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    delete = {"cleanup.policy": "delete", "retention.ms": _WEEK_MS}
    return [
        TopicSpec(settings.usage_topic, settings.partitions, delete),
        TopicSpec(settings.dead_letter_topic, 1, delete),
        # Latest stats per stage instance (key = stage/instance id).
        TopicSpec(settings.stats_topic, 1, {"cleanup.policy": "compact", "retention.ms": _WEEK_MS}),
        # Alerts (JSON, key user_id): the alert sink stores them, webhooks deliver them.
        TopicSpec(settings.alerts_topic, settings.partitions, delete),
        # Latest bot score per user (key user_id): compacted, read by the alert sink.
        TopicSpec(settings.risk_topic, settings.partitions, {"cleanup.policy": "compact", "retention.ms": "-1"}),
    ]


def create_missing(bootstrap: str, specs: list[TopicSpec], replication: int = 1, timeout_s: float = 15) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet; returns the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        topics = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot list topics on {bootstrap}: {exc}") from None
    existing = set(topics)
    for spec in specs:
        have = topics.get(spec.name)
        if have is not None and have.error is None and have.partitions and len(have.partitions) != spec.partitions:
            # Users are hashed to partitions by count: with another count a user's events
            # (and re-sends) would land on other partitions than before, and live windows,
            # per-user order and dedup would break. Refuse to start instead.
            raise TokenTrailError(
                f"topic {spec.name} has {len(have.partitions)} partitions, but this stage expects "
                f"{spec.partitions} (TOKENTRAIL_PARTITIONS); run every stage with "
                f"TOKENTRAIL_PARTITIONS={len(have.partitions)}")
    wanted = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a racing creator is fine
                raise BrokerUnavailable(f"cannot create topic {name}: {exc}") from None
    log.info("created topics: %s", ", ".join(created))
    return created


def topic_partitions(bootstrap: str, topic: str, timeout_s: float = 10) -> int | None:
    """How many partitions ``topic`` has; None when it does not exist (yet)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        meta = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read topic {topic} on {bootstrap}: {exc}") from None
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return len(meta.partitions)
