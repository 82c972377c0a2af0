"""Alert sink against the real embedded broker and a real chdb store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.alerts_query import AlertsQuery, build_sql, to_page
from stream_processors.alert_sink import AlertSink
from tests.helpers import isolated_settings, new_store, run_until
from tokentrail.alerts import alert_message, encode, risk_message
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.store import Store

pytestmark = pytest.mark.integration
T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z
H = 3_600_000
NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = new_store(tmp_path_factory.mktemp("alert-sink"))
    yield s
    s.close()


def alert(alert_id: str, user: str, end_h: int, score: float, detected_ms: int) -> bytes:
    return encode(alert_message(alert_id, user, "acme/eng", "tokenmaxxing", "medium", score, (T0, T0 + end_h * H),
                                detected_ms, [f"score {score}"]))


def publish(bootstrap: str, messages: list[tuple[str, str, bytes]]) -> None:
    pub = Publisher(bootstrap, "unused")
    tickets = [pub.send_raw(topic, value, key=key.encode()) for topic, key, value in messages]
    assert all(t.wait(30) for t in tickets)
    pub.close()


def test_one_row_per_alert_latest_version_first_detection(broker: EmbeddedBroker, store: Store) -> None:
    s = isolated_settings(broker.bootstrap, partitions=2)
    letters: list[tuple[object, str]] = []
    a, r = s.alerts_topic, s.risk_topic
    publish(broker.bootstrap, [
        (a, "u1", alert("x-1", "u1", 1, 0.6, NOW)),
        (a, "u1", alert("x-1", "u1", 1, 0.6, NOW + 5000)),  # a replayed copy
        (a, "u2", alert("x-2", "u2", 3, 0.7, NOW + 100)),
        (a, "u3", b"not an alert"),
        (r, "u1", encode(risk_message("u1", 0.6, ["first"], T0 + H))),
    ])
    sink = AlertSink(s, broker.bootstrap, store, lambda raw, why: letters.append((raw, why)))
    run_until(sink, lambda: sink.stats.alert_messages + sink.stats.invalid >= 4 and sink.stats.risk_updates >= 1)
    # In a later batch: the alert grew (later window_end, new score), and a newer score.
    publish(broker.bootstrap, [
        (a, "u1", alert("x-1", "u1", 2, 0.9, NOW + 9000)),
        (r, "u1", encode(risk_message("u1", 0.9, ["second"], T0 + 2 * H))),
        (r, "u1", encode(risk_message("u1", 0.2, ["stale"], T0))),  # older event time: not a newer version
    ])
    sink = AlertSink(s, broker.bootstrap, store)
    run_until(sink, lambda: sink.stats.alert_messages >= 1 and sink.stats.risk_updates >= 1)

    q = AlertsQuery(user_id="u1")
    got = to_page(q, store.query(*build_sql(q)))["alerts"]
    assert len(got) == 1
    x1 = got[0]
    assert (x1["alert_id"], x1["score"], x1["reasons"]) == ("x-1", 0.9, ["score 0.9"])
    assert x1["window_end"] == "2026-11-23T02:00:00.000Z"
    assert x1["detected_at"] == _iso(NOW)  # the first detection: the alert keeps its place
    assert len(letters) == 1 and "not JSON" in letters[0][1]
    rows = store.query("SELECT bot_score, reasons FROM user_risk FINAL WHERE user_id = 'u1'")
    assert rows == [(0.9, ["second"])]


class GatedStore:
    """The real store, whose inserts wait until the test opens the gate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(30)
        return self.store.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_alert_messages_are_counted_once_stored(broker: EmbeddedBroker, store: Store) -> None:
    """A client waiting until ``alert_messages`` reaches the detector's count
    (GET /v1/pipeline) can then read every alert: the count follows the insert."""
    s = isolated_settings(broker.bootstrap, partitions=1)
    publish(broker.bootstrap, [(s.alerts_topic, "u9", alert("x-9", "u9", 1, 0.8, NOW))])
    gated = GatedStore(store)
    sink = AlertSink(s, broker.bootstrap, gated)  # type: ignore[arg-type]
    sink.start()
    try:
        deadline = time.monotonic() + 60
        while sink.pending_size() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.pending_size() == 1  # taken from the topic, not stored yet
        assert sink.stats.snapshot()["alert_messages"] == 0
        gated.gate.set()
        while sink.stats.snapshot()["alert_messages"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats.snapshot()["alert_messages"] == 1
        q = AlertsQuery(user_id="u9")
        assert [a["alert_id"] for a in to_page(q, store.query(*build_sql(q)))["alerts"]] == ["x-9"]
    finally:
        gated.gate.set()
        sink.stop()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
