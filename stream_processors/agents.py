"""Faust agents: usage envelopes -> user windows (+ org deltas) -> org windows.

All time logic is event time (see windows.py); this module only moves data
between topics and tables. Every table write happens inside the agent loop,
so it carries the event's partition and lands in the matching changelog
partition.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import orjson

from stream_processors import windows
from stream_processors.app import Processors
from tokentrail.envelope import decode_envelope, partition_for
from tokentrail.pricing import PriceTable
from tokentrail.settings import Settings

log = logging.getLogger(__name__)


def _progress(p: Processors, key: str) -> dict[str, int]:
    stored = p.progress.get(key)
    return dict(stored) if stored else {"processed": 0, "duplicates": 0, "late": 0, "invalid": 0,
                                        "messages": 0, "watermark_ms": 0, "offset": -1}


def register(p: Processors, settings: Settings, prices: PriceTable) -> None:
    retention_ms = settings.window_retention_hours * 3600 * 1000
    user_expiry = windows.ExpiryIndex()
    org_expiry = windows.ExpiryIndex()

    def _expire(table: Any, index: windows.ExpiryIndex, partition: int, watermark: int, before: int) -> None:
        """Drop this partition's buckets that fell out of retention (inside the
        agent loop, because Faust table deletes need an event context)."""
        index.ensure_loaded(partition, _keys_of_partition(table, partition, settings.partitions))
        if watermark // windows.MINUTE_MS == before // windows.MINUTE_MS:
            return
        for key in index.pop_expired(partition, watermark, retention_ms):
            table.pop(key, None)

    @p.app.agent(p.usage, name="usage-windows")
    async def usage_windows(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            key = f"usage/{msg.partition}"
            prog = _progress(p, key)
            if msg.offset <= prog["offset"]:
                continue  # already applied before a restart; state came back from the changelog
            # Invalid items are only counted here: the history sink, which reads
            # the same messages, is the one stage that dead-letters them.
            good, bad = decode_envelope(event.value, prices)
            result = windows.apply_batch(good, p.user_windows, prog["watermark_ms"], retention_ms)
            # Org deltas go out before the user buckets are written: if we die
            # in between, the replay recomputes the same deltas (same source
            # offset), which org buckets skip; the reverse order could lose them.
            for org, per_minute in result.org_deltas.items():
                await p.org_deltas.send(
                    key=org.encode(),
                    partition=partition_for(org, settings.partitions),
                    value={"org": org, "part": msg.partition, "offset": msg.offset,
                           "minutes": {str(m): s for m, s in per_minute.items()}},
                )
            for bucket_key, bucket in result.user_buckets.items():
                p.user_windows[bucket_key] = bucket
                user_expiry.add(msg.partition, bucket_key)
            _expire(p.user_windows, user_expiry, msg.partition, result.watermark_ms, prog["watermark_ms"])
            prog.update(
                processed=prog["processed"] + result.counted, duplicates=prog["duplicates"] + result.duplicates,
                late=prog["late"] + result.late, invalid=prog["invalid"] + len(bad),
                messages=prog["messages"] + 1, watermark_ms=result.watermark_ms, offset=msg.offset,
            )
            p.progress[key] = prog

    @p.app.agent(p.org_deltas, name="org-windows")
    async def org_windows(stream: Any) -> None:
        async for event in stream.events():
            delta = event.value
            key = f"orgd/{event.message.partition}"
            prog = _progress(p, key)
            old_watermark = prog["watermark_ms"]
            for minute_text, sums in delta["minutes"].items():
                minute = int(minute_text)
                bucket_key = windows.org_key(delta["org"], minute)
                bucket = windows.apply_org_delta(p.org_windows.get(bucket_key), sums, delta["part"], delta["offset"])
                if bucket is not None:
                    p.org_windows[bucket_key] = bucket
                    org_expiry.add(event.message.partition, bucket_key)
                prog["watermark_ms"] = max(prog["watermark_ms"], (minute + 1) * windows.MINUTE_MS - 1)
            _expire(p.org_windows, org_expiry, event.message.partition, prog["watermark_ms"], old_watermark)
            prog["messages"] += 1
            p.progress[key] = prog

    stats_topic = p.app.topic(settings.stats_topic, value_serializer="raw", key_serializer="raw")
    instance = f"{socket.gethostname()}:{os.getpid()}"

    @p.app.timer(settings.stats_interval_s)
    async def publish_stats() -> None:
        """Cumulative per-partition progress, for GET /v1/pipeline."""
        now = int(time.time() * 1000)
        for key, prog in list(p.progress.items()):
            if prog and key.startswith("usage/"):
                value = {**prog, "stage": "processor", "instance": instance, "updated_ms": now}
                await stats_topic.send(key=f"processor/{key}".encode(), value=orjson.dumps(value))


def _keys_of_partition(table: Any, partition: int, partitions: int) -> list[str]:
    # Bucket keys are "kind SEP entity SEP minute"; entities are partitioned by crc32.
    return [k for k in list(table) if partition_for(k.split(windows.SEP)[1], partitions) == partition]
