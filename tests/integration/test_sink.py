"""History sink against the real embedded broker and a real chdb store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_processors.sink import HistorySink, store_batch
from tests.helpers import isolated_settings, new_store, run_until
from tokentrail.envelope import build_envelopes, encode_event
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.store import Store, StoreError

pytestmark = pytest.mark.integration
PRICES = PriceTable.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = new_store(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


def events(n: int, prefix: str) -> list[dict[str, Any]]:
    return [encode_event({"event_id": f"{prefix}-{i}", "timestamp": "2026-11-23T09:15:02Z", "user_id": f"u{i % 7}",
                          "org_id": "acme/eng", "model": "gpt-5", "input_tokens": i, "output_tokens": 1}, PRICES)
            for i in range(n)]


def publish(bootstrap: str, topic: str, batch: list[dict[str, Any]], partitions: int = 3) -> None:
    pub = Publisher(bootstrap, topic)
    envs = list(build_envelopes(batch, partitions, max_events=100))
    assert pub.publish(envs, len(envs), len(batch)).wait(30)
    pub.close()


def stored(store: Store, prefix: str) -> tuple[int, int]:
    rows = store.query("SELECT count(), sum(input_tokens) FROM usage_events WHERE startsWith(event_id, {p:String})",
                       {"p": prefix + "-"})
    return int(rows[0][0]), int(rows[0][1] or 0)


def test_sink_stores_each_event_once(broker: EmbeddedBroker, store: Store) -> None:
    s = isolated_settings(broker.bootstrap, partitions=3, session_timeout_ms=10000)
    batch = events(3000, "once")
    publish(broker.bootstrap, s.usage_topic, batch + batch[:500])  # 500 re-sent
    sink = HistorySink(s, broker.bootstrap, store, PRICES, lambda raw, why: None)
    run_until(sink, lambda: sink.stats.stored + sink.stats.duplicates >= 3500)
    assert stored(store, "once") == (3000, sum(range(3000)))
    assert sink.stats.duplicates == 500


def test_restart_after_store_before_commit_counts_once(broker: EmbeddedBroker, store: Store) -> None:
    s = isolated_settings(broker.bootstrap, partitions=3, session_timeout_ms=10000)
    batch = events(1000, "crash")
    # A sink that stored a batch and died before committing its offsets:
    store_batch(store, batch[:600])
    publish(broker.bootstrap, s.usage_topic, batch)
    sink = HistorySink(s, broker.bootstrap, store, PRICES, lambda raw, why: None)
    run_until(sink, lambda: sink.stats.stored + sink.stats.duplicates >= 1000)
    assert stored(store, "crash") == (1000, sum(range(1000)))
    assert sink.stats.duplicates == 600


class FlakyStore:
    """The real store, failing its first ``failures`` inserts (store outage)."""

    def __init__(self, inner: Store, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def insert(self, *args: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("simulated outage")
        self.inner.insert(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_store_outage_pauses_then_resumes_without_loss(broker: EmbeddedBroker, store: Store) -> None:
    s = isolated_settings(broker.bootstrap, partitions=3, session_timeout_ms=10000)
    batch = events(2000, "outage")
    publish(broker.bootstrap, s.usage_topic, batch)
    flaky = FlakyStore(store, failures=3)
    sink = HistorySink(s, broker.bootstrap, flaky, PRICES, lambda raw, why: None)  # type: ignore[arg-type]
    run_until(sink, lambda: sink.stats.stored >= 2000)
    assert sink.stats.store_failures == 3 and not sink.stats.paused
    assert stored(store, "outage") == (2000, sum(range(2000)))


def test_invalid_messages_go_to_dead_letters(broker: EmbeddedBroker, store: Store, tmp_path: Path) -> None:
    s = isolated_settings(broker.bootstrap, partitions=3, session_timeout_ms=10000)
    pub = Publisher(broker.bootstrap, s.usage_topic)
    assert pub.publish([(0, b"garbage", 1), (1, b'[{"event_id": "x"}]', 1)], 2, 2).wait(30)
    pub.close()
    publish(broker.bootstrap, s.usage_topic, events(10, "dlq"))
    letters: list[tuple[object, str]] = []
    sink = HistorySink(s, broker.bootstrap, store, PRICES, lambda raw, why: letters.append((raw, why)))
    run_until(sink, lambda: sink.stats.stored >= 10 and len(letters) >= 2)
    assert sorted(why.split(":")[0] for _, why in letters) == ["field 'user_id'", "message is not JSON"]
