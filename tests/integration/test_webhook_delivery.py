"""Webhook delivery to real HTTP servers on 127.0.0.1 (and, for the dispatcher, the real broker)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_processors.webhooks import Target, WebhookDispatcher, WebhookStats, headers, payload, verify
from tests.helpers import WebhookReceiver, free_port
from tokentrail.alerts import alert_message, encode
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.runtime.topics import create_missing, pipeline_topics
from tokentrail.settings import Settings

pytestmark = pytest.mark.integration
SECRET = "hook-secret"


def alert(i: int) -> dict[str, object]:
    now = int(time.time() * 1000)
    return alert_message(f"a{i}", f"u{i}", "acme/eng", "tokenmaxxing", "high", 0.9, (now - 60_000, now), now,
                         [f"reason {i}"])


def deliver(url: str, settings: Settings) -> tuple[bool, WebhookStats]:
    import threading

    stats = WebhookStats()
    target = Target(url, settings, stats, lambda item: None, threading.Event())
    body = payload(alert(1), "json")
    return target.deliver(body, headers(body, "a1", SECRET)), stats


def test_retries_with_back_off_until_delivered() -> None:
    settings = Settings(webhook_attempts=4, webhook_backoff_s=0.05)
    with WebhookReceiver([500, 503, 429]) as hook:
        started = time.monotonic()
        done, stats = deliver(hook.url, settings)
        took = time.monotonic() - started
    assert done and hook.attempts == 4 and len(hook.received) == 1
    assert stats.snapshot()["delivered"] == 1 and stats.snapshot()["retries"] == 3
    assert took >= 0.05 + 0.1 + 0.2  # back-off doubled each time
    headers_, body = hook.received[0]
    assert verify(body, SECRET, headers_["x-tokentrail-signature"])
    assert orjson.loads(body)["alert"]["alert_id"] == "a1"


def test_gives_up_on_client_errors_and_on_unreachable_receivers() -> None:
    settings = Settings(webhook_attempts=3, webhook_backoff_s=0.01, webhook_timeout_s=1)
    with WebhookReceiver([400]) as hook:
        done, stats = deliver(hook.url, settings)
    assert done and hook.attempts == 1 and stats.snapshot()["failed"] == 1
    done, stats = deliver(f"http://127.0.0.1:{free_port()}/nobody", settings)
    assert done and stats.snapshot() | {} == {"delivered": 0, "failed": 1, "retries": 2, "dropped": 0, "skipped": 0}


def test_a_failing_url_does_not_hold_up_the_others(broker: EmbeddedBroker) -> None:
    tag = uuid.uuid4().hex[:8]
    with WebhookReceiver() as good, WebhookReceiver([500] * 1000) as bad:
        s = Settings(alerts_topic=f"alerts-{tag}", risk_topic=f"risk-{tag}", usage_topic=f"usage-{tag}",
                     dead_letter_topic=f"dlq-{tag}", stats_topic=f"stats-{tag}", webhook_group=f"wh-{tag}",
                     partitions=2, webhook_urls=f"{bad.url},{good.url}", webhook_secret=SECRET,
                     webhook_attempts=3, webhook_backoff_s=0.1, webhook_format="slack", session_timeout_ms=2000)
        create_missing(broker.bootstrap, pipeline_topics(s))
        pub = Publisher(broker.bootstrap, s.alerts_topic)
        values = [encode(alert(i)) for i in range(5)] + [encode(alert(0))]  # a replayed copy of a0
        assert all(pub.send_raw(s.alerts_topic, v, key=f"u{i}".encode()).wait(30) for i, v in enumerate(values))
        pub.close()
        dispatcher = WebhookDispatcher(s, broker.bootstrap)
        dispatcher.start()
        deadline = time.monotonic() + 30
        while len(good.received) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        slow_receiver_done = dispatcher.stats.snapshot()["failed"]
        # the bad URL needs 3 attempts and 0.1 + 0.2 s of back-off per alert: the good one did not wait for it
        assert len(good.received) == 5 and slow_receiver_done < 5
        while dispatcher.stats.snapshot()["failed"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        dispatcher.stop()
    texts = [orjson.loads(body)["text"] for _, body in good.received]
    assert sorted(h["x-tokentrail-alert-id"] for h, _ in good.received) == [f"a{i}" for i in range(5)]
    assert all("*tokenmaxxing*" in t for t in texts)
    assert all(verify(body, SECRET, h["x-tokentrail-signature"]) for h, body in good.received)
    assert dispatcher.stats.snapshot() == {"delivered": 5, "failed": 5, "retries": 10, "dropped": 0, "skipped": 1}
    assert committed(broker.bootstrap, s) == 6  # every message done with: nothing re-sent after a restart


def committed(bootstrap: str, s: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": s.webhook_group})
    try:
        parts = consumer.committed([TopicPartition(s.alerts_topic, p) for p in range(s.partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in parts)
    finally:
        consumer.close()
