"""Faust agents: usage envelopes -> user windows (+ org deltas) -> org windows.

All time logic is event time and lives in windows.py; this module moves data
between topics and tables. The usage agent takes many envelopes at a time
(``noack_take``) and writes one user-window delta per (partition, minute) of
the batch, and one org delta per (org prefix, minute) for all its partitions:
changelog records and messages, not events, are what Faust state costs (see
table_writes.py). The per-event work is ``UserWindows.fold``. The org-windows
agent writes one changelog record per (org prefix, hour) a batch touched.

Order of writes per usage batch: user deltas, then progress (both acknowledged
by the changelog), then org deltas, and only then are the batch's events acked,
so Faust never commits an offset whose effects could be lost. The next batch is
folded while the broker acknowledges one (its writes wait their turn). After a
restart a partition's windows are rebuilt from its stored deltas and the org
deltas not known delivered are re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NoReturn

import orjson

from stream_processors import windows
from stream_processors.app import Processors
from stream_processors.table_writes import BufferedTable, ChangelogWriter
from tokentrail.envelope import decode_envelope, from_our_producers, partition_for
from tokentrail.pricing import PriceTable
from tokentrail.settings import Settings

log = logging.getLogger(__name__)
# Entries per org-delta message (~70 bytes each): stays far below the broker's
# 1 MB message limit however spread out in event time a batch is.
DELTA_CHUNK = 2000
# On a stop, how long the usage batch in flight may take to become durable.
STOP_WAIT_S = 10.0
# "orgs_sent": source offset up to which the partition's org deltas are known delivered.
NEW_PROGRESS = {"processed": 0, "duplicates": 0, "late": 0, "invalid": 0, "messages": 0, "watermark_ms": 0,
                "offset": -1, "orgs_sent": -1}


def _progress(progress: BufferedTable, key: str) -> dict[str, int]:
    stored = progress.get(key)
    return {**NEW_PROGRESS, **stored} if stored else dict(NEW_PROGRESS)


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


class UserState:
    """Each source partition's UserWindows, (re)built from the table when needed."""

    def __init__(self, table: BufferedTable, retention_ms: int) -> None:
        self.table = table
        self.retention_ms = retention_ms
        self.parts: dict[int, windows.UserWindows] = {}

    def get(self, part: int, prog: dict[str, int], resend: list[windows.OrgMessage]) -> windows.UserWindows:
        """The partition's windows. After a restart or a rebalance (the progress
        record is not the one this process wrote last), rebuild them from the
        stored deltas, and re-send the org deltas of those not known delivered."""
        state = self.parts.get(part)
        if state is not None and state.offset == prog["offset"]:
            return state
        state = windows.UserWindows(part, prog["watermark_ms"], self.retention_ms)
        prefix = windows.delta_prefix(part)
        stored = [(k, v) for k, v in self.table.local.items() if k.startswith(prefix)]
        state.load(stored)
        state.offset = prog["offset"]
        again = windows.resend_org_deltas(part, stored, prog["orgs_sent"])
        resend.extend(again)
        state.resent = bool(again)
        self.parts[part] = state
        return state

    def forget(self) -> None:
        """Forget every partition's windows (at each rebalance): each is rebuilt
        from the table when next needed. A partition may have been processed by
        another worker since this one last had it, and that worker may have
        written deltas without getting to write the progress record that says
        so: the offsets in ``get`` would then match a stale state, which does
        not know those deltas' events and would count them again. The table
        has them. (Even a partition in both this worker's old and new
        assignment may have been elsewhere in between: a worker that missed a
        generation, say after a long pause, sees only old and new.)"""
        self.parts.clear()


class QuietCollector:
    """The garbage collector kept away from what it cannot free.

    Once processing starts, the objects of start-up and recovery (Faust, its
    modules, restored tables) are frozen: full collections stop traversing
    them. Young collections run every 20,000 allocations instead of 700; the
    processors make no reference cycles of their own (their hot loops run with
    the collector off), so this only lets the short-lived containers of a batch
    die by reference count before the collector visits them. (Turning automatic
    collection off altogether, with a full collection every 10 s, measured the
    same: median 42.6% of the ceiling at 1M either way, four runs each.)
    """

    def __init__(self) -> None:
        self.done = False

    def once(self) -> None:
        if not self.done:
            self.done = True
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 10, 10)


