"""The leaderboard: SQL over usage_hour, then ranks, bands and badges (pure).

Suspected bots (user_risk.bot_score >= 0.5) are left out before anything is
ranked, so ranks, bands and badges are all computed on the filtered data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

WINDOWS: Final = {"7d": timedelta(days=7), "30d": timedelta(days=30)}
METRICS: Final = ("tokens", "cost", "active_days", "tokens_per_active_day")
BOT_SCORE: Final = 0.5
STEADY_DAYS: Final = 20  # of the 30 days ending at `to`
CONNOISSEUR_MODELS: Final = 5
LEGEND_FRACTION: Final = 0.01
BANDS: Final = ((0.01, "top 1%"), (0.05, "top 5%"), (0.10, "top 10%"), (0.25, "top 25%"), (0.50, "top 50%"),
                (1.0, "bottom 50%"))


@dataclass
class Row:
    user_id: str
    tokens: int
    cost_nanos: int
    active_days: int
    models: int
    active_days_30: int
    badges: list[str] = field(default_factory=list)

    @property
    def tokens_per_active_day(self) -> float:
        return self.tokens / self.active_days if self.active_days else 0.0

    def value(self, metric: str) -> float:
        return {"tokens": self.tokens, "cost": self.cost_nanos, "active_days": self.active_days,
                "tokens_per_active_day": self.tokens_per_active_day}[metric]


def build_sql(end: datetime, window: str, org_id: str | None) -> tuple[str, dict[str, Any]]:
    """Per user: window sums plus 30-day activity (for the Steady badge)."""
    params: dict[str, Any] = {"start": end - WINDOWS[window], "start30": end - timedelta(days=30), "end": end,
                              "bot": BOT_SCORE}
    org = "org_prefix = {org:String}" if org_id else "org_depth = 1"
    if org_id:
        params["org"] = org_id
    in_window = "t >= {start:DateTime('UTC')}"
    sql = ("SELECT user_id, "
           f"sumIf(total_tokens, {in_window}), sumIf(cost_nanos, {in_window}), "
           f"uniqExactIf(toDate(t), {in_window}), uniqExactIf(model, {in_window}), uniqExact(toDate(t)) "
           "FROM usage_hour WHERE t >= least({start:DateTime('UTC')}, {start30:DateTime('UTC')}) "
           f"AND t < {{end:DateTime('UTC')}} AND {org} "
           "AND user_id NOT IN (SELECT user_id FROM user_risk FINAL WHERE bot_score >= {bot:Float64}) "
           f"GROUP BY user_id HAVING sumIf(requests, {in_window}) > 0")
    return sql, params


def rank(rows: list[tuple[Any, ...]], metric: str) -> list[tuple[int, Row]]:
    """(rank, row) best first; equal values share a rank (1, 2, 2, 4)."""
    items = [Row(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]
    _award_badges(items)
    items.sort(key=lambda r: (-r.value(metric), r.user_id))
    ranked: list[tuple[int, Row]] = []
    for i, row in enumerate(items):
        same = ranked and ranked[-1][1].value(metric) == row.value(metric)
        ranked.append((ranked[-1][0] if same else i + 1, row))
    return ranked


def band(position: int, total: int) -> str:
    share = position / total if total else 1.0
    return next(label for limit, label in BANDS if share <= limit)


def _award_badges(items: list[Row]) -> None:
    legends = max(1, math.ceil(len(items) * LEGEND_FRACTION))
    by_tokens = sorted(items, key=lambda r: -r.tokens)
    cutoff = by_tokens[legends - 1].tokens if by_tokens else 0
    for row in items:
        if row.tokens > 0 and row.tokens >= cutoff:
            row.badges.append("Token Legend")
        if row.models >= CONNOISSEUR_MODELS:
            row.badges.append("Model Connoisseur")
        if row.active_days_30 >= STEADY_DAYS:
            row.badges.append("Steady")
