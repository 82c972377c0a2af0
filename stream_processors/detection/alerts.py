"""Alerts from scores and volumes: kinds, severity, and de-duplication in event time.

Alert ids are a hash of (user, kind, window_start), and window_start is derived from
event time only, so replaying the same events yields the same ids and a downstream
upsert stays idempotent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

TOKENMAXXING = "tokenmaxxing"
SPIKE = "spike"
THRESHOLD = 0.5  # CONTRACT §3: a score of 0.5 or more means suspected tokenmaxxing
COOLDOWN_MS = 6 * 3_600_000  # one alert per user and kind per six hours of event time
SPIKE_RATIO = 5.0  # hour tokens vs the user's usual active hour
SPIKE_MIN_TOKENS = 2_000_000  # below this a "spike" is noise, whatever the ratio
SPIKE_MIN_HISTORY_MS = 24 * 3_600_000


@dataclass(frozen=True)
class Alert:
    alert_id: str
    user_id: str
    org_id: str
    kind: str
    severity: str
    score: float
    window_start_ms: int
    window_end_ms: int
    reasons: tuple[str, ...] = field(default_factory=tuple)


def alert_id(user_id: str, kind: str, window_start_ms: int) -> str:
    return hashlib.sha256(f"{user_id}\x1f{kind}\x1f{window_start_ms}".encode()).hexdigest()[:32]


def severity(kind: str, value: float) -> str:
    """Score for tokenmaxxing, ratio to baseline for spikes."""
    high, medium = (0.85, 0.7) if kind == TOKENMAXXING else (20.0, 10.0)
    return "high" if value >= high else "medium" if value >= medium else "low"


def make(user_id: str, org_id: str, kind: str, value: float, score: float,
         window: tuple[int, int], reasons: list[str]) -> Alert:
    return Alert(alert_id(user_id, kind, window[0]), user_id, org_id, kind, severity(kind, value),
                 round(score, 4), window[0], window[1], tuple(reasons))


class Cooldown:
    """Last alert time per kind for one user; the only alert memory a user needs."""

    __slots__ = ("last",)

    def __init__(self, last: dict[str, int] | None = None) -> None:
        self.last: dict[str, int] = dict(last or {})

    def ready(self, kind: str, now: int) -> bool:
        previous = self.last.get(kind)
        return previous is None or now - previous >= COOLDOWN_MS

    def fire(self, kind: str, now: int) -> None:
        self.last[kind] = now


def spike_ratio(hour_tokens: float, hour_base: float, observed_ms: int) -> float:
    """How many usual hours this hour is worth; 0 when it is no spike."""
    if observed_ms < SPIKE_MIN_HISTORY_MS or hour_base <= 0 or hour_tokens < SPIKE_MIN_TOKENS:
        return 0.0
    ratio = hour_tokens / hour_base
    return ratio if ratio >= SPIKE_RATIO else 0.0
