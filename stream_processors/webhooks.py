"""Webhook delivery of alerts: its own consumer group on the alerts topic.

Every alert is POSTed to each URL of TOKENTRAIL_WEBHOOK_URLS, as JSON
(``{"type": "alert", "alert": {...}}``, the alert in its GET /v1/alerts shape)
or in Slack's incoming-webhook format. With TOKENTRAIL_WEBHOOK_SECRET the body
is signed: ``X-TokenTrail-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.

Each URL has its own thread and bounded queue, so a slow or failing receiver
delays only itself: failed posts are retried with exponential back-off
(``webhook_backoff_s`` doubling, ``webhook_attempts`` tries), then given up
(counted and logged); a full queue drops alerts for that URL. Offsets are
committed once every URL is done with a message, so a restart re-delivers what
was in flight: delivery is at least once, and receivers dedupe by
``X-TokenTrail-Alert-Id``. Nothing here can slow the pipeline down.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tokentrail.alerts import MessageError, decode_alert
from tokentrail.settings import Settings

log = logging.getLogger(__name__)
QUEUE_SIZE = 10_000  # alerts waiting per URL before that URL starts dropping
RECENT_IDS = 10_000  # alert ids remembered to skip replayed copies
_PUBLIC = ("alert_id", "user_id", "org_id", "kind", "severity", "score", "window_start", "window_end",
           "detected_at", "reasons")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return hmac.compare_digest(sign(body, secret), header)


def payload(alert: dict[str, Any], fmt: str) -> bytes:
    public = {k: alert[k] for k in _PUBLIC}
    if fmt == "slack":
        return orjson.dumps({"text": slack_text(public)})
    return orjson.dumps({"type": "alert", "alert": public})


def slack_text(a: dict[str, Any]) -> str:
    reasons = "".join(f"\n• {r}" for r in a["reasons"])
    return (f":rotating_light: TokenTrail alert: *{a['kind']}* ({a['severity']}, score {a['score']:.2f}) "
            f"for user `{a['user_id']}` in `{a['org_id']}`\n"
            f"event time {a['window_start']} → {a['window_end']}{reasons}")


def headers(body: bytes, alert_id: str, secret: str | None) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": "TokenTrail-Webhooks/1",
           "X-TokenTrail-Alert-Id": alert_id}
    if secret:
        out["X-TokenTrail-Signature"] = sign(body, secret)
    return out


def backoff(attempt: int, base_s: float, cap_s: float = 60.0) -> float:
    """Delay before retry number ``attempt`` (0-based): base, 2 base, 4 base, ..."""
    return float(min(base_s * 2**attempt, cap_s))


def post(url: str, body: bytes, hdrs: dict[str, str], timeout_s: float) -> int | None:
    """HTTP status of one POST, None when the receiver could not be reached."""
    request = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.debug("webhook %s: %s", url, exc)
        return None


def retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status in (408, 429)


@dataclass
class Pending:
    """One alerts-topic message: done when every URL delivered it or gave up."""

    partition: int
    offset: int
    remaining: int


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # given up after every attempt (or a non-retryable answer)
    retries: int = 0
    dropped: int = 0  # queue of a URL full
    skipped: int = 0  # replayed copies, invalid or too old messages
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"delivered": self.delivered, "failed": self.failed, "retries": self.retries,
                    "dropped": self.dropped, "skipped": self.skipped}


class Target(threading.Thread):
    """Delivers to one URL, in order, with retries."""

    def __init__(self, url: str, settings: Settings, stats: WebhookStats, done: Any, stop: threading.Event) -> None:
        super().__init__(name=f"webhook {url}", daemon=True)
        self.url = url
        self.settings = settings
        self.stats = stats
        self.done = done
        self.stop_event = stop
        self.queue: queue.Queue[tuple[Pending, bytes, dict[str, str]]] = queue.Queue(QUEUE_SIZE)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                item, body, hdrs = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.deliver(body, hdrs):
                self.done(item)

    def deliver(self, body: bytes, hdrs: dict[str, str]) -> bool:
        """True when finished with (delivered or given up); False when stopping mid-way."""
        s = self.settings
        for attempt in range(s.webhook_attempts):
            status = post(self.url, body, hdrs, s.webhook_timeout_s)
            if status is not None and 200 <= status < 300:
                self.stats.add(delivered=1)
                return True
            if not retryable(status) or attempt == s.webhook_attempts - 1:
                break
            self.stats.add(retries=1)
            if self.stop_event.wait(backoff(attempt, s.webhook_backoff_s)):
                return False  # not committed: delivered again after a restart
        log.warning("webhook %s: giving up on alert %s (last status %s)", self.url,
                    hdrs.get("X-TokenTrail-Alert-Id"), status)
        self.stats.add(failed=1)
        return True


class WebhookDispatcher:
    def __init__(self, settings: Settings, bootstrap: str, max_age_s: float = 24 * 3600) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.max_age_s = max_age_s  # on first start, older alerts still in the topic are not sent
        self.stats = WebhookStats()
        self._stop = threading.Event()  # the consumer loop
        self._stop_targets = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[int, deque[Pending]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.targets = [Target(u, settings, self.stats, self._finish, self._stop_targets)
                        for u in settings.webhook_url_list()]
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)

    def start(self) -> None:
        for target in self.targets:
            target.start()
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        # Targets first: what they finish is marked done before the consumer's last
        # commit, so a delivery completed just now is not sent again after a restart.
        self._stop_targets.set()
        for target in self.targets:
            target.join(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)

    def _finish(self, item: Pending) -> None:
        with self._lock:
            item.remaining -= 1

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.settings.webhook_group,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": self.settings.session_timeout_ms, "log_level": 3})
        consumer.subscribe([self.settings.alerts_topic], on_revoke=self._revoked)
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=100, timeout=0.2):
                    self._take(msg)
                if time.monotonic() - last_commit >= 1.0:
                    self._commit(consumer)
                    last_commit = time.monotonic()
            self._commit(consumer)
        except Exception:
            log.exception("webhook dispatcher crashed")
            raise
        finally:
            consumer.close()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another member takes these partitions over: commit what is done, forget the rest
        (the new owner re-delivers it: at least once)."""
        self._commit(consumer)
        with self._lock:
            for tp in partitions:
                self._pending.pop(tp.partition, None)

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("webhook consumer: %s", err)
            return
        item = Pending(msg.partition(), msg.offset(), 0)
        try:
            alert = decode_alert(msg.value())
        except MessageError as exc:
            log.warning("alerts topic: skipping an invalid message (%s)", exc)
            alert = None
        if alert is None or self._seen(alert) or time.time() - alert["detected_at_ms"] / 1000 > self.max_age_s:
            self.stats.add(skipped=1)
        else:
            self._dispatch(item, alert)
        with self._lock:
            self._pending.setdefault(item.partition, deque()).append(item)

    def _seen(self, alert: dict[str, Any]) -> bool:
        alert_id = alert["alert_id"]
        if alert_id in self._recent:
            return True
        self._recent[alert_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        return False

    def _dispatch(self, item: Pending, alert: dict[str, Any]) -> None:
        body = payload(alert, self.settings.webhook_format)
        hdrs = headers(body, alert["alert_id"], self.settings.webhook_secret)
        item.remaining = len(self.targets)
        for target in self.targets:
            try:
                target.queue.put_nowait((item, body, hdrs))
            except queue.Full:
                self.stats.add(dropped=1)
                self._finish(item)

    def _commit(self, consumer: Consumer) -> None:
        """Commit, per partition, past the messages every URL is done with."""
        offsets = []
        with self._lock:
            for partition, items in self._pending.items():
                last = None
                while items and items[0].remaining <= 0:
                    last = items.popleft().offset
                if last is not None:
                    offsets.append(TopicPartition(self.settings.alerts_topic, partition, last + 1))
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # e.g. a rebalance in progress: committed next time
                log.warning("webhook offsets not committed: %s", exc)
