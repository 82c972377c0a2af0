"""What the detector stage keeps per user around the pure Detector (no I/O here).

Per user, next to the Detector's own state: the hashes of the most recent event
ids (so a re-sent event is not fed twice), how many events were fed (which tells
whether the in-memory copy is the one in the changelogged table), and the last
bot score published (so risk updates go out when the score moves, not per event).
``state`` serialises all of it into one table value; ``sync`` loads it back.

Exactly once across crashes. The agent writes a batch's user states, waits for
them to be acknowledged, and only then writes the partition's progress (offset
applied, counters). Each user state carries the offset of the last envelope
applied to it, what that batch counted for the user (fed, duplicates,
alerts), and where the partition's progress stood when that batch began.
After a crash between the two writes, an envelope at or below a user's offset
is not fed again (``applied``), and ``begin`` hands back the user's counts of
the batch whose progress was lost (the progress still stands where it did when
that batch began), to be counted once; they stay owed, and are handed back
again, until a progress record written after them exists.

Peer figures (peers.py) live in the partition's progress record, so after such a
crash they are as of the previous batch, while some users' states already hold
the lost batch. Those users' events are not fed again, so the days they closed in
that batch would be missing from the peers: each user state also keeps its
last batch's contributions with their position (envelope offset, index in it),
and the agent re-applies each one at exactly that position of the replay, which
keeps every peer figure, and so every score, what it was.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_processors.detection import Alert, Detector, PartitionPeers
from stream_processors.detection.alerts import THRESHOLD

_VERSION = 3
# Version 2: version, id hashes kept, ring position, events fed, published score, last
# event time, event time of the last risk check, events since it, offset of the last
# envelope applied, and that batch's fed / duplicates / alerts of this user.
_HEAD_V2 = struct.Struct("<BHHqdqqiqiii")
# Version 3: the same up to the last event time (fed and it stay where they were); then
# the offset of the last envelope applied, that batch's fed / duplicates / alerts / risk
# updates of this user, the progress offset that covers those counts (the end of that
# batch in the partition), and how many peer contributions it made (stored after the ids).
_HEAD = struct.Struct("<BHHqdqqiiiiqH")
LEGACY = -(1 << 62)  # a version-2 state: no coverage offset, owed counts go by its offset alone
_CONTRIB = struct.Struct("<qidH")  # envelope offset, index in it, tokens, org id length (then the id)


def id_hash(event_id: str) -> int:
    # 32 bits: a false "re-sent" among 256 recent ids happens once in ~16M events,
    # and costs that one event's contribution to the features, never to usage totals.
    return zlib.crc32(event_id.encode())


@dataclass(frozen=True)
class Contribution:
    """A user-day handed to the peers, where in the partition it happened."""

    offset: int
    index: int
    org_id: str
    tokens: float


class UserMeta:
    __slots__ = (
        "batch_alerts",
        "batch_dups",
        "batch_fed",
        "batch_risk",
        "contribs",
        "covered_at",
        "fed",
        "ids",
        "last_ts",
        "offset",
        "pos",
        "published",
    )

    def __init__(self) -> None:
        self.ids = array("I")
        self.pos = 0
        self.fed = 0
        self.published = 0.0
        self.last_ts = 0
        self.offset = -1
        self.batch_fed = self.batch_dups = self.batch_alerts = 0
        self.contribs: list[Contribution] = []
        self.batch_risk = 0
        # The progress offset whose record counts the batch_* counts: the end, in the
        # partition, of the batch that last wrote this state. Below it they are owed.
        self.covered_at = -1

    def remember(self, h: int, capacity: int) -> bool:
        """Record an id hash; False when it is among the recent ones (a re-send)."""
        if h in self.ids:
            return False
        if len(self.ids) < capacity:
            self.ids.append(h)
        elif capacity:
            self.ids[self.pos] = h
            self.pos = (self.pos + 1) % capacity
        return True


@dataclass(frozen=True)
class RiskUpdate:
    user_id: str
    bot_score: float
    reasons: list[str]
    updated_ms: int  # event time of the user's latest event


@dataclass(frozen=True)
class Recount:
    """A user's counts from a batch whose partition progress was lost in a crash."""

    fed: int = 0
    duplicates: int = 0
    alerts: int = 0
    risk_updates: int = 0


NOTHING = Recount()


def stored_fed(value: bytes) -> int:
    return int(_HEAD_V2.unpack_from(value, 0)[3])  # the same place in both layouts


def stored_last_ts(value: bytes) -> int:
    """Event time of the user's latest event, read from a table value without loading it."""
    return int(_HEAD_V2.unpack_from(value, 0)[5]) if value[0] in (2, _VERSION) else 0


