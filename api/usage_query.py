"""GET /v1/usage as SQL over the roll-up tables: pure, so it is unit-tested.

Every user string reaches ClickHouse as a bound parameter, never as SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

GRANULARITIES: Final = {"minute": 60, "hour": 3600, "day": 86400}
# What group_by names map to (column in the roll-up, key in the answer).
GROUP_COLUMNS: Final = {"user": ("user_id", "user_id"), "org": ("org_id", "org_id"),
                        "model": ("model", "model"), "client": ("client", "client")}
SUMS: Final = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
               "total_tokens", "cost_nanos")
MAX_POINTS: Final = 100_000
MAX_RANGE: Final = {"minute": timedelta(days=31), "hour": timedelta(days=3 * 366), "day": timedelta(days=20 * 366)}


class QueryError(ValueError):
    """The query cannot be answered as asked (a 400 with this message)."""


@dataclass
class UsageQuery:
    start: datetime
    end: datetime
    granularity: str = "hour"
    group_by: list[str] = field(default_factory=list)
    user_id: str | None = None
    org_id: str | None = None
    model: str | None = None
    # Adds uniqExact(user_id) as the last column (for k-anonymity; api/auth/privacy.py).
    distinct_users: bool = False

    def check(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise QueryError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        for g in self.group_by:
            if g not in GROUP_COLUMNS:
                raise QueryError(f"group_by must be among {', '.join(GROUP_COLUMNS)} (got {g!r})")
        if self.end <= self.start:
            raise QueryError("'to' must be after 'from'")
        if self.end - self.start > MAX_RANGE[self.granularity]:
            raise QueryError(f"range too long for granularity={self.granularity} "
                             f"(at most {MAX_RANGE[self.granularity].days} days); use a coarser granularity")


def build_sql(q: UsageQuery) -> tuple[str, dict[str, Any]]:
    q.check()
    table = "usage_minute" if q.granularity == "minute" else "usage_hour"
    bucket = "toStartOfDay(t, 'UTC')" if q.granularity == "day" else "t"
    params: dict[str, Any] = {"start": _floor(q.start, q.granularity), "end": q.end}
    where = ["t >= {start:DateTime('UTC')}", "t < {end:DateTime('UTC')}"]
    if q.org_id is not None:
        # Every prefix of an org path is an org: the roll-up has a row per prefix.
        where.append("org_prefix = {org:String}")
        params["org"] = q.org_id
    else:
        where.append("org_depth = 1")  # each event exactly once
    if q.user_id is not None:
        where.append("user_id = {user:String}")
        params["user"] = q.user_id
    if q.model is not None:
        where.append("model = {model:String}")
        params["model"] = q.model
    groups = list(dict.fromkeys(q.group_by))
    group_cols = [GROUP_COLUMNS[g][0] for g in groups]
    select = [f"{bucket} AS bucket", *group_cols, *(f"sum({s})" for s in SUMS)]
    if q.distinct_users:
        select.append("uniqExact(user_id)")
    order = [*group_cols, "bucket"]
    sql = (f"SELECT {', '.join(select)} FROM {table} WHERE {' AND '.join(where)} "
           f"GROUP BY {', '.join(['bucket', *group_cols])} ORDER BY {', '.join(order)} LIMIT {MAX_POINTS + 1}")
    return sql, params


def _floor(t: datetime, granularity: str) -> datetime:
    step = GRANULARITIES[granularity]
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=t.tzinfo)


def to_series(q: UsageQuery, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows (bucket, group values..., sums...) -> contract series."""
    if len(rows) > MAX_POINTS:
        raise QueryError(f"more than {MAX_POINTS:,} points; narrow the range, filter, or coarsen granularity")
    groups = list(dict.fromkeys(q.group_by))
    keys = [GROUP_COLUMNS[g][1] for g in groups]
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key_values = tuple(row[1 : 1 + len(keys)])
        sums = row[1 + len(keys) :]
        s = series.get(key_values)
        if s is None:
            s = series[key_values] = {"key": dict(zip(keys, key_values, strict=True)), "points": []}
        point: dict[str, Any] = {"t": _iso(row[0])}
        for name, value in zip(SUMS[:-1], sums[:-1], strict=True):
            point[name] = int(value)
        point["cost_usd"] = int(sums[-1]) / 1e9
        point["cost_nanos"] = int(sums[-1])
        s["points"].append(point)
    return list(series.values())


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
