"""Budget alerts against a real chdb store, the embedded broker and the alert sink."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from stream_processors.alert_sink import AlertSink
from stream_processors.budgets.config import Budget
from stream_processors.budgets.watcher import BudgetWatcher
from stream_processors.sink import store_batch
from tests.helpers import isolated_settings, new_store, run_until
from tokentrail.envelope import encode_event
from tokentrail.events import format_timestamp_ms
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.store import Store

pytestmark = pytest.mark.integration
UTC = dt.UTC
NOV_20_MS = int(dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1000)
PRICES = PriceTable.load()
NOW_MS = int(dt.datetime(2026, 11, 29, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture()
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = new_store(tmp_path_factory.mktemp("budgets"))
    yield s
    s.close()


def spend(store: Store, tag: str, minutes: list[int], usd: float, org: str = "acme/eng", user: str = "alice") -> None:
    """Events costing ``usd`` each, stored as the history sink stores them."""
    events = [encode_event({"event_id": f"{tag}-{m}", "timestamp": format_timestamp_ms(NOV_20_MS + m * 60_000),
                            "user_id": user, "org_id": org, "model": "gpt-x", "input_tokens": 10,
                            "output_tokens": 20, "cost_usd": usd}, PRICES) for m in minutes]
    assert store_batch(store, events) == (len(events), 0)


def test_crossings_are_alerted_once_stored_and_not_repeated_after_a_restart(
        broker: EmbeddedBroker, store: Store) -> None:
    settings = isolated_settings(broker.bootstrap, partitions=2)
    publisher = Publisher(broker.bootstrap, settings.usage_topic)

    def send(key: bytes, value: bytes) -> bool:
        return publisher.send_raw(settings.alerts_topic, value, key).wait(30)

    budgets = [Budget(name="acme-month", org_id="acme", period="month", limit_usd=100, thresholds=(0.5, 1.0)),
               Budget(name="alice-day", user_id="alice", period="day", limit_usd=20)]
    spend(store, "a", list(range(0, 60, 10)), 10.0)  # alice, $60 by 09:50
    spend(store, "b", [5], 5.0, org="acme/ops", user="bob")  # $65 for acme by then
    spend(store, "c", [0], 50.0, org="other", user="carol")  # not acme's, not alice's
    watcher = BudgetWatcher(store, budgets, send)
    sent = watcher.check(NOW_MS)
    got = {(m["kind"], m["user_id"], m["org_id"], m["severity"], m["window_end"]) for m in sent}
    assert got == {
        ("budget", "", "acme", "low", "2026-11-20T09:41:00.000Z"),  # acme reached $55 at 09:40 (incl. bob's $5)
        ("budget", "alice", "acme/eng", "medium", "2026-11-20T09:11:00.000Z"),  # $10 -> $20 at 09:10: 80% ...
        ("budget", "alice", "acme/eng", "high", "2026-11-20T09:11:00.000Z"),  # ... and 100% in the same minute
    }
    assert all(m["window_start"] in ("2026-11-01T00:00:00.000Z", "2026-11-20T00:00:00.000Z") for m in sent)
    assert watcher.check(NOW_MS) == []  # checked again: nothing new

    sink = AlertSink(settings, broker.bootstrap, store, lambda *_: publisher.send_raw(settings.dead_letter_topic, b""))
    run_until(sink, lambda: sink.stats.snapshot()["alerts"] >= 3)
    stored = store.query("SELECT user_id, kind FROM alerts WHERE kind = 'budget' ORDER BY user_id")
    assert stored == [("", "budget"), ("alice", "budget"), ("alice", "budget")]

    # A restarted watcher knows what was sent from the store; more spend crosses acme's 100%.
    restarted = BudgetWatcher(store, budgets, send)
    spend(store, "d", [100], 40.0)  # 10:40, acme at $105
    again = restarted.check(NOW_MS)
    assert [(m["org_id"], m["severity"], m["window_end"]) for m in again] == [
        ("acme", "high", "2026-11-20T10:41:00.000Z")]
    assert "acme spent $105.00 of its $100.00 monthly budget 'acme-month'" in again[0]["reasons"][0]
    publisher.close()
