"""Event-time minute windows per user and per org: the pure part of the processors.

User windows are kept as *deltas*. Per batch and source partition, the events
counted in each minute of event time become ONE changelog record (a delta),
keyed by (partition, minute, first and last source offset of the batch), whose
value is ``[[{user_id: bucket}, ...], {org_id: sums}]``; a user bucket is ``N_SUMS``
sums followed by the event ids it counted. The user dicts are *sealed* chunks:
``fold`` serializes its pending buckets every ``SEAL_EVENTS`` events, while they
are still in the CPU cache, so a user may have a bucket in several chunks of a
record. A user-minute window is the sum of its minute's deltas
(``merge_deltas``). So a changelog record costs a few hundred events, not one,
and a record is never rewritten: state grows by exactly the new events.

Re-sent events (same ``event_id``, hence same user, timestamp and minute) are
counted once per (user, minute): ``UserWindows`` keeps, per live minute, the ids
counted in it (rebuilt from the stored deltas after a restart), so a batch
re-processed after a crash finds its events already counted. A delta key is
never written twice with different contents: a re-processed batch with the same
offset range finds every event of a written delta already counted.

Org windows are fed by *org deltas*: per batch, the sums of the new events per
(org prefix, minute), tagged with the source partitions and offsets. Deltas
are re-keyed by org (a repartition), and an org minute bucket remembers the
last source offset it applied per source partition, so a re-sent delta is
skipped. A changelog *record* holds the minute buckets of one org prefix and
one hour (``ORG_RECORD_MINUTES``): a batch catching up on hours of events then
writes one record per org prefix and hour, not 60.

Windows are kept for ``retention`` of event time behind the partition's
watermark (the largest event time seen); an org-window record goes when the
last minute of its hour does, so up to 59 minutes later. An event older than
that is *late*: it is not added to live windows (they have been expired) but
is counted, and the sink stores it in history like any other event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

import orjson

from tokentrail.events import org_prefixes

try:  # the C fold, built from _fold.c at install time when a C compiler is there
    from stream_processors import _fold as _fold_c  # type: ignore[attr-defined]
except ImportError:
    _fold_c = None
USE_C_FOLD = True  # tests turn it off to run the reference


def _in_c() -> Any:
    """The C module when it was built and is in use, else None (run the Python reference)."""
    return _fold_c if USE_C_FOLD else None

MINUTE_MS = 60_000
# Bucket layout: sums first, then (user buckets only) the counted event ids.
SUM_FIELDS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
              "total_tokens", "cost_nanos")
N_SUMS = len(SUM_FIELDS)
SEP = "\x1f"  # unit separator: cannot clash with anything sensible in an id
MAX_CANON_USERS = 1 << 17
SEAL_EVENTS = 2048  # events folded between two seals of the pending user buckets

Sums = list[int]
PerMinuteOrgs = dict[int, dict[str, Sums]]  # minute -> org id -> sums
OrgSums = dict[str, dict[int, list[int]]]  # org prefix -> minute -> [minute, *sums, sources]
# {"org": prefix, "tags": [partition, offset, ...], "entries": [[minute, *sums, sources]]}
OrgMessage = dict[str, Any]


ORG_RECORD_MINUTES = 60  # minutes per org-window record


def org_key(org: str, minute: int) -> str:
    """The key of the org-window record that holds this minute: ``o, org, its first minute``."""
    return f"o{SEP}{org}{SEP}{minute - minute % ORG_RECORD_MINUTES}"


def org_record_last_minute(key: str) -> int:
    return key_minute(key) + ORG_RECORD_MINUTES - 1


def org_minutes(records: Mapping[str, list[Any]]) -> dict[tuple[str, int], Sums]:
    """Org windows from org-window records: (org prefix, minute) -> sums."""
    out: dict[tuple[str, int], Sums] = {}
    for key, slots in records.items():
        _kind, org, first = key.split(SEP)
        for i, bucket in enumerate(slots):
            if bucket is not None:
                out[(org, int(first) + i)] = bucket[:N_SUMS]
    return out


def key_minute(key: str) -> int:
    return int(key.rsplit(SEP, 1)[1])


def delta_key(partition: int, minute: int, first_offset: int, last_offset: int) -> str:
    return f"{delta_prefix(partition)}{minute}{SEP}{first_offset}-{last_offset}"


def delta_prefix(partition: int) -> str:
    return f"u{SEP}{partition}{SEP}"


def delta_minute(key: str) -> int:
    return int(key.split(SEP)[2])


def delta_last_offset(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def add_into(target: list[int], sums: list[int]) -> None:
    for i in range(N_SUMS):
        target[i] += sums[i]


class UserWindows:
    """The live user-minute windows of ONE source partition.

    In memory: per live minute, the ids counted in it (``{event_id: user_id}``;
    the rare id counted for two users goes to a side set) and the keys of its
    stored deltas; per batch, the new deltas. ``fold`` is the processors'
    per-event hot path: one envelope's wire events, in offset order.
    """

    def __init__(self, partition: int, watermark_ms: int, retention_ms: int) -> None:
        self.partition = partition
        self.watermark_ms = watermark_ms
        self.retention_ms = retention_ms
        self.seen: dict[int, dict[str, str]] = {}  # minute -> {event_id: user_id}
        self.shared_ids: dict[int, set[tuple[str, str]]] = {}  # minute -> {(user_id, event_id)} (id clashes)
        self.keys: dict[int, list[str]] = {}  # minute -> stored delta keys
        self.pending: dict[int, dict[str, list[Any]]] = {}  # not yet sealed: minute -> {user_id: bucket}
        self.sealed: dict[int, list[bytes]] = {}  # this batch: minute -> JSON {user_id: bucket} chunks
        self.unsealed = 0  # events in ``pending``
        self.pending_orgs: dict[int, dict[str, Sums]] = {}  # this batch: minute -> {org_id: sums}
        self.users: dict[str, str] = {}  # one string object per user id (memory)
        self.horizon = -(1 << 62)  # minutes below it are expired (the first expire() sweeps restored ones)
        self.offset = -1  # the last source offset whose progress was written
        self.resent = False  # org deltas re-sent on load, not yet known delivered

    def load(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild the ids and keys from stored deltas (after a restart or a rebalance)."""
        for key, value in items:
            minute = delta_minute(key)
            self.keys.setdefault(minute, []).append(key)
            seen = self.seen.setdefault(minute, {})
            for user, bucket in _user_items(orjson.loads(value)[0]):
                user = self.users.setdefault(user, user)
                for event_id in islice(bucket, N_SUMS, None):
                    if seen.setdefault(event_id, user) is not user:
                        self.shared_ids.setdefault(minute, set()).add((user, event_id))

    def fold(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, int, int]:
        """Fold one envelope's events into this batch's deltas: -> (counted, duplicates, late).

        A delta keeps sums per user (with the counted ids) and per org id as
        sent (expanded to every org prefix only when org deltas are made).
        The work is done in C (``_fold.c``) where that module was built, else
        by ``_fold_py``, the reference it is tested against.
        """
        in_c = _in_c()
        if in_c is not None and type(events) is list:
            counted, duplicates, late, self.watermark_ms = in_c.fold(
                events, self.watermark_ms, self.retention_ms, self.seen, self.pending, self.pending_orgs,
                self.users, self._shared_seen)
        else:
            counted, duplicates, late = self._fold_py(events)
        self.unsealed += counted
        if self.unsealed >= SEAL_EVENTS:
            self.seal()
        return counted, duplicates, late

    def _fold_py(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, int, int]:
        """``fold`` in Python: what ``_fold.c`` does, event for event."""
        wm = self.watermark_ms
        retention = self.retention_ms
        floor = wm - retention
        seen_by_minute = self.seen
        pending = self.pending
        pending_orgs = self.pending_orgs
        canon = self.users
        counted = duplicates = late = 0
        current = -1
        seen: dict[str, str] = {}
        users: dict[str, list[Any]] = {}
        orgs: dict[str, Sums] = {}
        for event in events:
            ts = event["ts_ms"]
            if ts > wm:
                wm = ts
                floor = wm - retention
            elif ts < floor:
                late += 1
                continue
            minute = ts // MINUTE_MS
            if minute != current:
                current = minute
                seen = seen_by_minute.get(minute) or seen_by_minute.setdefault(minute, {})
                users = pending.get(minute) or pending.setdefault(minute, {})
                orgs = pending_orgs.get(minute) or pending_orgs.setdefault(minute, {})
            event_id = event["event_id"]
            user = event["user_id"]
            prev = seen.get(event_id)
            if prev is None:
                same = canon.get(user)
                if same is None:
                    same = canon[user] = user
                seen[event_id] = same
            elif prev == user or self._shared_seen(minute, user, event_id):
                duplicates += 1
                continue
            inp = event["input_tokens"]
            out = event["output_tokens"]
            cr = event["cache_read_tokens"]
            cw = event["cache_write_tokens"]
            cost = event["cost_nanos"]
            total = inp + out + cr + cw
            acc = users.get(user)
            if acc is None:
                users[user] = [1, inp, out, cr, cw, total, cost, event_id]
            else:
                acc[0] += 1
                acc[1] += inp
                acc[2] += out
                acc[3] += cr
                acc[4] += cw
                acc[5] += total
                acc[6] += cost
                acc.append(event_id)
            org = event["org_id"]
            acc = orgs.get(org)
            if acc is None:
                orgs[org] = [1, inp, out, cr, cw, total, cost]
            else:
                acc[0] += 1
                acc[1] += inp
                acc[2] += out
                acc[3] += cr
                acc[4] += cw
                acc[5] += total
                acc[6] += cost
            counted += 1
        self.watermark_ms = wm
        return counted, duplicates, late

    def seal(self) -> None:
        """Serialize the pending user buckets now, while they are in the CPU cache
        (serializing and freeing a whole batch's buckets at its end costs ~3 times
        more), and start new ones. A delta holds one chunk per seal."""
        sealed = self.sealed
        for minute, users in self.pending.items():
            if users:
                chunks = sealed.get(minute)
                if chunks is None:
                    sealed[minute] = [orjson.dumps(users)]
                else:
                    chunks.append(orjson.dumps(users))
        self.pending = {}
        self.unsealed = 0

    def _shared_seen(self, minute: int, user: str, event_id: str) -> bool:
        """An id already counted for another user: seen for this one? (Marks it seen.)"""
        shared = self.shared_ids.setdefault(minute, set())
        if (user, event_id) in shared:
            return True
        shared.add((user, event_id))
        return False

    def expire(self) -> list[str]:
        """Forget minutes that fell out of retention; -> their stored delta keys (to delete)."""
        horizon = (self.watermark_ms - self.retention_ms) // MINUTE_MS
        if horizon <= self.horizon:
            return []
        self.horizon = horizon
        if len(self.users) > MAX_CANON_USERS:
            self.users = {}  # bounded: ids are compared by value, sharing the strings only saves memory
        gone: list[str] = []
        for minute in [m for m in self.seen.keys() | self.keys.keys() if m < horizon]:
            self.seen.pop(minute, None)
            self.shared_ids.pop(minute, None)
            self.pending.pop(minute, None)  # counted, then expired within the batch: nothing to keep
            self.sealed.pop(minute, None)
            self.pending_orgs.pop(minute, None)
            gone.extend(self.keys.pop(minute, ()))
        return gone

    def take_deltas(self, first_offset: int, last_offset: int) -> tuple[list[tuple[str, bytes]], PerMinuteOrgs]:
        """This batch's deltas as (key, value) records, and its org sums per minute;
        the batch covered these source offsets. Value: ``[[{user_id: bucket}, ...], {org_id: sums}]``,
        one user dict per seal (a user may be in several)."""
        self.seal()
        records = []
        orgs = self.pending_orgs
        for minute, chunks in self.sealed.items():
            key = delta_key(self.partition, minute, first_offset, last_offset)
            self.keys.setdefault(minute, []).append(key)
            records.append((key, b"[[" + b",".join(chunks) + b"]," + orjson.dumps(orgs[minute]) + b"]"))
        self.sealed = {}
        self.pending_orgs = {}
        return records, orgs


