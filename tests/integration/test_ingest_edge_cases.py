"""POST /v1/events with hostile bodies, against the real embedded broker: never a 500.

Each case ends with the answer the contract promises (202 with the bad event
reported by index, or 400 for a body that is not JSON/NDJSON) and, for rejected
events, a dead letter on the broker that says why.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.context import ApiContext
from tests.helpers import isolated_settings, new_store, read_all
from tokentrail.envelope import DEAD_LETTER_MAX_INPUT
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.settings import Settings

pytestmark = pytest.mark.integration

GOOD = {"event_id": "ok-1", "timestamp": "2026-11-23T09:15:02Z", "user_id": "u", "org_id": "acme",
        "model": "gpt-5", "input_tokens": 1, "output_tokens": 1}


@pytest.fixture(scope="module")
def setup(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    s = isolated_settings(broker.bootstrap, partitions=2, produce_timeout_s=20)
    store = new_store(tmp_path_factory.mktemp("ingest"))
    ctx = ApiContext(settings=s, bootstrap=broker.bootstrap, store=store, prices=PriceTable.load(None),
                     publisher=Publisher(broker.bootstrap, s.usage_topic))
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        yield client, s
    ctx.publisher.close(10)
    store.close()


def test_hostile_bodies_get_the_promised_answers(setup: tuple[TestClient, Settings], broker: EmbeddedBroker) -> None:
    client, s = setup
    deep = "[" * 1000 + "]" * 1000  # parses (orjson reads 1024 levels); nested deeper than encoders write
    meta = '{"a":' * 300 + "1" + "}" * 300
    nested_meta = orjson.dumps({**GOOD, "event_id": "meta"}).decode()[:-1] + f', "metadata": {meta}}}'
    body = "\n".join([deep, orjson.dumps(GOOD).decode(), nested_meta]).encode()
    resp = client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 1 and [e["index"] for e in resp.json()["errors"]] == [0, 2]

    huge = {**GOOD, "event_id": "x" * (4 << 20)}  # one invalid event of 4 MiB, inside the 5 MiB body
    resp = client.post("/v1/events", content=orjson.dumps([huge, {**GOOD, "event_id": "ok-2"}]))
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 1 and resp.json()["errors"][0]["index"] == 0
    assert "event_id" in resp.json()["errors"][0]["error"]

    truncated = b'[\n  {"event_id": "a"},\n  ' + orjson.dumps({**GOOD, "event_id": "ok-3"})
    resp = client.post("/v1/events", content=truncated)
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["detail"]

    letters = [value for _, value in read_all(broker.bootstrap, s.dead_letter_topic, 1)]
    assert len(letters) == 3 and all(d["stage"] == "ingest" and d["reason"] for d in letters)
    too_deep, meta, big = letters
    assert too_deep["input_truncated"] and "nested" in too_deep["input_note"]
    assert meta["input"]["event_id"] == "meta"  # the stdlib encoder keeps what orjson cannot
    assert big["input_truncated"] and big["input_bytes"] > 4 << 20
    assert len(big["input_head"]) <= DEAD_LETTER_MAX_INPUT
