"""Faust agents: usage envelopes -> user windows (+ org deltas) -> org windows.

All time logic is event time and lives in windows.py; this module moves data
between topics and tables. The usage agent takes many envelopes at a time
(``take_events``) and writes each touched bucket once per batch (see
table_writes.py): changelog records, not events, are what Faust state costs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from stream_processors import windows
from stream_processors.app import Processors
from stream_processors.table_writes import BufferedTable, ChangelogWriter
from tokentrail.envelope import decode_envelope, partition_for
from tokentrail.pricing import PriceTable
from tokentrail.settings import Settings

log = logging.getLogger(__name__)
# Entries per org-delta message (~80 bytes each): stays far below the broker's
# 1 MB message limit however spread out in event time a batch is.
DELTA_CHUNK = 2000
NEW_PROGRESS = {"processed": 0, "duplicates": 0, "late": 0, "invalid": 0, "messages": 0, "watermark_ms": 0,
                "offset": -1}


def _progress(progress: BufferedTable, key: str) -> dict[str, int]:
    stored = progress.get(key)
    return dict(stored) if stored else dict(NEW_PROGRESS)


class Expiry:
    """Event-time expiry of one table's buckets, partition by partition."""

    def __init__(self, table: BufferedTable, partitions: int, retention_ms: int) -> None:
        self.table = table
        self.partitions = partitions
        self.retention_ms = retention_ms
        self.index = windows.ExpiryIndex()

    def add(self, partition: int, key: str, minute: int | None = None) -> None:
        self.index.add(partition, key, minute)

    def run(self, partition: int, watermark: int, before: int) -> None:
        self.index.ensure_loaded(partition, lambda: _keys_of_partition(self.table.keys(), partition, self.partitions))
        if watermark // windows.MINUTE_MS == before // windows.MINUTE_MS:
            return  # the horizon only moves when the watermark enters a new minute
        for key in self.index.pop_expired(partition, watermark, self.retention_ms):
            self.table.delete(partition, key)


