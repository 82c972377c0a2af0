"""`tokentrail detector`: the detection stage, its own Faust app and consumer group.

It reads the usage topic, feeds every event of a partition in offset order (so
each user's events in their order) to a DetectorStage, and per batch of
envelopes (``take_events``):
1. publishes the alerts raised (alerts topic, key user_id) and the bot scores
   that moved (risk topic, compacted, key user_id), and waits for their acks;
2. writes each touched user's state ONCE to a changelogged table, and waits
   until every record is acknowledged;
3. only then writes each partition's progress (last offset applied, counters),
   acknowledged too, before Faust may commit the batch's offsets.
A crash before 2 completes replays the batch: the alerts come out again with
the same ids (the sink and webhooks dedupe by id). A crash between 2 and 3
replays it too, but each user state knows the last envelope applied to it, so
no event is fed twice and the lost batch's counts are counted once (see
stage.py). Re-sent events (same event_id) among a user's last
``detector_recent_ids`` events are not fed again. Once a day of event time per
partition, users idle past the detector's horizon are deleted from the table.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust

from stream_processors.agents import by_partition, exit_on_crash, register_stats
from stream_processors.app import faust_app, switch_threads_often
from stream_processors.detection import Alert
from stream_processors.detection.features import DAY_MS
from stream_processors.detection.stage import DetectorStage, RiskUpdate
from stream_processors.table_writes import BufferedTable, ChangelogWriter
from tokentrail import alerts as wire
from tokentrail.envelope import decode_envelope, from_our_producers, partition_for
from tokentrail.pricing import PriceTable
from tokentrail.runtime.topics import TopicSpec, create_missing, pipeline_topics
from tokentrail.settings import Settings

log = logging.getLogger(__name__)
TABLES = ("user-state", "progress")
NEW_PROGRESS = {"offset": -1, "fed": 0, "duplicates": 0, "invalid": 0, "alerts": 0, "risk_updates": 0,
                "pruned": 0, "pruned_day": 0}


def app_id(settings: Settings) -> str:
    return f"{settings.app_id}-detector"


def detector_topics(settings: Settings) -> list[TopicSpec]:
    """The pipeline's topics plus the two changelogs, all with explicit configs."""
    compact = {"cleanup.policy": "compact", "retention.ms": "-1"}
    own = [TopicSpec(f"{app_id(settings)}-{t}-changelog", settings.partitions, compact) for t in TABLES]
    return pipeline_topics(settings) + own


@dataclass
class DetectorApp:
    app: faust.App
    usage: Any  # faust topics/tables are loosely typed
    alerts: Any
    risk: Any
    states: Any
    progress: Any


def build(settings: Settings, bootstrap: str) -> DetectorApp:
    app = faust_app(app_id(settings), settings, bootstrap, settings.detector_batch_messages)
    raw: dict[str, Any] = {"value_serializer": "raw", "key_serializer": "raw"}
    usage = app.topic(settings.usage_topic, partitions=settings.partitions, **raw)
    alerts = app.topic(settings.alerts_topic, partitions=settings.partitions, **raw)
    risk = app.topic(settings.risk_topic, partitions=settings.partitions, **raw)
    # Co-partitioned with the usage topic: a user's state lives with its events.
    # value_type=bytes: the state is stored as is ("raw"); keys and progress are JSON.
    states = app.Table("user-state", default=None, partitions=settings.partitions, key_type=str,
                       value_type=bytes)
    progress = app.Table("progress", default=None, partitions=settings.partitions, key_type=str)
    return DetectorApp(app, usage, alerts, risk, states, progress)


@dataclass
class Batch:
    """What one batch of envelopes produced."""

    touched: dict[str, int] = field(default_factory=dict)  # user -> source partition
    ends: dict[int, int] = field(default_factory=dict)  # partition -> last offset of the batch
    alerts: list[Alert] = field(default_factory=list)
    risk: list[RiskUpdate] = field(default_factory=list)