def merge_deltas(items: Iterable[tuple[str, bytes]]) -> dict[tuple[str, int], list[Any]]:
    """User-minute windows from stored deltas: (user_id, minute) -> [*sums, [counted ids]]."""
    out: dict[tuple[str, int], list[Any]] = {}
    for key, value in items:
        minute = delta_minute(key)
        for user, bucket in _user_items(orjson.loads(value)[0]):
            acc = out.get((user, minute))
            if acc is None:
                out[(user, minute)] = [*bucket[:N_SUMS], bucket[N_SUMS:]]
            else:
                add_into(acc, bucket)
                acc[N_SUMS].extend(bucket[N_SUMS:])
    return out


def _user_items(users: list[dict[str, list[Any]]] | dict[str, list[Any]]) -> Iterable[tuple[str, list[Any]]]:
    """A delta's (user_id, bucket) pairs; a user may come more than once (one per seal).
    A single dict is the format before sealed chunks."""
    if isinstance(users, dict):
        return users.items()
    return [item for chunk in users for item in chunk.items()]


def add_org_sums(out: OrgSums, per_minute: PerMinuteOrgs, source: int = 1) -> None:
    """Add one source batch's sums per (org id, minute) into sums per (org prefix,
    minute), as entries ``[minute, *sums, sources]``: every prefix of an org is an
    org. ``source`` is the batch's bit in ``sources``: which batches an entry sums.
    In C where ``_fold.c`` was built (``_add_org_sums_py`` is the reference)."""
    if len(_prefix_lists) > MAX_CANON_USERS:
        _prefix_lists.clear()  # bounded; they are made again on demand
    in_c = _in_c()
    if in_c is not None:
        in_c.add_org_sums(out, per_minute, source, _prefix_lists, org_prefixes)
    else:
        _add_org_sums_py(out, per_minute, source)


