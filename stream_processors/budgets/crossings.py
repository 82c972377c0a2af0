"""When the cumulative spend of a budget period crossed each threshold (pure, event time).

Periods are UTC calendar days or months of event time. A crossing is dated by
the end of the minute in which the running sum of that period's minute
buckets first reached ``threshold x limit``: a replay of the same events gives
the same crossings, and so the same alert ids and windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from stream_processors.budgets.config import NANOS_PER_USD, Budget

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Crossing:
    threshold: float
    period_start_ms: int
    at_ms: int  # end of the minute in which the threshold was reached
    spent_nanos: int  # the period's spend up to that minute


def period_bounds(ts_ms: int, period: str) -> tuple[int, int]:
    """[start, end) in ms of the UTC calendar day or month that holds ``ts_ms``."""
    t = datetime.fromtimestamp(ts_ms / 1000, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return _ms(start), _ms(start) + 86_400_000
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return _ms(start), _ms(end)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def crossings(budget: Budget, minutes: Iterable[tuple[int, int]]) -> list[Crossing]:
    """Threshold crossings within one period, from its (minute start ms, cost nanos) buckets.

    Buckets may come in any order and the same minute may appear more than once
    (roll-up rows not merged yet): they are summed.
    """
    per_minute: dict[int, int] = {}
    for minute, cost in minutes:
        per_minute[minute] = per_minute.get(minute, 0) + int(cost)
    if not per_minute:
        return []
    start, _ = period_bounds(min(per_minute), budget.period)
    limit = budget.limit_nanos
    pending = list(budget.thresholds)
    out: list[Crossing] = []
    spent = 0
    for minute in sorted(per_minute):
        spent += per_minute[minute]
        while pending and spent >= pending[0] * limit:
            out.append(Crossing(pending.pop(0), start, minute + MINUTE_MS, spent))
        if not pending:
            break
    return out


def alert_id(budget: Budget, period_start_ms: int, threshold: float) -> str:
    """Stable per (budget, period, threshold): a re-check or a replay sends the same id."""
    raw = f"budget|{budget.name}|{period_start_ms}|{threshold:g}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def severity(threshold: float) -> str:
    return "high" if threshold >= 1.0 else "medium" if threshold >= 0.8 else "low"


def reason(budget: Budget, crossing: Crossing) -> str:
    when = datetime.fromtimestamp(crossing.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    period = "daily" if budget.period == "day" else "monthly"
    return (f"{budget.describe()} spent ${crossing.spent_nanos / NANOS_PER_USD:,.2f} of its "
            f"${budget.limit_usd:,.2f} {period} budget '{budget.name}' "
            f"({crossing.spent_nanos / budget.limit_nanos:.0%}; threshold {crossing.threshold:.0%}) by {when}")