def feed(stage: DetectorStage, states: BufferedTable, prog: dict[str, Any], events: Iterable[Any],
         prices: PriceTable, batch: Batch, part: int) -> None:
    """Feed one partition's envelopes (in offset order) to the stage."""
    applied = prog["offset"]
    delete_pruned(stage, states, prog, part)  # listed by a record whose deletions a crash cut short
    stage.sync_peers(part, applied, prog.get("peers"))
    for message in events:
        offset = message.message.offset
        if offset <= applied:
            continue  # applied and counted before a restart; state and progress came back from the changelogs
        # the history sink dead-letters bad ones
        good, bad = decode_envelope(message.value, prices, from_our_producers(message.message.headers))
        fed_here: set[str] = set()
        for index, event in enumerate(good):
            user_id = event["user_id"]
            if user_id not in batch.touched:
                lost = stage.begin(user_id, states.get(user_id), applied, part)
                prog["fed"] += lost.fed
                prog["duplicates"] += lost.duplicates
                prog["alerts"] += lost.alerts
                prog["risk_updates"] += lost.risk_updates
                batch.touched[user_id] = part
            if stage.applied(user_id, offset):
                # The user's state has this envelope: its progress was lost in a crash. The
                # partition's event time moves on as it did, and a day the user closed here
                # goes to the peers again, at this very place (see stage.py).
                stage.detector.advance(part, event["ts_ms"])
                owe = stage.owed_contribution(part, offset, index)
                if owe is not None:
                    stage.detector.contribute(part, owe.org_id, owe.tokens)
                continue
            fed_here.add(user_id)
            found = stage.observe(event, offset, index)
            if found is None:
                prog["duplicates"] += 1
                continue
            prog["fed"] += 1
            batch.alerts.extend(found)
        stage.done(fed_here, offset)
        prog["invalid"] += len(bad)
        prog["offset"] = offset
    batch.ends[part] = prog["offset"]


def finish(stage: DetectorStage, states: BufferedTable, batch: Batch) -> None:
    """The batch's risk updates, and each touched user's state written once."""
    # An alert raised again within the batch (same id: its window grew) goes out in every
    # version, as it would live: a fast replay's batch spans hours of event time, and
    # keeping only the last version would lose when the alert was first raised.
    alerted: dict[str, int] = {}
    for a in batch.alerts:
        alerted[a.user_id] = alerted.get(a.user_id, 0) + 1
    batch.risk = stage.take_risk_updates()
    for user_id, part in batch.touched.items():
        stage.count_alerts(user_id, alerted.get(user_id, 0))
        value = stage.state(user_id, batch.ends[part])
        if value is None:
            states.delete(part, user_id)
        else:
            states.set(part, user_id, value)


def settle(stage: DetectorStage, batch: Batch, part: int, prog: dict[str, Any]) -> dict[str, Any]:
    """The partition's progress record once the batch's user states are durable."""
    prog["alerts"] += sum(1 for a in batch.alerts if batch.touched[a.user_id] == part)
    prog["risk_updates"] += sum(1 for r in batch.risk if batch.touched[r.user_id] == part)
    prog["peers"] = stage.save_peers(part, prog["offset"])  # one record: atomic with the offset
    return prog


def prune(stage: DetectorStage, states: BufferedTable, prog: dict[str, Any], part: int, partitions: int) -> None:
    """Once per day of the partition's event time: pick its users idle past the horizon.

    They are counted and listed in the progress record (``prune_pending``), and deleted
    from the table only once that record is durable (``delete_pruned``): a crash in
    between leaves the list, and the next batch of the partition deletes them again.
    Counting them with the deletions instead would lose the count in such a crash.
    """
    now = stage.detector.part_now.get(part, 0)
    day = now // DAY_MS
    if day <= prog["pruned_day"]:
        return
    prog["pruned_day"] = day
    mine = {user_id: value for user_id, value in states.local.items()
            if partition_for(user_id, partitions) == part and user_id not in states.pending}
    stale = stage.idle(mine, now)
    prog["pruned"] += len(stale)
    prog["prune_pending"] = stale


