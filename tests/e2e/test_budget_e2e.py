"""Budget alerts through `tokentrail up`: a budgets file, events over POST
/v1/events, and the crossing served by GET /v1/alerts and counted in /v1/pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults import traffic
from tests.helpers import RunningStack, post_ndjson
from tokentrail.envelope import encode_event
from tokentrail.pricing import PriceTable

pytestmark = pytest.mark.e2e


def test_an_org_budget_crossing_is_alerted_once(tmp_path: Path) -> None:
    events = traffic(20_000, seed=61)
    prices = PriceTable.load()
    wire = [encode_event(e, prices) for e in events]
    assert {e["org_id"].split("/")[0] for e in wire} == {"acme"} and len({e["ts_ms"] // 86_400_000 for e in wire}) == 1
    spend = sum(e["cost_nanos"] for e in wire)
    assert spend > 0
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"budgets": [
        {"name": "acme-day", "org_id": "acme", "period": "day", "limit_usd": spend / 2 / 1e9, "thresholds": [1.0]},
        {"name": "never", "org_id": "acme", "period": "month", "limit_usd": 1e9},
    ]}))
    stack = RunningStack(tmp_path / "stack", {"TOKENTRAIL_BUDGETS_FILE": str(budgets),
                                              "TOKENTRAIL_BUDGET_CHECK_S": "1"}).start()
    try:
        for i in range(0, len(events), 5000):
            assert post_ndjson(stack.client, events[i:i + 5000]).status_code == 202
        stack.wait_drained(expect_stored=len(events))
        deadline = time.monotonic() + 60
        alerts: list = []
        while time.monotonic() < deadline and not alerts:
            alerts = stack.client.get("/v1/alerts", params={"kind": "budget"}).json()["alerts"]
            time.sleep(0.5)
        assert len(alerts) == 1, alerts
        alert = alerts[0]
        assert (alert["user_id"], alert["org_id"], alert["severity"]) == ("", "acme", "high")
        assert alert["score"] >= 1.0 and "acme-day" in alert["reasons"][0]
        time.sleep(3)  # checked again, several times: still one alert
        assert len(stack.client.get("/v1/alerts", params={"kind": "budget"}).json()["alerts"]) == 1
        budgets_stats = stack.pipeline()["stages"]["budgets"]
        assert budgets_stats["budgets"] == 2 and budgets_stats["alerts"] == 1 and budgets_stats["checks"] >= 3
    finally:
        stack.stop()
