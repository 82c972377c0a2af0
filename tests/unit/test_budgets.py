"""Budget config and threshold crossings (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_processors.budgets.config import Budget, BudgetConfigError, load_budgets
from stream_processors.budgets.crossings import Crossing, alert_id, crossings, period_bounds, reason, severity

DAY = 86_400_000
NOV_16 = 1_794_787_200_000  # 2026-11-16T00:00Z
USD = 1_000_000_000


def test_periods_are_utc_calendar_days_and_months() -> None:
    assert period_bounds(NOV_16 + 5 * 3_600_000, "day") == (NOV_16, NOV_16 + DAY)
    nov_1 = NOV_16 - 15 * DAY
    assert period_bounds(NOV_16, "month") == (nov_1, nov_1 + 30 * DAY)
    dec_1 = nov_1 + 30 * DAY
    assert period_bounds(dec_1 + 31 * DAY - 1, "month") == (dec_1, dec_1 + 31 * DAY)  # December rolls the year


def test_each_threshold_is_dated_by_the_minute_the_running_sum_reached_it() -> None:
    budget = Budget(name="b", org_id="acme", period="day", limit_usd=10, thresholds=(0.5, 0.8, 1.0))
    minute = 60_000
    rows = [(NOV_16 + 3 * minute, 4 * USD), (NOV_16, 1 * USD), (NOV_16 + 7 * minute, 3 * USD),
            (NOV_16 + 7 * minute, 1 * USD)]  # out of order, and one minute in two rows (not merged yet)
    got = crossings(budget, rows)
    assert [(c.threshold, c.at_ms, c.spent_nanos) for c in got] == [
        (0.5, NOV_16 + 4 * minute, 5 * USD), (0.8, NOV_16 + 8 * minute, 9 * USD)]
    assert all(c.period_start_ms == NOV_16 for c in got)
    assert crossings(budget, []) == []


def test_ids_are_stable_per_budget_period_and_threshold() -> None:
    budget = Budget(name="b", user_id="alice", period="month", limit_usd=1)
    first = crossings(budget, [(NOV_16, 2 * USD)])
    again = crossings(budget, [(NOV_16 + DAY, 1 * USD), (NOV_16 + DAY, 1 * USD)])  # other minutes, same period
    def ids(b: Budget, found: list[Crossing]) -> list[str]:
        return [alert_id(b, c.period_start_ms, c.threshold) for c in found]

    assert ids(budget, first) == ids(budget, again)
    assert len(set(ids(budget, first))) == 2
    other = Budget(name="c", user_id="alice", period="month", limit_usd=1)
    assert ids(other, first[:1]) != ids(budget, first[:1])
    assert [severity(c.threshold) for c in first] == ["medium", "high"]
    assert reason(budget, first[1]) == ("alice spent $2.00 of its $1.00 monthly budget 'b' (200%; threshold 100%) "
                                        "by 2026-11-16 00:01 UTC")


def test_the_budgets_file_is_checked_with_reasons(tmp_path: Path) -> None:
    good = tmp_path / "budgets.json"
    good.write_text(json.dumps({"budgets": [{"name": "acme", "org_id": "acme", "period": "month", "limit_usd": 5000}]}))
    assert load_budgets(good)[0].thresholds == (0.8, 1.0)
    cases = {
        "no scope": ({"name": "x", "period": "day", "limit_usd": 1}, "needs org_id, user_id or both"),
        "bad period": ({"name": "x", "org_id": "a", "period": "week", "limit_usd": 1}, "budgets.0.period"),
        "zero limit": ({"name": "x", "org_id": "a", "period": "day", "limit_usd": 0}, "limit_usd"),
        "thresholds": ({"name": "x", "org_id": "a", "period": "day", "limit_usd": 1, "thresholds": [1.0, 0.5]},
                       "increasing"),
        "typo": ({"name": "x", "org": "a", "period": "day", "limit_usd": 1}, "budgets.0.org"),
    }
    for what, (item, expected) in cases.items():
        bad = tmp_path / f"{what}.json"
        bad.write_text(json.dumps({"budgets": [item]}))
        with pytest.raises(BudgetConfigError, match=expected):
            load_budgets(bad)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"budgets": [{"name": "x", "org_id": "a", "period": "day", "limit_usd": 1}] * 2}))
    with pytest.raises(BudgetConfigError, match="repeated: x"):
        load_budgets(twice)
    with pytest.raises(BudgetConfigError, match="cannot read"):
        load_budgets(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(BudgetConfigError, match=r"broken\.json"):
        load_budgets(tmp_path / "broken.json")
