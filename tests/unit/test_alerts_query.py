"""GET /v1/alerts: the opaque cursor and the SQL (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.alerts_query import (
    AlertsQuery,
    CursorError,
    build_sql,
    decode_cursor,
    encode_cursor,
    epoch_ms,
    iso_ms,
    to_page,
)


def test_cursor_round_trip_is_opaque_and_url_safe() -> None:
    cursor = encode_cursor(1_795_392_000_123, "ab/cd+ef")
    assert decode_cursor(cursor) == (1_795_392_000_123, "ab/cd+ef")
    assert all(c.isalnum() or c in "-_" for c in cursor)


@pytest.mark.parametrize("cursor", ["", "not-a-cursor", "e30", encode_cursor(1, "x")[:-2] + "zz",
                                    "eyJ2IjoyLCJ0IjoxLCJpZCI6IngifQ"])  # the last: version 2
def test_foreign_cursors_are_rejected(cursor: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(cursor)


def test_filters_are_bound_parameters() -> None:
    since = datetime(2026, 11, 23, tzinfo=UTC)
    q = AlertsQuery(limit=10, since=since, user_id="u'1", org_id="acme/eng", kind="spike", after=(5, "id"))
    sql, params = build_sql(q)
    assert "u'1" not in sql and "acme" not in sql
    assert params == {"limit": 11, "user": "u'1", "org": "acme/eng", "org_below": "acme/eng/", "kind": "spike",
                      "since": since, "after_t": 5, "after_id": "id"}
    assert "startsWith(org_id, {org_below:String})" in sql  # subtree: acme/eng and below, not acme/engx
    assert "GROUP BY alert_id" in sql and "ORDER BY first_detected DESC, alert_id DESC" in sql


def test_no_filters() -> None:
    sql, params = build_sql(AlertsQuery())
    assert params == {"limit": 101} and "WHERE 1 GROUP BY" in sql


def _row(i: int) -> tuple[object, ...]:
    t = datetime(2026, 11, 23, 0, 0, i, 5000, tzinfo=UTC)
    return (f"a{i}", "u", "o", "spike", "low", 1.5, t, t, t, ["r"])


def test_page_has_a_cursor_only_when_more_rows_exist() -> None:
    q = AlertsQuery(limit=2)
    page = to_page(q, [_row(3), _row(2), _row(1)])
    assert [a["alert_id"] for a in page["alerts"]] == ["a3", "a2"]
    assert decode_cursor(page["next_cursor"]) == (epoch_ms(_row(2)[8]), "a2")  # type: ignore[arg-type]
    assert page["alerts"][0]["detected_at"] == "2026-11-23T00:00:03.005Z"
    assert to_page(q, [_row(3), _row(2)])["next_cursor"] is None


def test_time_helpers() -> None:
    t = datetime(2026, 11, 23, 1, 2, 3, 456_000, tzinfo=UTC)
    assert iso_ms(t) == "2026-11-23T01:02:03.456Z"
    assert epoch_ms(t) == 1_795_392_000_000 + 3_723_456
