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
from stream_processors.detection.scoring import score

__all__ = ["Alert", "Detector", "UserFeatures", "score"]

SCORE_EVERY = 16  # events between re-scores: scoring costs ~20x an update
SCORE_EVERY_MS = 5 * 60_000  # ... or this much event time, for slow users
_HEAD = struct.Struct("<qqqH")


class _User:
    __slots__ = ("cooldown", "features", "org_id", "scored_ts", "since_score")

    def __init__(self, org_id: str, features: UserFeatures | None = None,
                 cooldown: Cooldown | None = None) -> None:
        self.features = features or UserFeatures()
        self.org_id = org_id
        self.cooldown = cooldown or Cooldown()
        self.scored_ts = 0
        self.since_score = 0


class Detector:
    """Online detector over wire-form events (``tokentrail.events.validate`` output)."""

    def __init__(self, idle_days: float = 14.0, evict_every: int = 100_000) -> None:
        self.users: dict[str, _User] = {}
        self.idle_ms = int(idle_days * DAY_MS)
        self.evict_every = evict_every
        self.now = 0  # highest event time seen
        self._seen = 0

    def observe(self, event: Mapping[str, Any]) -> list[Alert]:
        ts: int = event["ts_ms"]
        user_id: str = event["user_id"]
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = _User(event["org_id"])
        user.org_id = event["org_id"]
        uncached = event["input_tokens"] + event.get("cache_write_tokens", 0)
        cache_read = event.get("cache_read_tokens", 0)
        tokens = uncached + cache_read + event["output_tokens"]
        f = user.features
        f.update(ts, tokens, uncached, cache_read,
                 event.get("session_id") or "", event.get("prompt_hash") or "",
                 event.get("client") or "", event["model"])
        if ts > self.now:
            self.now = ts
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
            value, reasons = score(f)
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
        value, _ = score(f)
        return alerts.make(user_id, user.org_id, SPIKE, ratio, value, (start, f.last_ts), [reason])

    def risk(self, user_id: str) -> tuple[float, list[str]]:
        user = self.users.get(user_id)
        return score(user.features) if user else (0.0, [])

    def evict(self) -> int:
        """Forget users idle for longer than ``idle_days`` of event time."""
        cutoff = self.now - self.idle_ms
        stale = [uid for uid, u in self.users.items() if u.features.last_ts < cutoff]
        for uid in stale:
            del self.users[uid]
        return len(stale)

    def state_bytes(self, user_id: str) -> bytes:
        user = self.users[user_id]
        org = user.org_id.encode()
        last = user.cooldown.last
        return _HEAD.pack(last.get(TOKENMAXXING, -1), last.get(SPIKE, -1), user.scored_ts, len(org)) + (
            org + user.features.to_bytes())

    def load_state(self, user_id: str, data: bytes) -> None:
        tmx, spike, scored, org_len = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        org = data[pos:pos + org_len].decode()
        cooldown = Cooldown({k: v for k, v in ((TOKENMAXXING, tmx), (SPIKE, spike)) if v >= 0})
        user = _User(org, UserFeatures.from_bytes(data[pos + org_len:]), cooldown)
        user.scored_ts = scored
        self.users[user_id] = user
        self.now = max(self.now, user.features.last_ts)
