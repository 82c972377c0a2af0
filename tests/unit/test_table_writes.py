"""Changelog records written by librdkafka must be what Faust itself writes."""

from __future__ import annotations

import orjson

from stream_processors import windows
from stream_processors.app import build
from stream_processors.table_writes import BufferedTable
from tokentrail.settings import Settings


def test_records_match_faust_serialisation() -> None:
    processors = build(Settings(), "127.0.0.1:9")  # no connection is made
    topic = processors.org_windows.changelog_topic
    key = windows.org_key("ü\"rg/x", 29_923_755)
    value = [None, [1, 2, 3, 4, 5, 15, 9000, {"0": 123456789012345678}], *[None] * 58]
    faust_key, _ = topic.prepare_key(key, None, None)
    faust_value, _ = topic.prepare_value(value, None, None)
    assert orjson.dumps(key) == faust_key
    assert orjson.dumps(value) == faust_value


def test_user_delta_records_match_faust_serialisation() -> None:
    """User windows are deltas: JSON key, value bytes stored as they are ("raw")."""
    from stream_processors.table_writes import _encode

    topic = build(Settings(), "127.0.0.1:9").user_windows.changelog_topic
    state = windows.UserWindows(2, 0, 3_600_000)
    state.fold([{"event_id": "e\"1", "ts_ms": 1_795_425_300_000, "user_id": "ü", "org_id": "a/b",
                 "input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 3, "cache_write_tokens": 4,
                 "cost_nanos": 5}])
    [(key, value)], _orgs = state.take_deltas(7, 9)
    assert orjson.dumps(key) == topic.prepare_key(key, None, None)[0]
    assert _encode(value) == value == topic.prepare_value(value, None, None)[0]
    assert orjson.loads(value) == [[{"ü": [1, 1, 2, 3, 4, 10, 5, "e\"1"]}], {"a/b": [1, 1, 2, 3, 4, 10, 5]}]


def test_raw_bytes_values_match_faust_too() -> None:
    from stream_processors.detection.agent import build as build_detector
    from stream_processors.table_writes import _encode

    topic = build_detector(Settings(), "127.0.0.1:9").states.changelog_topic
    state = b"\x00\x01 detector state"
    assert _encode(state) == topic.prepare_value(state, None, None)[0]
    assert orjson.dumps("user-1") == topic.prepare_key("user-1", None, None)[0]
    assert _encode(None) is None


class FakeTable:
    """Only what BufferedTable touches; no writer, so nothing is sent."""

    class Topic:
        def get_topic_name(self) -> str:
            return "t-changelog"

    def __init__(self) -> None:
        self.data: dict[str, object] = {"old": [1]}
        self.changelog_topic = self.Topic()
        self.sent: list[tuple[int, str, object]] = []

    def send_changelog(self, partition: int, key: str, value: object, value_serializer: str | None = None) -> None:
        self.sent.append((partition, key, value))


def test_each_key_written_once_per_batch_to_its_partition() -> None:
    table = FakeTable()
    buffered = BufferedTable(table)
    buffered.set(2, "a", [1])
    buffered.set(2, "a", [2])
    buffered.delete(3, "old")
    assert buffered.get("a") == [2] and buffered.get("old") is None
    assert buffered.flush() == 2
    assert table.sent == [(2, "a", [2]), (3, "old", None)]
    assert table.data == {"a": [2]}
