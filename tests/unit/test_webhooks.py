"""Webhook payloads, signatures and back-off (pure parts of stream_processors/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from stream_processors.webhooks import backoff, headers, payload, retryable, sign, verify
from tokentrail.alerts import alert_message

ALERT = alert_message("a1", "u1", "acme/eng", "tokenmaxxing", "high", 0.91, (0, 60_000), 61_000,
                      ["same prompt 90% of 500 requests"])


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = payload(ALERT, "json")
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert verify(body, "s3cret", sign(body, "s3cret"))
    assert not verify(body + b" ", "s3cret", sign(body, "s3cret"))
    assert not verify(body, "other", sign(body, "s3cret"))


def test_headers_sign_only_with_a_secret() -> None:
    body = payload(ALERT, "json")
    signed = headers(body, "a1", "s3cret")
    assert signed["X-TokenTrail-Signature"] == sign(body, "s3cret")
    assert signed["X-TokenTrail-Alert-Id"] == "a1" and signed["Content-Type"] == "application/json"
    assert "X-TokenTrail-Signature" not in headers(body, "a1", None)


def test_json_payload_is_the_public_alert() -> None:
    doc = orjson.loads(payload({**ALERT, "window_start_ms": 0}, "json"))
    assert doc == {"type": "alert", "alert": ALERT}  # internal fields are not sent


def test_slack_payload_is_text() -> None:
    doc = orjson.loads(payload(ALERT, "slack"))
    assert list(doc) == ["text"]
    assert "*tokenmaxxing*" in doc["text"] and "`u1`" in doc["text"] and "• same prompt" in doc["text"]


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(i, 0.5) for i in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(20, 0.5) == 60.0


def test_what_is_retried() -> None:
    assert retryable(None) and retryable(500) and retryable(503) and retryable(429) and retryable(408)
    assert not retryable(400) and not retryable(404) and not retryable(410)
