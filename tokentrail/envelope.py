"""Kafka message format on the usage topic: a batch envelope of wire events.

One Kafka message carries many validated events of ONE partition, as a JSON
array. Batching is what makes the pipeline fast: per-message overhead in the
broker, the Faust runtime and the sink is paid once per few hundred events.
Events are partitioned by ``crc32(user_id) % partitions`` — the same hash as
librdkafka's ``consistent`` partitioner — so a user's events stay in order on
one partition whichever producer sent them.

Consumers also accept a single JSON object and contract-form events (without
the computed wire fields) so that third-party producers can write plain v1
events to the topic; those are validated and priced on the way in. Wire-form
items are taken as they are only from messages that carry ``FORMAT_HEADER``
(our producers validated them at the edge): in any other message a wire-form
item is validated and priced like a plain one, so a malformed look-alike is
dead-lettered instead of stopping every stage that reads the topic.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import orjson

from tokentrail.errors import EventError
from tokentrail.events import validate
from tokentrail.pricing import PriceTable, apply_cost

FORMAT_HEADER: Final = ("tt-format", b"usage.v1.batch")
MAX_EVENTS_PER_MESSAGE: Final = 1000
MAX_BYTES_PER_MESSAGE: Final = 512 * 1024
DEAD_LETTER_MAX_INPUT: Final = 256 * 1024  # bytes of an offending input kept in its dead letter
MAX_REASON_CHARS: Final = 2000
_WIRE_KEYS: Final = frozenset(("ts_ms", "cost_nanos", "cost_source"))
_COMPUTED_KEYS: Final = _WIRE_KEYS | {"price_version"}  # what encode_event adds to a contract event


def partition_for(user_id: str, partitions: int) -> int:
    return zlib.crc32(user_id.encode()) % partitions


def encode_event(raw: object, prices: PriceTable) -> dict[str, Any]:
    """Validate one contract event and compute its wire fields (the edge step)."""
    event = validate(raw)
    apply_cost(event, prices)
    return event


def build_envelopes(
    events: Iterable[dict[str, Any]],
    partitions: int,
    max_events: int = MAX_EVENTS_PER_MESSAGE,
    max_bytes: int = MAX_BYTES_PER_MESSAGE,
) -> Iterator[tuple[int, bytes, int]]:
    """Group wire events by partition into (partition, message value, count).

    Order within a partition is kept, so per-user order is kept.
    """
    by_partition: dict[int, list[bytes]] = {}
    sizes: dict[int, int] = {}
    for event in events:
        p = partition_for(event["user_id"], partitions)
        encoded = orjson.dumps(event)
        bucket = by_partition.setdefault(p, [])
        if bucket and (len(bucket) >= max_events or sizes[p] + len(encoded) > max_bytes):
            yield p, _join(bucket), len(bucket)
            bucket.clear()
            sizes[p] = 0
        bucket.append(encoded)
        sizes[p] = sizes.get(p, 0) + len(encoded) + 1
    for p, bucket in by_partition.items():
        if bucket:
            yield p, _join(bucket), len(bucket)


def _join(encoded: list[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"


def from_our_producers(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    """Whether a message's headers say that our producers built it (``FORMAT_HEADER``).

    A format marker, not authentication: whoever can write to the usage topic
    can set it (Kafka ACLs are what keep others out)."""
    return bool(headers) and FORMAT_HEADER in headers  # type: ignore[operator]


def decode_envelope(value: bytes | None, prices: PriceTable,
                    trusted: bool = False) -> tuple[list[dict[str, Any]], list[tuple[object, str]]]:
    """Message value -> (wire events, [(raw item, error)] for the dead-letter topic).

    ``trusted``: the message comes from our producers (``from_our_producers``),
    so its wire-form items were validated at the edge and are taken as they are.
    """
    if not value:
        return [], [(value, "empty message")]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [], [(value, f"message is not JSON: {exc}")]
    if trusted and type(doc) is list:
        for item in doc:
            if type(item) is not dict or "ts_ms" not in item or "cost_nanos" not in item or "cost_source" not in item:
                break
        else:
            return doc, []  # all wire form (what producers send): validated at the edge, trusted inside
    items = doc if isinstance(doc, list) else [doc]
    good: list[dict[str, Any]] = []
    bad: list[tuple[object, str]] = []
    for item in items:
        if trusted and isinstance(item, dict) and item.keys() >= _WIRE_KEYS:
            good.append(item)  # validated at the edge; trusted inside
            continue
        try:
            good.append(encode_event(_contract_form(item), prices))
        except EventError as exc:
            bad.append((item, str(exc)))
    return good, bad


def _contract_form(item: object) -> object:
    """An untrusted wire-form item back in contract form, for ``encode_event``
    to validate it and compute its wire fields again. Its cost counts as sent
    by the client only when it says so (``cost_source`` "event")."""
    if not isinstance(item, dict) or not item.keys() >= _WIRE_KEYS:
        return item  # not wire form: validated as it is
    event = {k: v for k, v in item.items() if k not in _COMPUTED_KEYS}
    if event.get("prompt_hash") == "":  # wire form of "none"
        del event["prompt_hash"]
    metadata = event.get("metadata")
    if metadata == "":
        event["metadata"] = None
    elif isinstance(metadata, str):  # wire metadata is JSON text; if it is not, validation says so
        with contextlib.suppress(orjson.JSONDecodeError):
            event["metadata"] = orjson.loads(metadata)
    if item["cost_source"] == "event":
        nanos = item["cost_nanos"]
        if type(nanos) is not int:
            raise EventError("cost_nanos", "must be an integer")
        event["cost_usd"] = nanos / 1e9
    return event


def dead_letter(raw: object, reason: str, stage: str) -> bytes:
    """Dead-letter record: the offending input, the reason, where and when.

    Whatever the input, the record is valid JSON of bounded size (the broker takes
    4 MiB at most): an input whose JSON is over ``DEAD_LETTER_MAX_INPUT`` bytes is
    kept as its first bytes (``input_head``, ``input_truncated``, ``input_bytes``),
    one nested deeper than JSON encoders go as a note saying so.
    """
    payload = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    head = {"reason": reason[:MAX_REASON_CHARS], "stage": stage, "at_ms": int(time.time() * 1000)}
    text = _as_json(payload)
    if text is None:
        return orjson.dumps({**head, "input_truncated": True,
                             "input_note": "nested deeper than a JSON encoder goes; not kept"})
    if len(text) > DEAD_LETTER_MAX_INPUT:
        return orjson.dumps({**head, "input_head": text[:DEAD_LETTER_MAX_INPUT].decode("utf-8", "ignore"),
                             "input_truncated": True, "input_bytes": len(text)})
    return orjson.dumps(head)[:-1] + b',"input":' + text + b"}"


def _as_json(payload: object) -> bytes | None:
    try:
        return orjson.dumps(payload, default=str)
    except (orjson.JSONEncodeError, TypeError):
        pass  # orjson stops at 254 levels; the stdlib encoder goes to the recursion limit
    try:
        return json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8", "replace")
    except (RecursionError, ValueError, TypeError):
        return None
