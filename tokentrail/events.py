"""The usage event, schema v1 (CONTRACT.md §1): validation and canonical form.

Validation happens once, at the edge (HTTP ingest, the producer SDK, replay).
A valid event is turned into its *wire form*: the contract fields with the
timestamp normalised to UTC milliseconds, plus fields computed once so that
every later stage agrees on them:

- ``ts_ms``        event time as integer milliseconds since the epoch (UTC)
- ``cost_nanos``   cost in nano-USD (integer, so sums are exact)
- ``cost_source``  ``event`` (sent by the client), ``price_table`` or ``unpriced``
- ``price_version`` the price table version used ("" when not priced by us)

Stages after the edge trust the wire form (see ``tokentrail.envelope``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from tokentrail.errors import EventError

SCHEMA: Final = "usage.v1"
MAX_TOKENS: Final = 10_000_000
MAX_METADATA_BYTES: Final = 4096
MAX_LATENCY_MS: Final = 2**31 - 1
MAX_FUTURE_MS: Final = 24 * 3600 * 1000  # clock skew tolerated for event time

# (field, min length, max length) for required strings.
_REQUIRED_STRINGS: Final = (
    ("event_id", 1, 128),
    ("user_id", 1, 256),
    ("org_id", 1, 256),
    ("model", 1, 256),
)
_REQUIRED_INTS: Final = ("input_tokens", "output_tokens")
_OPTIONAL_INTS: Final = ("cache_read_tokens", "cache_write_tokens")
_OPTIONAL_STRINGS: Final = (("provider", 256), ("client", 256), ("session_id", 256))
TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

ALLOWED_FIELDS: Final = frozenset(
    [name for name, _, _ in _REQUIRED_STRINGS]
    + list(TOKEN_FIELDS)
    + [name for name, _ in _OPTIONAL_STRINGS]
    + ["timestamp", "latency_ms", "prompt_hash", "cost_usd", "metadata"]
)
_HEX = re.compile(r"[0-9a-fA-F]{1,128}")
# RFC 3339 date-time: full date, 'T' (or space, or lower-case t), time, and a
# mandatory offset. datetime.fromisoformat alone also accepts dates without a
# time or offset, which the contract does not.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def _is_int(value: object) -> bool:
    # bool is a subclass of int; `true` is not a token count.
    return type(value) is int


# The form most clients send, and the one the wire form carries:
# "2026-11-23T09:15:02.120Z". Parsed without datetime (a third of the edge's
# per-event cost otherwise); anything else takes the general path.
_CANONICAL = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)\.(\d{3})Z")
_DAY_MS: dict[str, int] = {}  # "YYYY-MM-DD" -> epoch ms of its midnight UTC; bounded below


def _canonical_ms(value: str) -> int | None:
    """Epoch ms of a canonical timestamp, or None when it is not one (or not a real date)."""
    m = _CANONICAL.fullmatch(value)
    if m is None:
        return None
    day = m.group(1)
    midnight = _DAY_MS.get(day)
    if midnight is None:
        try:
            midnight = int((datetime.fromisoformat(day).replace(tzinfo=UTC) - _EPOCH).total_seconds()) * 1000
        except ValueError:  # 2026-02-30: let the general path say why
            return None
        if len(_DAY_MS) >= 8192:
            _DAY_MS.clear()
        _DAY_MS[day] = midnight
    return midnight + ((int(m.group(2)) * 60 + int(m.group(3))) * 60 + int(m.group(4))) * 1000 + int(m.group(5))


def parse_rfc3339_ms(value: object, field: str = "timestamp") -> int:
    """Strict RFC 3339 date-time with offset -> integer epoch milliseconds (UTC)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise EventError(field, "must be an RFC 3339 date-time with offset, e.g. 2026-11-23T09:15:02.120Z")
    text = value.replace("z", "Z").replace("t", "T")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # fromisoformat takes at most microseconds; we keep ms
        text = text.replace(frac.group(0), "." + frac.group(1)[:6], 1)
    leap = text[17:19] == "60"  # RFC 3339 allows a leap second; datetime does not
    if leap:
        text = text[:17] + "59" + text[19:]
    try:
        delta = datetime.fromisoformat(text) - _EPOCH
    except (ValueError, OverflowError) as exc:  # e.g. year 0 or 10000 after the offset
        raise EventError(field, f"is not a valid date-time ({exc})") from None
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    # 23:59:60.5 is kept as the last millisecond of 23:59:59: it stays in its minute and day.
    return ms + (999 - ms % 1000) if leap else ms


def parse_timestamp_ms(value: object) -> int:
    """An event's timestamp: RFC 3339, and within the range event time may take."""
    return _in_event_time_range(parse_rfc3339_ms(value))


def _in_event_time_range(ts_ms: int) -> int:
    # One event dated 2099 would move a partition's event-time watermark past
    # every real event; the history store's DateTime starts at 1970.
    if not 0 <= ts_ms <= time.time() * 1000 + MAX_FUTURE_MS:
        raise EventError("timestamp", "must lie between 1970-01-01 and 24 hours from now")
    return ts_ms


