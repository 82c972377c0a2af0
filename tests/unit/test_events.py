"""Schema v1 validation: every rule names its field."""

from __future__ import annotations

import pytest

from tokentrail.errors import EventError
from tokentrail.events import format_timestamp_ms, org_prefixes, parse_timestamp_ms, to_contract, validate


def good(**over: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e-1", "timestamp": "2026-11-23T09:15:02.120Z", "user_id": "u1", "org_id": "acme/eng",
        "model": "claude-sonnet-4-5", "input_tokens": 100, "output_tokens": 20,
    }
    event.update(over)
    return event


def test_valid_minimal_event_gets_defaults_and_event_time() -> None:
    e = validate(good())
    assert e["cache_read_tokens"] == 0 and e["cache_write_tokens"] == 0
    assert e["ts_ms"] == 1795425302120
    assert e["timestamp"] == "2026-11-23T09:15:02.120Z"
    assert e["client"] == "" and e["latency_ms"] is None and e["cost_usd"] is None


def test_offsets_are_normalised_to_utc() -> None:
    assert validate(good(timestamp="2026-11-23T10:15:02.120+01:00"))["ts_ms"] == 1795425302120
    assert parse_timestamp_ms("2026-11-23T09:15:02Z") == 1795425302000
    assert parse_timestamp_ms("2026-11-23T09:15:02.123456789Z") == 1795425302123


def test_any_rfc3339_fraction_and_a_leap_second_are_accepted() -> None:
    # RFC 3339 bounds neither the fraction's digits nor forbids second 60; event time keeps ms,
    # and a leap second becomes the last millisecond of its minute (same minute, same day).
    assert parse_timestamp_ms("2026-11-23T09:15:02.1234567891234Z") == 1795425302123
    assert format_timestamp_ms(parse_timestamp_ms("2016-12-31T23:59:60Z")) == "2016-12-31T23:59:59.999Z"
    assert format_timestamp_ms(parse_timestamp_ms("2016-12-31T23:59:60.5+00:00")) == "2016-12-31T23:59:59.999Z"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("event_id", "", "1-128"),
        ("event_id", "x" * 129, "1-128"),
        ("user_id", 5, "string"),
        ("org_id", "x" * 257, "1-256"),
        ("input_tokens", -1, "between 0"),
        ("input_tokens", 10_000_001, "between 0"),
        ("output_tokens", 1.5, "integer"),
        ("output_tokens", True, "integer"),
        ("cache_read_tokens", "3", "integer"),
        ("timestamp", "2026-11-23", "RFC 3339"),
        ("timestamp", "2026-11-23T09:15:02", "RFC 3339"),
        ("timestamp", "2026-13-45T09:15:02Z", "valid"),
        ("timestamp", "0001-01-01T00:00:00+01:00", "between"),
        ("timestamp", "9999-12-31T23:59:59-01:00", "between"),
        ("timestamp", "1969-12-31T23:59:59Z", "1970"),
        ("timestamp", "2099-01-01T00:00:00Z", "24 hours from now"),
        ("latency_ms", -3, "non-negative"),
        ("prompt_hash", "not hex!", "hex"),
        ("cost_usd", -0.5, "between 0"),
        ("cost_usd", "1", "number"),
        ("metadata", [1], "object"),
        ("metadata", {"k": "v" * 5000}, "4 KiB"),
    ],
)
def test_each_rule_names_the_field(field: str, value: object, fragment: str) -> None:
    with pytest.raises(EventError) as info:
        validate(good(**{field: value}))
    assert info.value.field == field
    assert fragment in str(info.value)


def test_missing_required_field_and_unknown_field() -> None:
    event = good()
    del event["model"]
    with pytest.raises(EventError, match="field 'model': is required"):
        validate(event)
    with pytest.raises(EventError, match="field 'tokens': unknown field"):
        validate(good(tokens=5))
    with pytest.raises(EventError, match="JSON object"):
        validate([1, 2])


def test_org_prefixes_and_round_trip() -> None:
    assert org_prefixes("a/b/c") == ["a", "a/b", "a/b/c"]
    assert org_prefixes("solo") == ["solo"]
    assert format_timestamp_ms(0) == "1970-01-01T00:00:00.000Z"
    e = validate(good(metadata={"team": "x"}, client="cursor"))
    e["cost_nanos"], e["cost_source"] = 0, "price_table"
    back = to_contract(e)
    assert back["metadata"] == {"team": "x"} and back["client"] == "cursor"
    assert validate(back)["ts_ms"] == e["ts_ms"]


def test_the_fast_path_for_canonical_stamps_agrees_with_the_general_one() -> None:
    import random

    from tokentrail.events import _canonical_ms, parse_rfc3339_ms

    rng = random.Random(5)
    for _ in range(20_000):
        ms = rng.randrange(0, 4_102_444_800_000)  # 1970 .. 2100
        stamp = format_timestamp_ms(ms)
        assert _canonical_ms(stamp) == ms, stamp
        # The general path on the same instant written another way (offset, no millis).
        assert parse_rfc3339_ms(stamp.replace("Z", "+00:00")) == ms
    assert _canonical_ms("2026-02-29T00:00:00.000Z") is None  # not a date: the general path explains
    assert _canonical_ms("2026-11-23T24:00:00.000Z") is None
    with pytest.raises(EventError, match="timestamp"):
        parse_rfc3339_ms("2026-02-29T00:00:00.000Z")
    assert parse_rfc3339_ms("2024-02-29T23:59:59.999Z") == 1_709_251_199_999
    event = validate(good(timestamp="2026-11-23T09:15:02.120Z"))
    assert event["timestamp"] == "2026-11-23T09:15:02.120Z" and event["ts_ms"] == 1_795_425_302_120
