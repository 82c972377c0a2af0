"""`tokentrail worker`: run the stream processors until stopped."""

from __future__ import annotations

import logging

import faust

from stream_processors.agents import register
from stream_processors.app import ORG_WINDOWS, USER_WINDOWS, build, org_deltas_topic, switch_threads_often
from tokentrail.pricing import PriceTable
from tokentrail.runtime.topics import TopicSpec, create_missing, pipeline_topics
from tokentrail.settings import Settings

TABLES = (USER_WINDOWS, ORG_WINDOWS, "progress")


def processor_topics(settings: Settings) -> list[TopicSpec]:
    """The pipeline's topics plus the processors' own, all with explicit configs."""
    compact = {"cleanup.policy": "compact", "retention.ms": "-1"}
    own = [TopicSpec(org_deltas_topic(settings), settings.partitions,
                     {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)})]
    own += [TopicSpec(f"{settings.app_id}-{t}-changelog", settings.partitions, compact) for t in TABLES]
    return pipeline_topics(settings) + own


def run(settings: Settings, bootstrap: str) -> None:
    switch_threads_often(settings)
    create_missing(bootstrap, processor_topics(settings), settings.replication_factor)
    processors = build(settings, bootstrap)
    register(processors, settings, PriceTable.load(settings.prices_file), bootstrap)
    level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}.get(settings.log_level, "warn")
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(processors.app, loglevel=level, quiet=True)
    worker.execute_from_commandline()
