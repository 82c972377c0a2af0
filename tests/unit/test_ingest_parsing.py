from __future__ import annotations

import orjson
import pytest

from api.ingest import BodyError, split_body, validate_items
from tokentrail.pricing import PriceTable

EVENT = {"event_id": "e1", "timestamp": "2026-11-23T09:15:02Z", "user_id": "u", "org_id": "o",
         "model": "gpt-5", "input_tokens": 1, "output_tokens": 1}


def test_array_and_ndjson_bodies() -> None:
    assert len(split_body(orjson.dumps([EVENT, EVENT]), ndjson=False, max_events=10)) == 2
    body = orjson.dumps(EVENT) + b"\n\n" + orjson.dumps(EVENT) + b"\n"
    assert len(split_body(body, ndjson=True, max_events=10)) == 2
    # NDJSON sent without its content type still works
    assert len(split_body(body, ndjson=False, max_events=10)) == 2


def test_unusable_bodies() -> None:
    with pytest.raises(BodyError) as info:
        split_body(b"hello world", ndjson=False, max_events=10)
    assert not info.value.too_large
    with pytest.raises(BodyError):
        split_body(b"   ", ndjson=True, max_events=10)
    with pytest.raises(BodyError) as info:
        split_body(orjson.dumps([EVENT] * 11), ndjson=False, max_events=10)
    assert info.value.too_large


def test_errors_by_index_keep_the_rest() -> None:
    body = orjson.dumps(EVENT) + b"\n{broken\n" + orjson.dumps({**EVENT, "input_tokens": -1})
    parsed = validate_items(split_body(body, ndjson=True, max_events=10), PriceTable.load())
    assert len(parsed.events) == 1
    assert [e["index"] for e in parsed.errors] == [1, 2]
    assert "not JSON" in parsed.errors[0]["error"] and "input_tokens" in parsed.errors[1]["error"]
    assert len(parsed.rejected_raw) == 2


def test_a_broken_json_array_is_a_400_not_a_partial_accept() -> None:
    pretty = b'[\n  {"event_id": "a"},\n  ' + orjson.dumps(EVENT)  # truncated: no closing bracket
    with pytest.raises(BodyError, match="not valid JSON") as info:
        split_body(pretty, ndjson=False, max_events=10)
    assert not info.value.too_large