class FreeMemoryReturner:
    """Hands memory freed by expired windows back to the OS now and then.

    Windows expire continuously in event time; glibc keeps the freed pages of
    the many small objects they were made of, so without this the worker's RSS
    creeps up long after its live state stopped growing. ``malloc_trim`` costs a
    few milliseconds; once per ``every_s`` is plenty.
    """

    def __init__(self, every_s: float = 20.0) -> None:
        self.every_s = every_s
        self.last = time.monotonic()
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            self._trim = None

    def maybe(self) -> None:
        if self._trim is not None and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self._trim(0)


def register(p: Processors, settings: Settings, prices: PriceTable, bootstrap: str) -> UserState:
    """The agents, their state and stats timer on ``p.app``; -> the usage agent's
    windows per source partition (returned for tests)."""
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
    user_state = UserState(users, retention_ms)
    quiet_collector = QuietCollector()
    free_memory = FreeMemoryReturner()
    org_expiry = Expiry(orgs, settings.partitions, retention_ms)

    @p.app.on_partitions_assigned.connect
    def forget_partition_state(_app: Any, /, *_args: Any, signal: Any, **_: Any) -> None:
        # What is kept in memory per partition, beside the tables, is rebuilt
        # from them after a rebalance (Faust has recovered the tables by then,
        # and before the rebalance it waited for the events delivered to be
        # acked, so for the usage batch in flight to be durable). Costs a
        # rebuild of the windows, as after a restart, per rebalance.
        user_state.forget()
        org_expiry.index.forget()

    def fold_batch(batch: list[Any], done: dict[int, int]) -> list[windows.OrgMessage]:
        """The synchronous part of a usage batch: envelopes -> user deltas, progress, org-delta messages.
        ``done`` gets the last source offset applied per partition with new events."""
        resend: list[windows.OrgMessage] = []
        org_sums: windows.OrgSums = {}
        tags: list[int] = []
        for part, events in by_partition(batch).items():
            key = f"usage/{part}"
            prog = _progress(progress, key)
            state = user_state.get(part, prog, resend)
            applied = prog["offset"]
            first = last = -1
            counted = duplicates = late = invalid = messages = 0
            for event in events:
                offset = event.message.offset
                if offset <= applied:
                    continue  # applied before a restart; state came back from the changelog
                # Invalid items are only counted here: the history sink, which reads
                # the same messages, is the one stage that dead-letters them.
                good, bad = decode_envelope(event.value, prices, from_our_producers(event.message.headers))
                c, d, n_late = state.fold(good)
                counted += c
                duplicates += d
                late += n_late
                invalid += len(bad)
                messages += 1
                if first < 0:
                    first = offset
                last = offset
            if last < 0:
                continue
            for bucket_key in state.expire():
                users.delete(part, bucket_key)
            records, orgs_per_minute = state.take_deltas(first, last)
            for bucket_key, value in records:
                users.set(part, bucket_key, value)
            # One org delta per (org prefix, minute) for all partitions of the batch,
            # tagged with those it sums.
            windows.add_org_sums(org_sums, orgs_per_minute, 1 << (len(tags) // 2))
            tags += [part, last]
            # Every earlier batch's org deltas are delivered before this batch's
            # progress is written (make_durable runs one batch at a time), but
            # not org deltas re-sent in this batch after a restart.
            orgs_sent = prog["orgs_sent"] if state.resent else applied
            state.resent = False
            prog.update(
                processed=prog["processed"] + counted, duplicates=prog["duplicates"] + duplicates,
                late=prog["late"] + late, invalid=prog["invalid"] + invalid, messages=prog["messages"] + messages,
                watermark_ms=state.watermark_ms, offset=last, orgs_sent=orgs_sent,
            )
            state.offset = last
            progress.set(part, key, prog)
            done[part] = last
        # Re-sent deltas go first, each with its own tag, then the batch's.
        return resend + windows.org_messages(org_sums, tags, DELTA_CHUNK)

    # Wall-clock timing of this process's batches per source partition, for
    # benchmarks (published with the stats only): the start of the first batch
    # with new events, and the end (everything durable, org deltas delivered)
    # of the latest one and the source offset it ended at. And this process's
    # org-delta messages sent and applied, with the end of the latest org batch:
    # with one worker, the org windows are complete when the two counts meet.
    timing: dict[int, dict[str, int]] = {}
    org_timing = {"org_messages_sent": 0, "org_messages_applied": 0, "org_batch_ended_ms": 0}

    async def make_durable(stream: Any, batch: list[Any], user_records: list[Any], progress_records: list[Any],
                           messages: list[windows.OrgMessage], done: dict[int, int], started_ms: int) -> None:
        """A folded usage batch made durable, in order, then acknowledged.

        Deltas (with their org sums) and then the progress record that says
        "applied up to offset X" are durable before org deltas go out, and all
        of it before the batch's events are acked (Faust commits only acked
        offsets). A crash before the org deltas are delivered re-sends them
        from the stored deltas on restart (UserState.get); org buckets skip
        (source partition, offset) tags they applied.
        """
        writer.send_many(users.topic, user_records)
        await flush_changelog()
        writer.send_many(progress.topic, progress_records)
        await flush_changelog()
        futures = [
            await p.org_deltas.send(key=m["org"].encode(), partition=partition_for(m["org"], settings.partitions),
                                    value=m)
            for m in messages
        ]
        if futures:
            await asyncio.gather(*futures)
        for event in batch:
            await stream.ack(event)
        org_timing["org_messages_sent"] += len(messages)
        ended_ms = int(time.time() * 1000)
        for part, offset in done.items():
            timed = timing.setdefault(part, {"batch_started_ms": started_ms})
            timed["batch_ended_ms"] = ended_ms
            timed["batch_ended_offset"] = offset

    @p.app.agent(p.usage, name="usage-windows")
    @exit_on_crash
    async def usage_windows(stream: Any) -> None:
        # Pipelined: while one batch's writes wait for the broker's
        # acknowledgements, the next batch is taken and folded (its changes
        # only go to memory). Its writes go out after the previous batch's are
        # durable, so the order of writes is the same as one batch at a time;
        # events are acked (hence committed) only when their batch is durable.
        durable = InOrder("a usage batch's writes", stopping=lambda: bool(p.app.should_stop))
        try:
            async for batch in stream.noack_take(settings.processor_batch_messages, settings.processor_batch_s):
                started_ms = int(time.time() * 1000)
                quiet_collector.once()
                # No reference cycles are made here; without the collector, the
                # batch's short-lived buckets are not traversed again and again.
                gc.disable()
                done: dict[int, int] = {}  # partition -> last source offset applied by this batch
                try:
                    messages = fold_batch(batch, done)
                    user_records = users.take_records()
                    progress_records = progress.take_records()
                finally:
                    gc.enable()
                free_memory.maybe()
                await durable.then(make_durable(stream, batch, user_records, progress_records, messages, done,
                                                started_ms))
        finally:
            # A stop lets the batch in flight finish (its events are acked, so
            # committed); one cut short is replayed after the restart anyway.
            await durable.drain(STOP_WAIT_S)

    @p.app.agent(p.org_deltas, name="org-windows")
    @exit_on_crash
    async def org_windows(stream: Any) -> None:
        # Org deltas come in bursts (one per usage batch): a short wait to fill
        # a batch applies them soon after they arrive.
        async for batch in stream.take_events(settings.processor_batch_messages, settings.org_batch_s):
            fold = windows.OrgFold(orgs)
            progs: dict[int, tuple[dict[str, int], int]] = {}
            gc.disable()  # as in usage_windows
            try:
                for event in batch:
                    part = event.message.partition
                    if part not in progs:
                        prog = _progress(org_progress, f"orgd/{part}")
                        progs[part] = (prog, prog["watermark_ms"])
                    prog = progs[part][0]
                    newest = fold.apply(part, event.value)
                    prog["watermark_ms"] = max(prog["watermark_ms"], newest)
                    prog["messages"] += 1
            finally:
                gc.enable()
            if fold.conflicts:
                log.error("org deltas: %d entries partly applied before were skipped", fold.conflicts)
            for bucket_key, (part, bucket) in fold.buckets.items():
                orgs.set(part, bucket_key, bucket)
            for part, bucket_key, minute in fold.new:
                org_expiry.add(part, bucket_key, minute)
            for part, (prog, before) in progs.items():
                org_expiry.run(part, prog["watermark_ms"], before)
                org_progress.set(part, f"orgd/{part}", prog)
            orgs.flush()
            org_progress.flush()
            await flush_changelog()
            org_timing["org_messages_applied"] += len(batch)
            org_timing["org_batch_ended_ms"] = int(time.time() * 1000)

    register_stats(p.app, settings, p.progress, "processor", key_prefix="usage/",
                   extra=lambda key: {**timing.get(int(key.rsplit("/", 1)[1]), {}), **org_timing})
    return user_state


def register_stats(app: Any, settings: Settings, progress: Any, stage: str, key_prefix: str = "",
                   extra: Callable[[str], dict[str, int]] | None = None) -> None:
    """A timer publishing a stage's cumulative per-partition progress to the
    stats topic (key "<stage>/<progress key>"), for GET /v1/pipeline.
    ``extra(progress key)``: more fields for the record (not stored state)."""
    stats_topic = app.topic(settings.stats_topic, value_serializer="raw", key_serializer="raw")
    instance = f"{socket.gethostname()}:{os.getpid()}"

    @app.timer(settings.stats_interval_s)
    async def publish_stats() -> None:
        # Every record of one tick is made before the first send (an await):
        # they show the process at one instant, "updated_ms".
        now = int(time.time() * 1000)
        records = []
        for key, prog in list(progress.data.items()):
            if prog and key.startswith(key_prefix):
                value = {**prog, "stage": stage, "instance": instance, "updated_ms": now}
                if extra is not None:
                    value.update(extra(key))
                records.append((f"{stage}/{key}".encode(), orjson.dumps(value)))
        for key_bytes, value_bytes in records:
            await stats_topic.send(key=key_bytes, value=value_bytes)


def exit_for_restart(what: str, exc: BaseException) -> NoReturn:
    """Log why and exit, so that the supervisor restarts the stage and state
    comes back from changelogs."""
    log.error("%s crashed; exiting so that the stage is restarted", what, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class InOrder:
    """Background tasks run one after the other; a failure restarts the stage.

    ``then(work)`` waits for the previous task, then starts ``work`` and
    returns: the caller goes on (folding the next batch) while it runs. A
    failure exits the process (as a crashed agent does), except while the
    app is stopping, when it is only logged: what it did not finish is not
    acked, so it is replayed after the restart.
    """

    def __init__(self, what: str, stopping: Callable[[], bool]) -> None:
        self.what = what
        self.stopping = stopping
        self.last: asyncio.Future[None] | None = None

    async def then(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            if self.last is not None:
                await asyncio.shield(self.last)  # a cancelled caller must not cancel the writes
        except BaseException:
            work.close()  # never started: its batch is not acked, so it is replayed
            raise
        self.last = asyncio.ensure_future(work)
        self.last.add_done_callback(self._check)

    async def drain(self, timeout_s: float) -> None:
        if self.last is not None and not self.last.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.last), timeout_s)

    def _check(self, task: asyncio.Future[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.stopping():
            log.warning("%s failed while stopping (replayed after the restart): %r", self.what, exc)
            return
        exit_for_restart(self.what, exc)


def exit_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A crashed Faust agent leaves its worker running but idle; exit instead,
    so the supervisor restarts the stage and state comes back from changelogs."""

    @functools.wraps(agent)
    async def guarded(stream: Any) -> None:
        try:
            await agent(stream)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            exit_for_restart(f"agent {agent.__name__}", exc)

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


