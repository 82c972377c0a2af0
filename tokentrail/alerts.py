"""Kafka message formats of the alerts and risk topics (JSON, key = user_id).

An alert on the wire has exactly the shape of one item of ``GET /v1/alerts``
(CONTRACT.md §3), so a webhook can forward it as is; a risk update has the
shape of ``GET /v1/users/{user_id}/risk``. Times are RFC 3339 UTC strings:
``window_*`` and a risk's ``updated_at`` are event time, ``detected_at`` is
wall time. The detector writes these; the alert sink and webhooks read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from tokentrail.errors import TokenTrailError
from tokentrail.events import format_timestamp_ms, parse_timestamp_ms

ALERT_FIELDS: Final = ("alert_id", "user_id", "org_id", "kind", "severity", "score", "window_start",
                       "window_end", "detected_at", "reasons")
RISK_FIELDS: Final = ("user_id", "bot_score", "reasons", "updated_at")
_ALERT_TIMES: Final = ("window_start", "window_end", "detected_at")


class MessageError(TokenTrailError, ValueError):
    """A message on the alerts or risk topic is not in the expected format."""


def alert_message(alert_id: str, user_id: str, org_id: str, kind: str, severity: str, score: float,
                  window_ms: tuple[int, int], detected_ms: int, reasons: Sequence[str]) -> dict[str, Any]:
    return {
        "alert_id": alert_id, "user_id": user_id, "org_id": org_id, "kind": kind, "severity": severity,
        "score": float(score), "window_start": format_timestamp_ms(window_ms[0]),
        "window_end": format_timestamp_ms(window_ms[1]), "detected_at": format_timestamp_ms(detected_ms),
        "reasons": list(reasons),
    }


def risk_message(user_id: str, bot_score: float, reasons: Sequence[str], updated_ms: int) -> dict[str, Any]:
    return {"user_id": user_id, "bot_score": round(float(bot_score), 4), "reasons": list(reasons),
            "updated_at": format_timestamp_ms(updated_ms)}


def encode(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(message)


def decode_alert(value: bytes | None) -> dict[str, Any]:
    """Message value -> alert dict with the time fields also as ``<name>_ms`` integers."""
    doc = _object(value, ALERT_FIELDS)
    for name in ("alert_id", "org_id", "kind", "severity"):
        _need(isinstance(doc[name], str) and doc[name] != "", name, "a non-empty string")
    # An org's budget alert is about no one person: its user_id is "".
    _need(isinstance(doc["user_id"], str) and (doc["user_id"] != "" or doc["kind"] == "budget"), "user_id",
          "a non-empty string (\"\" only for an org's budget alert)")
    _need(_number(doc["score"]), "score", "a number")
    _need(_strings(doc["reasons"]), "reasons", "a list of strings")
    for name in _ALERT_TIMES:
        doc[f"{name}_ms"] = _time(doc[name], name)
    return doc


def decode_risk(value: bytes | None) -> dict[str, Any]:
    """Message value -> risk dict with ``updated_ms``."""
    doc = _object(value, RISK_FIELDS)
    _need(isinstance(doc["user_id"], str) and doc["user_id"] != "", "user_id", "a non-empty string")
    _need(_number(doc["bot_score"]) and 0 <= doc["bot_score"] <= 1, "bot_score", "a number in [0, 1]")
    _need(_strings(doc["reasons"]), "reasons", "a list of strings")
    doc["updated_ms"] = _time(doc["updated_at"], "updated_at")
    return doc


def _object(value: bytes | None, fields: tuple[str, ...]) -> dict[str, Any]:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError("not a JSON object")
    missing = [f for f in fields if f not in doc]
    if missing:
        raise MessageError(f"missing field(s): {', '.join(missing)}")
    return doc


def _need(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise MessageError(f"field '{name}' must be {what}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _time(value: object, name: str) -> int:
    try:
        return parse_timestamp_ms(value)
    except ValueError:
        raise MessageError(f"field '{name}' must be an RFC 3339 date-time") from None
