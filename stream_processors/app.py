"""The Faust application: broker, topics and tables, built from Settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from tokentrail.settings import Settings

ORG_DELTAS_SUFFIX = "org-deltas"
USER_WINDOWS = "user-minute-deltas"
# Org-window records, one per org prefix and hour (windows.py); "org-minute"
# held one per minute, a value format of its own, and is no longer written.
ORG_WINDOWS = "org-windows"
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


class PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most the app's
    ``fetch_max_wait_ms`` for a fetch.

    Faust hard-codes 1,500 ms. The embedded broker (Tansu 0.6) does not answer
    a waiting fetch as soon as data arrives: with Faust's wait, org deltas
    reached the org-windows agent 0.3-0.6 s after they were sent; with 100 ms,
    0.05-0.2 s. Apache Kafka answers at once either way; a short wait only adds
    an empty fetch per wait when a stage is idle.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts (its Fetcher); there is no
        # public way through Faust (tests/integration/test_faust_fetch_wait.py).
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", App.fetch_max_wait_ms)
        return consumer


class PromptConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class PromptTransport(faust_aiokafka.Transport):
    Consumer = PromptConsumer


class App(faust.App):
    """faust.App with the consumer transport above (not looked up by URL scheme)."""

    fetch_max_wait_ms = 1500  # Faust's own; faust_app sets the stage's

    def _new_transport(self) -> Any:
        return PromptTransport(self.conf.broker_consumer, self)


def switch_threads_often(settings: Settings) -> None:
    """Set this process's thread switch interval; for a Faust stage's process.

    A Faust stage's threads share the GIL: aiokafka's consumer thread (fetch,
    decompress and parse records) and the agents' event loop (plus short-lived
    ones, such as changelog flushes). With CPython's 5 ms switch interval the
    consumer thread, behind a folding agent, got the GIL so rarely that each
    batch's records were parsed only after the fold, while the agent sat idle
    waiting for them (~0.1 s per usage batch, measured). 0.5 ms:
    bench.processors at 1M, median 52.6% -> 55-57% of the ceiling.
    """
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)


def faust_app(app_id: str, settings: Settings, bootstrap: str, batch_messages: int, **overrides: Any) -> faust.App:
    """A Faust app as every TokenTrail stage runs it. The app id is also the
    consumer group, so each stage reads the usage topic at its own pace.
    ``batch_messages``: the most messages the stage takes at a time; its
    streams buffer twice that. (Faust's default, 4,096 messages, let a stage
    catching up hold ~20 processor batches of envelopes, ~1 GB, waiting: in
    one run of ``bench.processors --events 3000000 --days 3`` the worker grew
    525 -> 608 MiB from 1M to 3M with it, 529 -> 556 MiB with 400; no slower,
    and its recovery after kill -9 took as long, 28 s.)
    ``overrides``: more Faust settings, for one stage."""
    session_s = settings.session_timeout_ms / 1000
    overrides.setdefault("stream_buffer_maxsize", 2 * batch_messages)
    app = App(
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
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


def build(settings: Settings, bootstrap: str) -> Processors:
    # Envelopes are up to 512 KiB: Faust's 1 MiB per partition and fetch would
    # make the processors wait on fetch round trips to fill a batch.
    app = faust_app(settings.app_id, settings, bootstrap, settings.processor_batch_messages,
                    consumer_max_fetch_size=FETCH_BYTES)
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
    org_windows = app.Table(ORG_WINDOWS, default=None, partitions=settings.partitions)
    progress = app.Table("progress", default=None, partitions=settings.partitions)
    return Processors(app, usage, org_deltas, user_windows, org_windows, progress)
