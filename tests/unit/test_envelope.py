from __future__ import annotations

import zlib

import orjson

from tokentrail.envelope import (
    FORMAT_HEADER,
    build_envelopes,
    decode_envelope,
    encode_event,
    from_our_producers,
    partition_for,
)
from tokentrail.pricing import PriceTable

PRICES = PriceTable.load()


def raw(i: int, user: str) -> dict[str, object]:
    return {"event_id": f"e{i}", "timestamp": "2026-11-23T09:15:02Z", "user_id": user, "org_id": "o",
            "model": "gpt-5", "input_tokens": i, "output_tokens": 1}


def test_partition_matches_librdkafka_consistent_hash() -> None:
    assert partition_for("alice", 7) == zlib.crc32(b"alice") % 7


def test_envelopes_keep_per_partition_order_and_respect_limits() -> None:
    events = [encode_event(raw(i, f"u{i % 5}"), PRICES) for i in range(100)]
    envs = list(build_envelopes(events, 3, max_events=10))
    assert sum(n for _, _, n in envs) == 100
    assert all(n <= 10 for _, _, n in envs)
    for p in range(3):
        ids = [e["event_id"] for part, value, _ in envs if part == p for e in orjson.loads(value)]
        expected = [e["event_id"] for e in events if partition_for(e["user_id"], 3) == p]
        assert ids == expected


def test_decode_trusts_wire_form_and_validates_plain_events() -> None:
    wire = encode_event(raw(1, "u"), PRICES)
    value = orjson.dumps([wire, raw(2, "u"), {"event_id": "bad"}])
    good, bad = decode_envelope(value, PRICES, trusted=True)
    assert [e["event_id"] for e in good] == ["e1", "e2"]
    assert good[1]["cost_source"] == "price_table"
    assert len(bad) == 1 and bad[0][1].startswith("field ")
    assert decode_envelope(b"not json", PRICES)[1][0][1].startswith("message is not JSON")
    single, _ = decode_envelope(orjson.dumps(raw(3, "u")), PRICES)
    assert single[0]["event_id"] == "e3"


def test_decode_all_wire_envelope_and_a_wire_lookalike_missing_a_field() -> None:
    wire = [encode_event(raw(i, "u"), PRICES) for i in range(3)]
    good, bad = decode_envelope(orjson.dumps(wire), PRICES, trusted=True)
    assert good == wire and bad == []
    partial = {k: v for k, v in wire[0].items() if k != "cost_source"}  # not wire form: validated as v1
    broken = {**partial, "input_tokens": "many"}
    good, bad = decode_envelope(orjson.dumps([wire[1], partial, broken, 7, raw(9, "u")]), PRICES, trusted=True)
    assert good == [wire[1], encode_event(raw(9, "u"), PRICES)]
    assert [item for item, _ in bad] == [partial, broken, 7] and "unknown field" in bad[0][1]


def test_wire_form_is_trusted_only_from_our_producers() -> None:
    """A message without our header: a wire-form look-alike is validated and priced like
    a plain event, so a malformed one is dead-lettered instead of reaching the processors."""
    wire = encode_event(raw(1, "u"), PRICES)
    lookalike = {"ts_ms": 1, "cost_nanos": 5, "cost_source": "client"}  # no event_id, user, ...
    forged = {**encode_event(raw(2, "u"), PRICES), "cost_nanos": 1}  # a cost of its own making
    value = orjson.dumps([wire, lookalike, forged])
    good, bad = decode_envelope(value, PRICES)
    assert good == [wire, encode_event(raw(2, "u"), PRICES)]  # wire fields computed again
    assert [item for item, _ in bad] == [lookalike] and "required" in bad[0][1]
    assert decode_envelope(value, PRICES, trusted=True)[0] == [wire, lookalike, forged]
    rich = encode_event({**raw(3, "u"), "cost_usd": 0.25, "metadata": {"team": "x"}, "prompt_hash": "ab",
                         "latency_ms": 7}, PRICES)
    assert decode_envelope(orjson.dumps([rich]), PRICES) == ([rich], [])  # the client's cost stays
    fake = {**rich, "cost_nanos": 2.5e8}
    assert decode_envelope(orjson.dumps([fake]), PRICES)[1] == [(fake, "field 'cost_nanos': must be an integer")]
    assert from_our_producers([FORMAT_HEADER]) and from_our_producers([("x", b"1"), FORMAT_HEADER])
    assert not from_our_producers(None) and not from_our_producers([])
    assert not from_our_producers([("tt-format", b"v0")])