def delete_pruned(stage: DetectorStage, states: BufferedTable, prog: dict[str, Any], part: int) -> int:
    """Delete the users a durable progress record lists as pruned (tombstones, so the
    compacted changelog forgets them too); clears the list."""
    pending = prog.pop("prune_pending", None) or []
    for user_id in pending:
        stage.forget(user_id)
        states.delete(part, user_id)
    return len(pending)


def alert_value(alert: Alert, detected_ms: int) -> bytes:
    return wire.encode(wire.alert_message(
        alert.alert_id, alert.user_id, alert.org_id, alert.kind, alert.severity, alert.score,
        (alert.window_start_ms, alert.window_end_ms), detected_ms, alert.reasons))


def risk_value(update: RiskUpdate) -> bytes:
    return wire.encode(wire.risk_message(update.user_id, update.bot_score, update.reasons, update.updated_ms))


def register(d: DetectorApp, settings: Settings, prices: PriceTable, bootstrap: str) -> DetectorStage:
    stage = DetectorStage(settings.detector_recent_ids, settings.risk_min_change, partitions=settings.partitions)
    writer = ChangelogWriter(bootstrap)
    states = BufferedTable(d.states, writer)
    progress = BufferedTable(d.progress, writer)

    @d.app.agent(d.usage, name="detector")
    @exit_on_crash
    async def detect(stream: Any) -> None:
        async for envelopes in stream.take_events(settings.detector_batch_messages, settings.detector_batch_s):
            batch = Batch()
            progs: dict[int, dict[str, Any]] = {}
            for part, events in by_partition(envelopes).items():
                prog = progs[part] = {**NEW_PROGRESS, **(progress.get(f"usage/{part}") or {})}
                feed(stage, states, prog, events, prices, batch, part)
            finish(stage, states, batch)
            for part, prog in progs.items():
                prune(stage, states, prog, part, settings.partitions)
            await _publish(d, batch)
            states.flush()
            await asyncio.to_thread(writer.flush)  # user states durable ...
            for part, prog in progs.items():
                progress.set(part, f"usage/{part}", settle(stage, batch, part, prog))
            progress.flush()
            await asyncio.to_thread(writer.flush)  # ... before the progress that says they are
            if sum(delete_pruned(stage, states, prog, part) for part, prog in progs.items()):
                states.flush()
                await asyncio.to_thread(writer.flush)

    register_stats(d.app, settings, _Counters(d.progress), "detector")

    return stage


class _Counters:
    """The progress table as the stats timer should see it: the counters only (not the peer
    figures or the list of users pending deletion)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    @property
    def data(self) -> dict[str, Any]:
        return {key: {k: v for k, v in prog.items() if isinstance(v, int)} if prog else prog
                for key, prog in list(self.table.data.items())}


async def _publish(d: DetectorApp, batch: Batch) -> None:
    """Alerts and risk updates, acknowledged before the state that produced them is written."""
    detected_ms = int(time.time() * 1000)
    futures = [await d.alerts.send(key=a.user_id.encode(), value=alert_value(a, detected_ms)) for a in batch.alerts]
    futures += [await d.risk.send(key=r.user_id.encode(), value=risk_value(r)) for r in batch.risk]
    if futures:
        await asyncio.gather(*futures)


def run(settings: Settings, bootstrap: str) -> None:
    if settings.detector_nice:
        # Detection is off the path that makes usage queryable: when CPU is short,
        # the processors and the sink go first and detection catches up after
        # (its lag is in GET /v1/pipeline, stages.detector.lag).
        os.nice(settings.detector_nice)
    switch_threads_often(settings)
    create_missing(bootstrap, detector_topics(settings), settings.replication_factor)
    d = build(settings, bootstrap)
    register(d, settings, PriceTable.load(settings.prices_file), bootstrap)
    level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}.get(settings.log_level, "warn")
    logging.getLogger("faust").setLevel(logging.WARNING)
    faust.Worker(d.app, loglevel=level, quiet=True).execute_from_commandline()