def register(p: Processors, settings: Settings, prices: PriceTable, bootstrap: str) -> None:
    retention_ms = settings.window_retention_hours * 3600 * 1000
    writer = ChangelogWriter(bootstrap)
    users = BufferedTable(p.user_windows, writer)
    orgs = BufferedTable(p.org_windows, writer)
    # One buffer per agent over the same table: an agent's flush must never
    # carry the other agent's half-done progress.
    progress = BufferedTable(p.progress, writer)
    org_progress = BufferedTable(p.progress, writer)

    async def flush_changelog() -> None:
        await asyncio.to_thread(writer.flush)
    user_expiry = Expiry(users, settings.partitions, retention_ms)
    org_expiry = Expiry(orgs, settings.partitions, retention_ms)

    @p.app.agent(p.usage, name="usage-windows")
    @exit_on_crash
    async def usage_windows(stream: Any) -> None:
        async for batch in stream.take_events(settings.processor_batch_messages, settings.processor_batch_s):
            deltas: dict[str, list[list[Any]]] = {}
            for part, events in by_partition(batch).items():
                key = f"usage/{part}"
                prog = _progress(progress, key)
                for event in events:
                    offset = event.message.offset
                    if offset <= prog["offset"]:
                        continue  # applied before a restart; state came back from the changelog
                    # Invalid items are only counted here: the history sink, which reads
                    # the same messages, is the one stage that dead-letters them.
                    good, bad = decode_envelope(event.value, prices)
                    result = windows.apply_batch(good, users, prog["watermark_ms"], retention_ms)
                    for org, per_minute in result.org_deltas.items():
                        entries = deltas.setdefault(org, [])
                        entries.extend([part, offset, minute, sums] for minute, sums in per_minute.items())
                    for bucket_key, bucket in result.user_buckets.items():
                        users.set(part, bucket_key, bucket)
                    for bucket_key, minute in result.new_buckets:
                        user_expiry.add(part, bucket_key, minute)
                    user_expiry.run(part, result.watermark_ms, prog["watermark_ms"])
                    prog.update(
                        processed=prog["processed"] + result.counted,
                        duplicates=prog["duplicates"] + result.duplicates, late=prog["late"] + result.late,
                        invalid=prog["invalid"] + len(bad), messages=prog["messages"] + 1,
                        watermark_ms=result.watermark_ms, offset=offset,
                    )
                progress.set(part, key, prog)
            # Org deltas are delivered before user buckets are written: if we die
            # in between, the replay recomputes the same (source partition,
            # offset) entries, which org buckets skip; the other order could lose them.
            futures = [
                await p.org_deltas.send(key=org.encode(), partition=partition_for(org, settings.partitions),
                                        value={"org": org, "entries": entries[i : i + DELTA_CHUNK]})
                for org, entries in deltas.items()
                for i in range(0, len(entries), DELTA_CHUNK)
            ]
            if futures:
                await asyncio.gather(*futures)
            # Buckets are durable before the progress record that says "applied up
            # to offset X" is written, and both before Faust commits the offsets.
            users.flush()
            await flush_changelog()
            progress.flush()
            await flush_changelog()

    @p.app.agent(p.org_deltas, name="org-windows")
    @exit_on_crash
    async def org_windows(stream: Any) -> None:
        async for batch in stream.take_events(settings.processor_batch_messages, settings.processor_batch_s):
            for event in batch:
                part = event.message.partition
                key = f"orgd/{part}"
                prog = _progress(org_progress, key)
                before = prog["watermark_ms"]
                org = event.value["org"]
                for source_part, source_offset, minute, sums in event.value["entries"]:
                    bucket_key = windows.org_key(org, minute)
                    bucket = windows.apply_org_delta(orgs.get(bucket_key), sums, source_part, source_offset)
                    if bucket is not None:
                        orgs.set(part, bucket_key, bucket)
                        org_expiry.add(part, bucket_key)
                    prog["watermark_ms"] = max(prog["watermark_ms"], (minute + 1) * windows.MINUTE_MS - 1)
                org_expiry.run(part, prog["watermark_ms"], before)
                prog["messages"] += 1
                org_progress.set(part, key, prog)
            orgs.flush()
            org_progress.flush()
            await flush_changelog()

    register_stats(p.app, settings, p.progress, "processor", key_prefix="usage/")


def register_stats(app: Any, settings: Settings, progress: Any, stage: str, key_prefix: str = "") -> None:
    """A timer publishing a stage's cumulative per-partition progress to the
    stats topic (key "<stage>/<progress key>"), for GET /v1/pipeline."""
    stats_topic = app.topic(settings.stats_topic, value_serializer="raw", key_serializer="raw")
    instance = f"{socket.gethostname()}:{os.getpid()}"

    @app.timer(settings.stats_interval_s)
    async def publish_stats() -> None:
        now = int(time.time() * 1000)
        for key, prog in list(progress.data.items()):
            if prog and key.startswith(key_prefix):
                value = {**prog, "stage": stage, "instance": instance, "updated_ms": now}
                await stats_topic.send(key=f"{stage}/{key}".encode(), value=orjson.dumps(value))


def exit_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A crashed Faust agent leaves its worker running but idle; exit instead,
    so the supervisor restarts the stage and state comes back from changelogs."""

    @functools.wraps(agent)
    async def guarded(stream: Any) -> None:
        try:
            await agent(stream)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("agent %s crashed; exiting so that the stage is restarted", agent.__name__)
            logging.shutdown()
            os._exit(70)

    return guarded


def by_partition(batch: Iterable[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for event in batch:
        out.setdefault(event.message.partition, []).append(event)
    for events in out.values():
        events.sort(key=lambda e: e.message.offset)
    return out


def _keys_of_partition(keys: Iterable[str], partition: int, partitions: int) -> list[str]:
    # Bucket keys are "kind SEP entity SEP minute"; entities are partitioned by crc32.
    return [k for k in keys if partition_for(k.split(windows.SEP)[1], partitions) == partition]