_prefix_lists: dict[str, list[str]] = {}  # org id -> its prefixes (org_prefixes), for both add_org_sums


def _add_org_sums_py(out: OrgSums, per_minute: PerMinuteOrgs, source: int) -> None:
    for minute, orgs in per_minute.items():
        for org_id, sums in orgs.items():
            prefixes = _prefix_lists.get(org_id)
            if prefixes is None:
                prefixes = _prefix_lists[org_id] = org_prefixes(org_id)
            for org in prefixes:
                by_minute = out.get(org)
                if by_minute is None:
                    by_minute = out[org] = {}
                entry = by_minute.get(minute)
                if entry is None:
                    by_minute[minute] = [minute, *sums, source]
                else:
                    entry[8] |= source
                    entry[1] += sums[0]
                    entry[2] += sums[1]
                    entry[3] += sums[2]
                    entry[4] += sums[3]
                    entry[5] += sums[4]
                    entry[6] += sums[5]
                    entry[7] += sums[6]


def org_messages(sums: OrgSums, tags: list[int], chunk: int = 2000) -> list[OrgMessage]:
    """Org-delta messages: per org prefix, its entries ``[minute, *sums, sources]``
    in minute order (so an org-window record's come together), with the tags
    ``[source partition, source offset, ...]`` of the source batches; bit i of
    ``sources`` is tag i (the batches an entry sums)."""
    out = []
    for org, by_minute in sums.items():
        entries = [by_minute[m] for m in sorted(by_minute)]
        for i in range(0, len(entries), chunk):
            out.append({"org": org, "tags": tags, "entries": entries[i : i + chunk]})
    return out


