"""End to end on the real embedded stack: POST -> Kafka -> Faust + sink -> chdb -> /v1/usage.

One `tokentrail up` for the module: 100,000 simulated events (5% re-sent, 50
invalid) go in through POST /v1/events; the totals that come out are exact.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from producers.simulator import simulate
from tests.helpers import RunningStack, alive, post_ndjson
from tokentrail.envelope import encode_event, partition_for
from tokentrail.events import total_tokens, validate
from tokentrail.pricing import PriceTable
from tokentrail.settings import Settings

pytestmark = pytest.mark.e2e

START_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z
N_EVENTS = 100_000
N_INVALID = 50


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = RunningStack(tmp_path_factory.mktemp("e2e")).start()
    yield s
    s.stop()


def make_traffic() -> tuple[list[Any], list[dict[str, Any]], int]:
    """(what to send, the distinct valid events, how many invalid)."""
    rng = random.Random(7)
    valid: list[dict[str, Any]] = []
    for event in simulate(5, humans=120, days=1.0, start_ms=START_MS, bots_per_archetype=1):
        valid.append(event)
        if len(valid) == N_EVENTS - N_INVALID:
            break
    sent: list[Any] = list(valid)
    sent += rng.sample(valid, len(valid) // 20)  # 5% re-sent
    invalid = [{**valid[i], "event_id": f"bad-{i}", "input_tokens": -1} for i in range(N_INVALID // 2)]
    invalid += [b"{not json at all" for _ in range(N_INVALID - len(invalid))]
    sent += invalid
    rng.shuffle(sent)
    return sent, valid, N_INVALID


def test_exact_usage_end_to_end(stack: RunningStack) -> None:
    sent, valid, n_invalid = make_traffic()
    accepted = rejected = 0
    for i in range(0, len(sent), 5000):
        resp = post_ndjson(stack.client, sent[i : i + 5000])
        assert resp.status_code == 202, resp.text
        body = resp.json()
        accepted += body["accepted"]
        rejected += body["rejected"]
        for err in body["errors"]:
            assert 0 <= err["index"] < 5000 and err["error"]
    assert rejected == n_invalid
    assert accepted == len(sent) - n_invalid

    snap = stack.wait_drained(expect_stored=len(valid), expect_processed=len(valid))
    assert snap["stored"] == len(valid)  # re-sent events stored once
    assert snap["processed"] == len(valid)  # and counted once in live windows
    assert snap["stages"]["processor"]["duplicates"] >= len(valid) // 20 - 1

    # Per-user daily totals, to the token.
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for e in valid:
        w = validate(e)
        expected[(w["user_id"], w["timestamp"][:10])] += total_tokens(w)
    resp = stack.client.get("/v1/usage", params={"group_by": "user", "granularity": "day",
                                                 "from": "2026-11-22T00:00:00Z", "to": "2026-11-26T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    got = {(s["key"]["user_id"], p["t"][:10]): p["total_tokens"] for s in resp.json()["series"] for p in s["points"]}
    assert got == dict(expected)

    # Org roll-up: the root org equals the sum of everything.
    root = valid[0]["org_id"].split("/")[0]
    resp = stack.client.get("/v1/usage", params={"org_id": root, "granularity": "day",
                                                 "from": "2026-11-22T00:00:00Z", "to": "2026-11-26T00:00:00Z"})
    org_total = sum(p["total_tokens"] for s in resp.json()["series"] for p in s["points"])
    assert org_total == sum(
        total_tokens(validate(e)) for e in valid if e["org_id"].split("/")[0] == root)

    # The invalid events are in the dead-letter topic, with reasons.
    letters = read_topic(stack.bootstrap, "tokentrail.dead-letter", n_invalid)
    reasons = Counter("input_tokens" in letter["reason"] or "not JSON" in letter["reason"] for letter in letters)
    assert reasons[True] == n_invalid


def test_messages_not_from_our_producers_are_validated_not_trusted(stack: RunningStack) -> None:
    """A third party writes to the usage topic directly (no format header): plain and
    wire-form events are validated and counted, and a malformed wire-form look-alike,
    which would stop every stage if it were trusted, is dead-lettered."""
    prices = PriceTable.load()
    before = stack.pipeline()
    pids = sorted(stack.stage_pids())
    plain = {"event_id": "tp-1", "timestamp": "2026-11-23T10:00:00Z", "user_id": "tp-user", "org_id": "tp",
             "model": "gpt-5", "input_tokens": 5, "output_tokens": 1}
    wire = encode_event({**plain, "event_id": "tp-2"}, prices)
    forged = {**wire, "cost_nanos": 1}  # not trusted: priced again
    lookalike = {"ts_ms": START_MS, "cost_nanos": 1, "cost_source": "price_table", "note": "tp-3"}
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    producer.produce(Settings().usage_topic, value=orjson.dumps([plain, lookalike, forged]),
                     partition=partition_for("tp-user", Settings().partitions))
    assert producer.flush(30) == 0
    snap = stack.wait_drained(expect_stored=before["stored"] + 2, expect_processed=before["processed"] + 2)
    assert (snap["stored"], snap["processed"]) == (before["stored"] + 2, before["processed"] + 2)
    letters = read_topic(stack.bootstrap, "tokentrail.dead-letter", 0, until=lambda x: x.get("input") == lookalike)
    assert [letter["reason"] for letter in letters if letter.get("input") == lookalike] == [
        "field 'note': unknown field (schema v1 rejects unknown top-level fields)"]
    resp = stack.client.get("/v1/usage", params={"org_id": "tp", "granularity": "day",
                                                 "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"})
    points = [p for s in resp.json()["series"] for p in s["points"]]
    assert [(p["total_tokens"], p["cost_usd"]) for p in points] == [(12, 2 * wire["cost_nanos"] / 1e9)]
    assert sorted(stack.stage_pids()) == pids  # no stage crashed on it


def test_bad_bodies_are_4xx_never_5xx(stack: RunningStack) -> None:
    c = stack.client
    assert c.post("/v1/events", content=b"hello").status_code == 400
    assert c.post("/v1/events", content=b"").status_code == 400
    big = b"[" + b",".join([b"{}"] * 10_001) + b"]"
    assert c.post("/v1/events", content=big).status_code == 413
    assert c.post("/v1/events", content=b"x" * (5 * 1024 * 1024 + 1)).status_code == 413
    assert c.get("/v1/usage", params={"granularity": "week"}).status_code == 400
    assert c.get("/v1/usage", params={"from": "yesterday"}).status_code == 400
    assert c.get("/v1/usage", params={"group_by": "nope"}).status_code == 400


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    s = RunningStack(tmp_path).start()
    try:
        pids = s.stage_pids()
        assert len(pids) == 4  # broker, serve, worker, detector
    finally:
        code = s.stop()  # even when the count is off: never leave a stack running
    assert code == 0
    assert not any(alive(pid) for pid in pids)


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30,
               until: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """The topic's first ``expect`` records; with ``until``, the records up to the first it accepts."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    try:
        import time

        deadline = time.monotonic() + timeout_s
        while (until is not None or len(out) < expect) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(orjson.loads(msg.value()))
                if until is not None and until(out[-1]):
                    break
    finally:
        consumer.close()
    return out