class DetectorStage:
    """A Detector plus the per-user bookkeeping above; fed one wire event at a time."""

    def __init__(self, recent_ids: int = 256, min_change: float = 0.05, detector: Detector | None = None,
                 partitions: int = 4) -> None:
        self.detector = detector or Detector(partitions=partitions)
        self.recent_ids = recent_ids
        self.min_change = min_change
        self.meta: dict[str, UserMeta] = {}
        self.risk_updates: list[RiskUpdate] = []
        self.peers_at: dict[int, int] = {}  # partition -> offset its in-memory peer figures are as of
        self.owed: dict[int, dict[tuple[int, int], Contribution]] = {}  # partition -> (offset, index) -> owed

    def sync_peers(self, partition: int, applied: int, stored: Mapping[str, Any] | None) -> None:
        """Make the partition's peer figures the stored ones (as of offset ``applied``),
        unless the in-memory copy is already that."""
        if self.peers_at.get(partition) != applied:
            self.detector.peers[partition] = PartitionPeers.from_json(stored)
            self.peers_at[partition] = applied
        owed = self.owed.get(partition)
        if owed:  # passed, or covered by a progress record: in the stored figures
            for key in [k for k in owed if k[0] <= applied]:
                del owed[key]

    def save_peers(self, partition: int, applied: int) -> dict[str, Any]:
        """The partition's peer figures as of offset ``applied``, for its progress record."""
        self.peers_at[partition] = applied
        return self.detector.peers_of(partition).to_json()

    def sync(self, user_id: str, stored: bytes | None) -> None:
        """Make the in-memory state of ``user_id`` the stored one, unless it already is
        (after a restart, a rebalance, or an eviction the table is the truth)."""
        meta = self.meta.get(user_id)
        if stored is None:
            if meta is not None:
                self.forget(user_id)
            return
        if meta is not None and meta.fed == stored_fed(stored) and user_id in self.detector.users:
            return
        self.load(user_id, stored)

    def begin(self, user_id: str, stored: bytes | None, applied: int, partition: int = 0) -> Recount:
        """First touch of ``user_id`` in a batch whose partition progress is at offset ``applied``.

        Syncs with the table, and returns the user's counts that no progress record
        covers yet (the batch that counted them ended past ``applied``), and queues the
        user's peer contributions past ``applied`` to be re-applied in place.
        """
        self.sync(user_id, stored)
        meta = self.meta.get(user_id)
        if meta is None:
            return NOTHING
        # The batch_* counts are owed while the progress record that covers them is missing:
        # the partition's progress stops short of the end of the batch that counted them.
        owed = meta.offset > applied if meta.covered_at == LEGACY else meta.covered_at > applied
        # The partition's peer figures hold exactly the contributions at or below its
        # progress offset; the user's later ones are owed until a progress record covers them.
        meta.contribs = [c for c in meta.contribs if c.offset > applied]
        if meta.contribs:
            self.owed.setdefault(partition, {}).update(((c.offset, c.index), c) for c in meta.contribs)
        if owed:
            # Kept, and added to by this batch: a second crash before this batch's progress
            # is written must hand them back again.
            return Recount(meta.batch_fed, meta.batch_dups, meta.batch_alerts, meta.batch_risk)
        meta.batch_fed = meta.batch_dups = meta.batch_alerts = meta.batch_risk = 0
        return NOTHING

    def owed_contribution(self, partition: int, offset: int, index: int) -> Contribution | None:
        """The contribution a skipped event (the ``index``-th of the envelope at ``offset``)
        made before a crash, if any: to be applied again at exactly this place."""
        owed = self.owed.get(partition)
        return owed.pop((offset, index), None) if owed else None

    def applied(self, user_id: str, offset: int) -> bool:
        """True when the envelope at ``offset`` was applied to this user before (a replay)."""
        meta = self.meta.get(user_id)
        return meta is not None and offset <= meta.offset

    def done(self, user_ids: set[str], offset: int) -> None:
        """The envelope at ``offset`` is applied to these users."""
        for user_id in user_ids:
            meta = self.meta.get(user_id)
            if meta is not None:
                meta.offset = offset

    def count_alerts(self, user_id: str, n: int) -> None:
        meta = self.meta.get(user_id)
        if meta is not None:
            meta.batch_alerts += n


    def load(self, user_id: str, value: bytes) -> None:
        version = value[0]
        if version == _VERSION:
            head = _HEAD.unpack_from(value, 0)
            (_, n, pos, fed, published, last_ts, offset, batch_fed, batch_dups, batch_alerts, batch_risk,
             covered_at, n_contribs) = head
            start = _HEAD.size
        elif version == 2:  # written before peer figures existed: no contributions
            head = _HEAD_V2.unpack_from(value, 0)
            (_, n, pos, fed, published, last_ts, _, _, offset, batch_fed, batch_dups, batch_alerts) = head
            start, batch_risk, covered_at, n_contribs = _HEAD_V2.size, 0, LEGACY, 0
        else:
            self.forget(user_id)  # unknown layout
            return
        # No idle check here: a user back after the idle horizon starts afresh on its own
        # next event (Detector.observe), whenever and wherever its state was loaded.
        meta = UserMeta()
        meta.ids = array("I", value[start:start + 4 * n])
        meta.pos, meta.fed, meta.published, meta.last_ts = pos, fed, published, last_ts
        meta.offset, meta.batch_fed, meta.batch_dups, meta.batch_alerts = offset, batch_fed, batch_dups, batch_alerts
        meta.batch_risk, meta.covered_at = batch_risk, covered_at
        at = start + 4 * n
        for _ in range(n_contribs):
            c_offset, index, tokens, org_len = _CONTRIB.unpack_from(value, at)
            at += _CONTRIB.size
            meta.contribs.append(Contribution(c_offset, index, value[at:at + org_len].decode(), tokens))
            at += org_len
        self.meta[user_id] = meta
        self.detector.load_state(user_id, value[at:], wide=version == _VERSION)

    def forget(self, user_id: str) -> None:
        self.meta.pop(user_id, None)
        self.detector.users.pop(user_id, None)

    def observe(self, event: Mapping[str, Any], offset: int = -1, index: int = 0) -> list[Alert] | None:
        """Feed one event (the ``index``-th of the envelope at ``offset``); None when it
        is a re-send of a recent event (not fed)."""
        user_id = event["user_id"]
        meta = self.meta.get(user_id)
        if meta is None:
            meta = self.meta[user_id] = UserMeta()
        if not meta.remember(id_hash(event["event_id"]), self.recent_ids):
            meta.batch_dups += 1
            return None
        meta.fed += 1
        meta.batch_fed += 1
        meta.last_ts = max(meta.last_ts, event["ts_ms"])
        found = self.detector.observe(event)
        if self.detector.contributed is not None:
            org_id, tokens = self.detector.contributed
            meta.contribs.append(Contribution(offset, index, org_id, tokens))
        if self.detector.scored is not None:
            self._risk_update(user_id, meta, *self.detector.scored)
        return found

    def _risk_update(self, user_id: str, meta: UserMeta, value: float, reasons: list[str]) -> None:
        """At each of the Detector's scorings (every 16 events or 5 minutes of the user's
        event time): a risk update when the score moved by ``min_change`` or crossed the
        threshold. Decided per event, so batch sizes and replays change nothing."""
        crossed = (value >= THRESHOLD) != (meta.published >= THRESHOLD)
        if not crossed and abs(value - meta.published) < self.min_change:
            return
        meta.published = value
        meta.batch_risk += 1
        self.risk_updates.append(RiskUpdate(user_id, round(value, 4), reasons, meta.last_ts))

    def take_risk_updates(self) -> list[RiskUpdate]:
        """The risk updates made since the last call, in the order they were made."""
        updates, self.risk_updates = self.risk_updates, []
        return updates

    def state(self, user_id: str, covered_at: int) -> bytes | None:
        """The table value of ``user_id`` at the end of a batch whose progress record will
        be at offset ``covered_at``; None when the Detector has forgotten the user."""
        meta = self.meta.get(user_id)
        if meta is None or user_id not in self.detector.users:
            self.meta.pop(user_id, None)
            return None
        meta.covered_at = covered_at
        contribs = meta.contribs  # at most one per user and day of event time in the batch
        head = _HEAD.pack(_VERSION, len(meta.ids), meta.pos, meta.fed, meta.published, meta.last_ts,
                          meta.offset, meta.batch_fed, meta.batch_dups, meta.batch_alerts, meta.batch_risk,
                          meta.covered_at, len(contribs))
        tail = b"".join(_CONTRIB.pack(c.offset, c.index, c.tokens, len(org := c.org_id.encode())) + org
                        for c in contribs)
        return head + meta.ids.tobytes() + tail + self.detector.state_bytes(user_id)

    def idle(self, stored: Mapping[str, bytes], now_ms: int) -> list[str]:
        """Users of ``stored`` (one partition's table values) idle past the Detector's horizon.

        The agent deletes them from the table (a tombstone each, so the compacted
        changelog forgets them too); their in-memory copies go now.
        """
        cutoff = now_ms - self.detector.idle_ms
        stale = [user_id for user_id, value in stored.items() if stored_last_ts(value) < cutoff]
        for user_id in stale:
            self.forget(user_id)
        return stale
