"""POST /v1/events: parse a body, validate each event, publish, report by index.

Pure parsing and validation live here; the route only does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tokentrail.envelope import encode_event
from tokentrail.errors import EventError
from tokentrail.pricing import PriceTable


class BodyError(ValueError):
    """The body as a whole is unusable (400), or too large (413 when too_large)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass
class Parsed:
    events: list[dict[str, Any]] = field(default_factory=list)  # wire form
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"index", "error"}
    rejected_raw: list[tuple[object, str]] = field(default_factory=list)  # for the dead-letter topic


def split_body(body: bytes, ndjson: bool, max_events: int) -> list[tuple[object, str | None]]:
    """Body -> [(decoded item or raw line, parse error or None)]."""
    stripped = body.strip()
    if not stripped:
        raise BodyError("empty body: send a JSON array or NDJSON of usage events")
    if not ndjson and stripped[:1] in (b"[", b"{"):
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            if stripped[:1] == b"[":  # a broken JSON array: NDJSON never starts with one
                raise BodyError(f"body is not valid JSON: {exc}") from None
            doc = None  # maybe NDJSON sent without its content type
        if isinstance(doc, list):
            _check_count(len(doc), max_events)
            return [(item, None) for item in doc]
        if isinstance(doc, dict):
            return [(doc, None)]
    lines = [line for line in stripped.split(b"\n") if line.strip()]
    _check_count(len(lines), max_events)
    items: list[tuple[object, str | None]] = []
    for line in lines:
        try:
            items.append((orjson.loads(line), None))
        except orjson.JSONDecodeError as exc:
            items.append((line.decode("utf-8", "replace"), f"line is not JSON: {exc}"))
    if all(err for _, err in items):
        raise BodyError("body is neither a JSON array nor NDJSON (no line parsed as JSON)")
    return items


def _check_count(n: int, max_events: int) -> None:
    if n > max_events:
        raise BodyError(f"{n:,} events in one request; the limit is {max_events:,}", too_large=True)


def validate_items(items: list[tuple[object, str | None]], prices: PriceTable) -> Parsed:
    parsed = Parsed()
    for index, (item, parse_error) in enumerate(items):
        error = parse_error
        if error is None:
            try:
                parsed.events.append(encode_event(item, prices))
                continue
            except EventError as exc:
                error = str(exc)
        parsed.errors.append({"index": index, "error": error})
        parsed.rejected_raw.append((item, error))
    return parsed
