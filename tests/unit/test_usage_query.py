from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.usage_query import QueryError, UsageQuery, build_sql, to_series

START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
END = datetime(2026, 11, 24, tzinfo=UTC)


def test_org_filter_uses_prefix_and_binds_every_value() -> None:
    hostile = "x' OR 1=1 --"
    sql, params = build_sql(UsageQuery(START, END, "hour", ["user"], user_id=hostile, org_id=hostile))
    assert hostile not in sql
    assert params["org"] == hostile and params["user"] == hostile
    assert "org_prefix = {org:String}" in sql and "FROM usage_hour" in sql
    assert params["start"] == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # floored to the hour


def test_without_org_filter_each_event_counts_once() -> None:
    sql, _ = build_sql(UsageQuery(START, END, "minute"))
    assert "org_depth = 1" in sql and "FROM usage_minute" in sql


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (UsageQuery(START, END, "week"), "granularity"),
        (UsageQuery(START, END, "hour", ["team"]), "group_by"),
        (UsageQuery(END, START), "after"),
        (UsageQuery(datetime(2020, 1, 1, tzinfo=UTC), END, "minute"), "too long"),
    ],
)
def test_bad_queries_are_clear_errors(query: UsageQuery, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        build_sql(query)


def test_rows_become_series_per_key() -> None:
    q = UsageQuery(START, END, "hour", ["user"])
    t = datetime(2026, 11, 23, 10, tzinfo=UTC)
    rows = [(t, "u1", 2, 10, 5, 1, 0, 16, 1_500_000_000), (t, "u2", 1, 1, 1, 0, 0, 2, 7)]
    series = to_series(q, rows)
    assert [s["key"] for s in series] == [{"user_id": "u1"}, {"user_id": "u2"}]
    point = series[0]["points"][0]
    assert point["t"] == "2026-11-23T10:00:00Z" and point["total_tokens"] == 16
    assert point["cost_usd"] == 1.5 and point["cost_nanos"] == 1_500_000_000
