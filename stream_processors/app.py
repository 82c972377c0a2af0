"""The Faust application: broker, topics and tables, built from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from tokentrail.settings import Settings

ORG_DELTAS_SUFFIX = "org-deltas"
USER_WINDOWS = "user-minute-deltas"
FETCH_BYTES = 16 * 1024 * 1024  # per partition


@dataclass
class Processors:
    app: faust.App
    usage: Any  # faust topics/tables are loosely typed
    org_deltas: Any
    user_windows: Any
    org_windows: Any
    progress: Any


def org_deltas_topic(settings: Settings) -> str:
    return f"{settings.app_id}.{ORG_DELTAS_SUFFIX}"


def faust_app(app_id: str, settings: Settings, bootstrap: str, **overrides: Any) -> faust.App:
    """A Faust app as every TokenTrail stage runs it. The app id is also the
    consumer group, so each stage reads the usage topic at its own pace.
    ``overrides``: more Faust settings, for one stage."""
    session_s = settings.session_timeout_ms / 1000
    return faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",  # state is rebuilt from changelog topics on start
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(session_s / 5, 0.5),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        table_cleanup_interval=3600,  # windows expire in event time, by our own code
        **overrides,
    )


def build(settings: Settings, bootstrap: str) -> Processors:
    # Envelopes are up to 512 KiB: Faust's 1 MiB per partition and fetch would
    # make the processors wait on fetch round trips to fill a batch.
    app = faust_app(settings.app_id, settings, bootstrap, consumer_max_fetch_size=FETCH_BYTES)
    usage = app.topic(settings.usage_topic, value_serializer="raw", key_serializer="raw",
                      partitions=settings.partitions)
    org_deltas = app.topic(org_deltas_topic(settings), value_serializer="json", key_serializer="raw",
                           partitions=settings.partitions, internal=True)
    # Tables are co-partitioned with the stream that writes them: user buckets
    # with the usage topic, org buckets with the org-delta topic.
    # User windows are stored as deltas (windows.py) whose values are JSON bytes
    # made by the processors: value_type=bytes stores them as they are ("raw").
    user_windows = app.Table(USER_WINDOWS, default=None, partitions=settings.partitions, key_type=str,
                             value_type=bytes)
    org_windows = app.Table("org-minute", default=None, partitions=settings.partitions)
    progress = app.Table("progress", default=None, partitions=settings.partitions)
    return Processors(app, usage, org_deltas, user_windows, org_windows, progress)
