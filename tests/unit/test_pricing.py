from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokentrail.errors import ConfigError
from tokentrail.events import validate
from tokentrail.pricing import PriceTable, apply_cost


def event(**over: object) -> dict[str, object]:
    raw: dict[str, object] = {"event_id": "e", "timestamp": "2026-11-23T09:15:02Z", "user_id": "u", "org_id": "o",
                              "model": "claude-opus-4-1", "input_tokens": 1_000_000, "output_tokens": 1_000_000,
                              "cache_read_tokens": 1_000_000, "cache_write_tokens": 1_000_000}
    raw.update(over)
    return validate(raw)


def test_cost_is_exact_integer_nanos_from_the_table() -> None:
    table = PriceTable.load()
    e = event()
    apply_cost(e, table)
    # 15 + 75 + 1.5 + 18.75 USD per million each -> 110.25 USD exactly
    assert e["cost_nanos"] == 110_250_000_000
    assert e["cost_source"] == "price_table" and e["price_version"] == table.version


def test_client_cost_wins_and_unknown_model_is_marked() -> None:
    table = PriceTable.load()
    sent = event(cost_usd=0.123456789)
    apply_cost(sent, table)
    assert sent["cost_nanos"] == 123_456_789 and sent["cost_source"] == "event"
    unknown = event(model="my-private-model")
    apply_cost(unknown, table)
    assert unknown["cost_nanos"] == 0 and unknown["cost_source"] == "unpriced"


def test_override_file_adds_models_and_versions(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"version": "acme-1", "models": {
        "my-private-model": {"input": 1, "output": 2, "cache_read": 0.1, "cache_write": 0}}}))
    table = PriceTable.load(str(f))
    assert table.version.endswith("+acme-1")
    assert table.cost_nanos("my-private-model", 10, 10, 10, 0) == 10 * 1000 + 10 * 2000 + 10 * 100


def test_bad_price_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"version": "x", "models": {"m": {"input": 0.0001, "output": 1, "cache_read": 0,
                                                               "cache_write": 0}}}))
    with pytest.raises(ConfigError, match="at most 3 decimals"):
        PriceTable.load(str(f))
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(str(tmp_path / "missing.json"))
