"""Tokenmaxxing and spike detection: the entry point the stream processor calls.

``Detector.observe`` takes one wire-form event and returns the alerts it triggers.
Per-user state is a plain dict of small objects that serialise to bytes, so the
Faust wiring can keep it in a changelogged table (``state_bytes``/``load_state``).
The detector never looks at user ids or labels, only at behaviour.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from stream_processors.detection import alerts
from stream_processors.detection.alerts import SPIKE, TOKENMAXXING, Alert, Cooldown
from stream_processors.detection.features import DAY_MS, HOUR_MS, UserFeatures
from stream_processors.detection.peers import PartitionPeers, PeerReference
from stream_processors.detection.scoring import score
from tokentrail.envelope import partition_for

__all__ = ["Alert", "Detector", "PartitionPeers", "PeerReference", "UserFeatures", "score"]

SCORE_EVERY = 16  # events between re-scores: scoring costs ~20x an update
SCORE_EVERY_MS = 5 * 60_000  # ... or this much event time, for slow users
_HEAD_V1 = struct.Struct("<qqqH")  # cooldowns, last score time, org id length
_HEAD = struct.Struct("<qqqHH")  # ... and events since the last score: a restored user scores when it would have


class _User:
    __slots__ = ("cooldown", "features", "org_id", "partition", "scored_ts", "since_score")

    def __init__(self, org_id: str, partition: int, features: UserFeatures | None = None,
                 cooldown: Cooldown | None = None) -> None:
        self.features = features or UserFeatures()
        self.org_id = org_id
        self.partition = partition  # of the usage topic: whose peer figures the user feeds and reads
        self.cooldown = cooldown or Cooldown()
        self.scored_ts = 0
        self.since_score = 0


class Detector:
    """Online detector over wire-form events (``tokentrail.events.validate`` output).

    ``partitions``: of the usage topic. Peer figures are kept per partition (see
    peers.py), so the offline library gives the pipeline's answers only with the
    pipeline's partition count.
    """

    def __init__(self, idle_days: float = 14.0, evict_every: int = 100_000, partitions: int = 4) -> None:
        self.users: dict[str, _User] = {}
        self.idle_ms = int(idle_days * DAY_MS)
        self.evict_every = evict_every
        self.partitions = partitions
        self.peers: dict[int, PartitionPeers] = {}
        self.contributed: tuple[str, float] | None = None  # (org, tokens) the last observe added to peers
        self.scored: tuple[float, list[str]] | None = None  # (score, reasons) if the last observe scored
        # Per partition: what idleness is judged against. A process's overall highest
        # event time depends on which partitions it holds and when it restarted; a
        # partition's own does not.
        self.part_now: dict[int, int] = {}
        self._seen = 0

    def advance(self, partition: int, ts: int) -> None:
        """The partition's event time: its highest event time so far."""
        if ts > self.part_now.get(partition, 0):
            self.part_now[partition] = ts

    def peers_of(self, partition: int) -> PartitionPeers:
        peers = self.peers.get(partition)
        if peers is None:
            peers = self.peers[partition] = PartitionPeers()
        return peers

    def peer_reference(self, user: _User) -> PeerReference | None:
        peers = self.peers.get(user.partition)
        return peers.reference(user.org_id) if peers is not None else None

    def observe(self, event: Mapping[str, Any]) -> list[Alert]:
        ts: int = event["ts_ms"]
        user_id: str = event["user_id"]
        user = self.users.get(user_id)
        if user is None or ts - user.features.last_ts > self.idle_ms:
            # New, or back after the idle horizon: starts afresh, decided by the user's own
            # events alone, so eviction, pruning and restarts cannot change what it becomes.
            user = self.users[user_id] = _User(event["org_id"], partition_for(user_id, self.partitions))
        uncached = event["input_tokens"] + event.get("cache_write_tokens", 0)
        cache_read = event.get("cache_read_tokens", 0)
        tokens = uncached + cache_read + event["output_tokens"]
        f = user.features
        f.update(ts, tokens, uncached, cache_read,
                 event.get("session_id") or "", event.get("prompt_hash") or "",
                 event.get("client") or "", event["model"])
        self.contributed = self.scored = None
        if f.closed_tokens:  # a day of this user ended: one user-day for its org's peers
            self.contribute(user.partition, user.org_id, f.closed_tokens)
            f.closed_tokens = 0.0
        user.org_id = event["org_id"]
        self.advance(user.partition, ts)
        self._seen += 1
        if self._seen % self.evict_every == 0:
            self.evict()
        found: list[Alert] = []
        ratio = alerts.spike_ratio(f.hour_tokens, f.hour_base, f.last_ts - f.first_ts)
        if ratio and user.cooldown.ready(SPIKE, f.last_ts):
            found.append(self._spike(user_id, user, ratio))
        user.since_score += 1
        if user.since_score >= SCORE_EVERY or f.last_ts - user.scored_ts >= SCORE_EVERY_MS:
            user.since_score, user.scored_ts = 0, f.last_ts
            value, reasons = score(f, peers=self.peer_reference(user))
            self.scored = (value, reasons)
            if value >= alerts.THRESHOLD and user.cooldown.ready(TOKENMAXXING, f.last_ts):
                user.cooldown.fire(TOKENMAXXING, f.last_ts)
                window = (max(f.first_ts, f.last_ts - DAY_MS), f.last_ts)
                found.append(alerts.make(user_id, user.org_id, TOKENMAXXING, value, value, window, reasons))
        return found

    def _spike(self, user_id: str, user: _User, ratio: float) -> Alert:
        f = user.features
        user.cooldown.fire(SPIKE, f.last_ts)
        start = f.last_ts // HOUR_MS * HOUR_MS
        reason = (f"{f.hour_tokens:,.0f} tokens this hour, {ratio:.0f}× the usual active hour "
                  f"({f.hour_base:,.0f})")
        value, _ = score(f, peers=self.peer_reference(user))
        return alerts.make(user_id, user.org_id, SPIKE, ratio, value, (start, f.last_ts), [reason])

    def contribute(self, partition: int, org_id: str, tokens: float) -> None:
        """One user-day to an org's peer figures (also how a replay re-applies one)."""
        self.peers_of(partition).add(org_id, tokens)
        self.contributed = (org_id, tokens)

    def risk(self, user_id: str) -> tuple[float, list[str]]:
        user = self.users.get(user_id)
        return score(user.features, peers=self.peer_reference(user)) if user else (0.0, [])

    def evict(self) -> int:
        """Forget users idle for longer than ``idle_days`` of their partition's event time
        (memory only: such a user would start afresh on its next event anyway)."""
        part_now = self.part_now
        stale = [uid for uid, u in self.users.items()
                 if u.features.last_ts < part_now.get(u.partition, 0) - self.idle_ms]
        for uid in stale:
            del self.users[uid]
        return len(stale)

    def state_bytes(self, user_id: str) -> bytes:
        user = self.users[user_id]
        org = user.org_id.encode()
        last = user.cooldown.last
        return _HEAD.pack(last.get(TOKENMAXXING, -1), last.get(SPIKE, -1), user.scored_ts, len(org),
                          min(user.since_score, 0xFFFF)) + org + user.features.to_bytes()

    def load_state(self, user_id: str, data: bytes, wide: bool = True) -> None:
        """``wide=False``: the layout written before restored states were exact."""
        if wide:
            tmx, spike, scored, org_len, since_score = _HEAD.unpack_from(data, 0)
            pos = _HEAD.size
        else:
            tmx, spike, scored, org_len = _HEAD_V1.unpack_from(data, 0)
            pos, since_score = _HEAD_V1.size, 0
        org = data[pos:pos + org_len].decode()
        cooldown = Cooldown({k: v for k, v in ((TOKENMAXXING, tmx), (SPIKE, spike)) if v >= 0})
        user = _User(org, partition_for(user_id, self.partitions), UserFeatures.from_bytes(data[pos + org_len:], wide),
                     cooldown)
        user.scored_ts, user.since_score = scored, since_score
        self.users[user_id] = user
