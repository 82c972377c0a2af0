"""Create the topics TokenTrail needs, with explicit configs, if missing.

Explicit configs matter for the embedded broker: Tansu's describe-configs
returns only configs set at creation, and Faust/librdkafka read them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from tokentrail.errors import BrokerUnavailable
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
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot list topics on {bootstrap}: {exc}") from None
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
