"""How SQL text reaches the engine, without an engine.

Both backends bind `{name:Type}` parameters through clickhouse-connect, which
hands values to ClickHouse separately from the SQL (chdb's `params=` and the
server's `param_*`), escaped in ClickHouse's text format. These tests pin that
contract: the SQL text never changes, and hostile values are escaped so the
engine parses back exactly what was sent. Round trips run in the integration
tests. Migration files are split into statements here too.
"""

from __future__ import annotations

import datetime as dt

import pytest
from clickhouse_connect.driver.binding import bind_query

from tokentrail.store.migrations import split_statements

HOSTILE = ["a'b", "c\\d", "'; DROP TABLE usage_events; --", "line\nbreak\ttab", "ünï 🚀", "\\N", ""]


def test_sql_text_is_never_rewritten() -> None:
    sql = "SELECT 1 WHERE org_prefix = {org:String} AND event_id IN {ids:Array(String)}"
    bound_sql, values = bind_query(sql, {"org": HOSTILE[2], "ids": HOSTILE})
    assert bound_sql == sql
    assert set(values) == {"param_org", "param_ids"}


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("a'b", "a\\'b"),
        ("c\\d", "c\\\\d"),
        ("'; DROP TABLE t; --", "\\'; DROP TABLE t; --"),
        ("\\N", "\\\\N"),
    ],
)
def test_strings_are_escaped_for_clickhouse_text_format(value: str, escaped: str) -> None:
    _, values = bind_query("SELECT {v:String}", {"v": value})
    assert values["param_v"] == escaped


def test_arrays_render_as_quoted_literals() -> None:
    _, values = bind_query("SELECT {ids:Array(String)}", {"ids": ["x'", "y\\"]})
    assert values["param_ids"] == "['x\\'', 'y\\\\']"


def test_aware_datetimes_bind_as_utc_wall_clock() -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2024, 1, 2, 5, 4, 5, 123000, tzinfo=cest)
    _, values = bind_query("SELECT {t:DateTime64(3, 'UTC')}", {"t": when})
    assert values["param_t"].startswith("2024-01-02 03:04:05.123")


def test_split_ignores_semicolons_in_quotes_and_comments() -> None:
    text = """
    -- a comment; with 'quotes' and a semicolon
    CREATE TABLE a (s String DEFAULT ';') ENGINE = Memory;
    /* block; comment */ SELECT 'it''s; fine', "x;y", `a;b`;
    SELECT 'back\\'slash;';
    """
    assert split_statements(text) == [
        "CREATE TABLE a (s String DEFAULT ';') ENGINE = Memory",
        "SELECT 'it''s; fine', \"x;y\", `a;b`",
        "SELECT 'back\\'slash;'",
    ]


def test_split_drops_empty_statements() -> None:
    assert split_statements(";;\n-- only a comment\n;") == []