def _event_time(value: object) -> tuple[int, str]:
    """An event's timestamp -> (epoch ms, canonical text), range-checked.

    A canonical stamp (most clients', and the wire form's) takes the fast path
    and is kept as sent: it already is what format_timestamp_ms would make.
    """
    if isinstance(value, str) and len(value) == 24:
        fast = _canonical_ms(value)
        if fast is not None:
            return _in_event_time_range(fast), value
    ts_ms = parse_timestamp_ms(value)
    return ts_ms, format_timestamp_ms(ts_ms)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def format_timestamp_ms(ts_ms: int) -> str:
    """Epoch milliseconds -> canonical RFC 3339 UTC string with milliseconds."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def validate(raw: object) -> dict[str, Any]:
    """Check one decoded JSON value against schema v1.

    Returns a new dict with the contract fields (defaults filled in) and
    ``ts_ms``; raises EventError naming the field and the rule it breaks.
    """
    if not isinstance(raw, Mapping):
        raise EventError(None, f"an event must be a JSON object, got {type(raw).__name__}")
    unknown = raw.keys() - ALLOWED_FIELDS
    if unknown:
        raise EventError(sorted(unknown)[0], "unknown field (schema v1 rejects unknown top-level fields)")
    event: dict[str, Any] = {}
    for name, low, high in _REQUIRED_STRINGS:
        value = raw.get(name)
        if not isinstance(value, str):
            raise EventError(name, "is required and must be a string")
        if not low <= len(value) <= high:
            raise EventError(name, f"must be {low}-{high} characters long (got {len(value)})")
        event[name] = value
    for name in TOKEN_FIELDS:
        value = raw.get(name)
        if value is None and name in _OPTIONAL_INTS:
            value = 0
        if not isinstance(value, int) or isinstance(value, bool):
            req = "is required and " if name in _REQUIRED_INTS else ""
            raise EventError(name, f"{req}must be an integer")
        if not 0 <= value <= MAX_TOKENS:
            raise EventError(name, f"must be between 0 and {MAX_TOKENS:,} (got {value})")
        event[name] = value
    event["ts_ms"], event["timestamp"] = _event_time(raw.get("timestamp"))
    for name, high in _OPTIONAL_STRINGS:
        value = raw.get(name)
        if value is None:
            event[name] = ""
            continue
        if not isinstance(value, str) or len(value) > high:
            raise EventError(name, f"must be a string of at most {high} characters")
        event[name] = value
    event["latency_ms"] = _optional_latency(raw.get("latency_ms"))
    event["prompt_hash"] = _optional_prompt_hash(raw.get("prompt_hash"))
    event["cost_usd"] = _optional_cost(raw.get("cost_usd"))
    event["metadata"] = _optional_metadata(raw.get("metadata"))
    return event


def _optional_latency(value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_LATENCY_MS:  # type: ignore[operator]
        raise EventError("latency_ms", "must be a non-negative integer")
    return value  # type: ignore[return-value]


def _optional_prompt_hash(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise EventError("prompt_hash", "must be a hex digest of 1-128 characters (never the prompt)")
    return value.lower()


def _optional_cost(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError("cost_usd", "must be a number")
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise EventError("cost_usd", "must be a finite number between 0 and 1e9")
    return float(value)


def _optional_metadata(value: object) -> str:
    """Metadata travels and is stored as compact JSON text."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise EventError("metadata", "must be a JSON object")
    try:
        text = orjson.dumps(value)
    except TypeError as exc:  # non-string keys, say
        raise EventError("metadata", f"must be an object with string keys ({exc})") from None
    if len(text) > MAX_METADATA_BYTES:
        raise EventError("metadata", f"must serialise to at most 4 KiB (got {len(text)} bytes)")
    return text.decode()


def total_tokens(event: Mapping[str, Any]) -> int:
    """input + output + cache_read + cache_write (CONTRACT.md §1)."""
    return (
        event["input_tokens"]
        + event["output_tokens"]
        + event["cache_read_tokens"]
        + event["cache_write_tokens"]
    )


def org_prefixes(org_id: str) -> list[str]:
    """Every prefix of an org path: 'a/b/c' -> ['a', 'a/b', 'a/b/c'].

    Must match the ARRAY JOIN in infra/clickhouse/001_usage.sql.
    """
    parts = org_id.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def to_contract(event: Mapping[str, Any]) -> dict[str, Any]:
    """Wire form -> the public v1 JSON object (what a client would send)."""
    out = {name: event[name] for name in ("event_id", "timestamp", "user_id", "org_id", "model")}
    for name in TOKEN_FIELDS:
        out[name] = event[name]
    for name in ("provider", "client", "session_id", "prompt_hash"):
        if event.get(name):
            out[name] = event[name]
    if event.get("latency_ms") is not None:
        out["latency_ms"] = event["latency_ms"]
    if event.get("cost_source") == "event":
        out["cost_usd"] = event["cost_nanos"] / 1e9
    if event.get("metadata"):
        out["metadata"] = orjson.loads(event["metadata"])
    return out
