"""Alert and risk messages (tokentrail.alerts) and their ClickHouse rows (alert sink)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from stream_processors.alert_sink import ALERT_COLUMNS, RISK_COLUMNS, alert_row, risk_row
from tokentrail.alerts import ALERT_FIELDS, MessageError, alert_message, decode_alert, decode_risk, encode, risk_message

T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z


def sample() -> dict[str, object]:
    return alert_message("a1", "u1", "acme/eng", "tokenmaxxing", "high", 0.91, (T0, T0 + 3_600_000),
                         T0 + 3_600_500, ["requests every 10.0 s ± 0.1 s for 1 h"])


def test_alert_message_is_the_public_alert_shape() -> None:
    msg = sample()
    assert tuple(msg) == ALERT_FIELDS
    assert msg["window_start"] == "2026-11-23T00:00:00.000Z"
    assert msg["detected_at"] == "2026-11-23T01:00:00.500Z"


def test_alert_round_trip_and_row_mapping() -> None:
    doc = decode_alert(encode(sample()))
    assert (doc["window_start_ms"], doc["window_end_ms"], doc["detected_at_ms"]) == (T0, T0 + 3_600_000,
                                                                                       T0 + 3_600_500)
    row = alert_row(doc)
    assert len(row) == len(ALERT_COLUMNS)
    assert row == ("a1", "u1", "acme/eng", "tokenmaxxing", "high", 0.91,
                   datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 23, 1, tzinfo=UTC),
                   datetime(2026, 11, 23, 1, 0, 0, 500_000, tzinfo=UTC), ["requests every 10.0 s ± 0.1 s for 1 h"])


def test_risk_round_trip_and_row_mapping() -> None:
    doc = decode_risk(encode(risk_message("u1", 0.876543, ["why"], T0)))
    assert doc["bot_score"] == 0.8765 and doc["updated_at"] == "2026-11-23T00:00:00.000Z"
    row = risk_row(doc)
    assert len(row) == len(RISK_COLUMNS)
    assert row == ("u1", 0.8765, ["why"], datetime(2026, 11, 23, tzinfo=UTC))


@pytest.mark.parametrize("value, error", [
    (b"", "not JSON"), (b"[1]", "not a JSON object"), (b'{"alert_id": "a"}', "missing field"),
    (orjson.dumps({**sample(), "score": "high"}), "'score'"),
    (orjson.dumps({**sample(), "reasons": "one"}), "'reasons'"),
    (orjson.dumps({**sample(), "user_id": ""}), "'user_id'"),
    (orjson.dumps({**sample(), "window_end": "yesterday"}), "'window_end'"),
])
def test_bad_alert_messages_are_named(value: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        decode_alert(value)


def test_bad_risk_messages_are_named() -> None:
    with pytest.raises(MessageError, match="bot_score"):
        decode_risk(encode({**risk_message("u", 0.5, [], T0), "bot_score": 1.5}))


def test_only_an_org_budget_alert_is_about_no_one() -> None:
    doc = decode_alert(orjson.dumps({**sample(), "user_id": "", "kind": "budget"}))
    assert doc["user_id"] == "" and doc["kind"] == "budget"
    with pytest.raises(MessageError, match="'user_id'"):
        decode_alert(orjson.dumps({**sample(), "user_id": "", "kind": "spike"}))