def resend_org_deltas(partition: int, stored: Iterable[tuple[str, bytes]], delivered: int) -> list[OrgMessage]:
    """Org deltas of stored user deltas whose batch ended after ``delivered`` (the
    source offset up to which org deltas are known delivered), with the tag they
    were first sent with, ``[partition, last offset of the batch]``: a crash may
    have cut them off. One source partition per message, so a bucket that had
    them skips them whole."""
    by_batch: dict[int, PerMinuteOrgs] = {}
    for key, value in stored:
        last = delta_last_offset(key)
        if last > delivered:
            by_batch.setdefault(last, {})[delta_minute(key)] = orjson.loads(value)[1]
    out = []
    for last in sorted(by_batch):
        sums: OrgSums = {}
        add_org_sums(sums, by_batch[last])
        out.extend(org_messages(sums, [partition, last]))
    return out


class OrgFold:
    """One batch of org-delta messages applied to org-window records.

    A record holds one slot per minute of its hour: ``None``, or the minute's
    bucket, ``N_SUMS`` sums then ``{source partition: last applied source
    offset}``. An entry sums the contributions of one or more source batches
    to one minute, each tagged (source partition, last offset of the batch). A
    bucket applies an entry when every one of its tags is newer than what it
    applied from that partition, and skips it when none is (a re-sent delta).
    A partition's tags only grow on the buckets it contributes to, so anything
    else (``conflicts``) cannot happen with the usage agent's order of writes;
    it is skipped and counted. (Per minute, not per record: a batch re-done
    after a crash with other boundaries can tag one minute of an hour with an
    offset lower than another minute's.)

    ``lookup.get(key)`` returns the stored record, which is updated in place
    (copying whole records cost more than applying the entries): the agent
    writes every record it touched to the changelog before it acks the batch,
    and a failure exits the process, whose state then comes back from the
    changelog, so no half-applied batch survives. ``buckets`` then holds the
    batch's records with the partition they belong to, ``new`` the
    (partition, key, last minute) of records not stored before.
    """

    def __init__(self, lookup: Any) -> None:
        self.lookup = lookup
        self.buckets: dict[str, tuple[int, list[Any]]] = {}
        self.new: list[tuple[int, str, int]] = []  # (partition, key, last minute of the record)
        self.conflicts = 0

    def apply(self, partition: int, message: OrgMessage) -> int:
        """Apply one org-delta message; -> the newest minute end it touched (ms), for the watermark.
        The per-entry loop runs in C where ``_fold.c`` was built (``_apply_py`` is the reference)."""
        raw_tags = message["tags"]
        # JSON object keys are strings in the changelog
        tags = [(1 << (i // 2), str(raw_tags[i]), raw_tags[i + 1]) for i in range(0, len(raw_tags), 2)]
        prefix = f"o{SEP}{message['org']}{SEP}"
        entries = message["entries"]
        in_c = _in_c()
        if in_c is not None and type(entries) is list and len(tags) <= 62:
            newest, conflicts = in_c.org_apply(entries, tags, lambda first: self._open(partition, prefix, first),
                                               ORG_RECORD_MINUTES)
            self.conflicts += conflicts
        else:
            newest = self._apply_py(partition, prefix, tags, entries)
        return (newest + 1) * MINUTE_MS - 1 if newest >= 0 else 0

    def _open(self, partition: int, prefix: str, first: int) -> list[Any]:
        """The slots of the record whose hour starts at minute ``first`` (the stored list itself)."""
        key = prefix + str(first)
        hit = self.buckets.get(key)
        if hit is not None:
            return hit[1]
        stored = self.lookup.get(key)
        if stored:
            slots = stored
        else:
            slots = [None] * ORG_RECORD_MINUTES
            self.new.append((partition, key, first + ORG_RECORD_MINUTES - 1))
        self.buckets[key] = (partition, slots)
        return slots

    def _apply_py(self, partition: int, prefix: str, tags: list[tuple[int, str, int]],
                  entries: Iterable[list[int]]) -> int:
        """``apply``'s loop in Python: what ``_fold.c`` does, entry for entry; -> the newest minute or -1."""
        by_sources: dict[int, list[tuple[str, int]]] = {}  # an entry's sources -> its (partition, offset) tags
        span = ORG_RECORD_MINUTES
        current: int | None = None
        slots: list[Any] = []
        newest = -1
        for entry in entries:
            minute = entry[0]
            first = minute - minute % span
            if first != current:
                current = first
                slots = self._open(partition, prefix, first)
            if minute > newest:
                newest = minute
            bucket = slots[minute - first]
            if bucket is None:
                bucket = slots[minute - first] = [0, 0, 0, 0, 0, 0, 0, {}]
            applied = bucket[7]
            sources = entry[8]
            mine = by_sources.get(sources)
            if mine is None:
                mine = by_sources[sources] = [(part, offset) for bit, part, offset in tags if sources & bit]
            seen = 0
            for part, offset in mine:
                if applied.get(part, -1) >= offset:
                    seen += 1
            if seen:
                if seen != len(mine):
                    self.conflicts += 1
                continue  # applied before (a re-sent delta after a crash)
            for part, offset in mine:
                applied[part] = offset
            bucket[0] += entry[1]
            bucket[1] += entry[2]
            bucket[2] += entry[3]
            bucket[3] += entry[4]
            bucket[4] += entry[5]
            bucket[5] += entry[6]
            bucket[6] += entry[7]
        return newest


class ExpiryIndex:
    """Which org-window records of each partition fall out of retention (all
    their minutes do), cheaply.

    In memory only: after a restart it is rebuilt from the restored table keys
    (``ensure_loaded``), so no extra changelog writes are needed for it.
    """

    def __init__(self) -> None:
        self._by_minute: dict[int, dict[int, set[str]]] = {}
        self._loaded: set[int] = set()

    def forget(self) -> None:
        """Drop the index (after a rebalance: records other workers made meanwhile
        are in the table, not here); each partition is indexed again from the
        table's keys when next needed."""
        self._by_minute.clear()
        self._loaded.clear()

    def ensure_loaded(self, partition: int, keys: Callable[[], Iterable[str]]) -> None:
        """Index the partition's restored keys, once (``keys`` is only called then)."""
        if partition in self._loaded:
            return
        self._loaded.add(partition)
        for key in keys():
            self.add(partition, key)

    def add(self, partition: int, key: str, last_minute: int | None = None) -> None:
        minute = org_record_last_minute(key) if last_minute is None else last_minute
        self._by_minute.setdefault(partition, {}).setdefault(minute, set()).add(key)

    def pop_expired(self, partition: int, watermark_ms: int, retention_ms: int) -> list[str]:
        minutes = self._by_minute.get(partition)
        if not minutes:
            return []
        horizon = (watermark_ms - retention_ms) // MINUTE_MS
        old = [m for m in minutes if m < horizon]
        out: list[str] = []
        for m in old:
            out.extend(minutes.pop(m))
        return out
