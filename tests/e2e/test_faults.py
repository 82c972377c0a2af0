"""Fault injection on real processes: kill -9 of each stage but the broker,
stop/start of the whole stack on the same data dir, late and shuffled events.
Every scenario ends with exact totals."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.simulator import simulate
from tests.helpers import RunningStack, post_ndjson
from tokentrail.events import total_tokens, validate

pytestmark = pytest.mark.e2e
START_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z
DAY_PARAMS = {"granularity": "day", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def traffic(n: int, seed: int, start_ms: int = START_MS) -> list[dict[str, Any]]:
    out = []
    for event in simulate(seed, humans=60, days=1.0, start_ms=start_ms, bots_per_archetype=1):
        out.append({**event, "event_id": f"s{seed}-{event['event_id']}"})
        if len(out) == n:
            break
    return out


def post_with_retries(client: httpx.Client, batch: list[dict[str, Any]], timeout_s: float = 180) -> None:
    """What a real client does: re-send the same batch until a 202."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if post_ndjson(client, batch).status_code == 202:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("batch never accepted")


def total(client: httpx.Client, **params: str) -> int:
    resp = client.get("/v1/usage", params={**DAY_PARAMS, **params})
    assert resp.status_code == 200, resp.text
    return sum(p["total_tokens"] for s in resp.json()["series"] for p in s["points"])


def expected_total(events: list[dict[str, Any]]) -> int:
    return sum(total_tokens(validate(e)) for e in events)


def stage_pid(stack: RunningStack, name: str) -> int:
    for pid in stack.stage_pids():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if name.encode() in cmdline:
            return pid
    raise AssertionError(f"no {name} stage")


@pytest.mark.parametrize("victim", ["worker", "serve"])
def test_kill_9_mid_stream_counts_each_event_once(victim: str, tmp_path: Path) -> None:
    stack = RunningStack(tmp_path).start()
    try:
        events = traffic(40_000, seed=11 if victim == "worker" else 12)
        batches = [events[i : i + 2000] for i in range(0, len(events), 2000)]

        def send_all() -> None:
            with httpx.Client(base_url=stack.url, timeout=60) as client:
                for batch in batches:
                    post_with_retries(client, batch)

        sender = threading.Thread(target=send_all)
        sender.start()
        time.sleep(3)  # mid-stream
        os.kill(stage_pid(stack, victim), signal.SIGKILL)
        sender.join(300)
        assert not sender.is_alive()
        snap = stack.wait_drained(expect_stored=len(events), expect_processed=len(events), timeout_s=240)
        assert snap["stored"] == len(events)
        assert snap["processed"] == len(events)
        assert snap["restarts"].get(victim, 0) >= 1
        assert total(stack.client) == expected_total(events)
    finally:
        stack.stop()


def test_stop_and_start_on_same_data_dir_keeps_history(tmp_path: Path) -> None:
    first = traffic(10_000, seed=21)
    stack = RunningStack(tmp_path).start()
    for i in range(0, len(first), 5000):
        assert post_ndjson(stack.client, first[i : i + 5000]).status_code == 202
    stack.wait_drained(expect_stored=len(first))
    assert stack.stop() == 0

    stack = RunningStack(tmp_path).start()
    try:
        second = traffic(5_000, seed=22)
        assert post_ndjson(stack.client, second + first[:1000]).status_code == 202  # old ones re-sent
        stack.wait_drained(expect_stored=len(first) + len(second))
        time.sleep(2)  # give a wrong re-count the chance to show
        assert stack.pipeline()["stored"] == len(first) + len(second)
        assert total(stack.client) == expected_total(first + second)
    finally:
        stack.stop()


def test_late_and_shuffled_events_land_in_their_event_time_buckets(tmp_path: Path) -> None:
    stack = RunningStack(tmp_path).start()
    try:
        recent = traffic(6_000, seed=31, start_ms=START_MS + 3 * 86_400_000)  # 2026-11-26
        late = traffic(3_000, seed=32, start_ms=START_MS - 2 * 86_400_000)  # 2026-11-21: days late
        random.Random(3).shuffle(recent)
        assert post_ndjson(stack.client, recent).status_code == 202
        stack.wait_drained(expect_stored=len(recent), expect_processed=len(recent))
        assert post_ndjson(stack.client, late).status_code == 202
        snap = stack.wait_drained(expect_stored=len(recent) + len(late))
        deadline = time.monotonic() + 30
        while snap["late_events"] < len(late) and time.monotonic() < deadline:
            time.sleep(0.5)
            snap = stack.pipeline()
        assert snap["late_events"] == len(late)  # counted, not silently dropped
        assert snap["processed"] == len(recent)
        resp = stack.client.get("/v1/usage", params=DAY_PARAMS)
        by_day = {p["t"][:10]: p["total_tokens"] for s in resp.json()["series"] for p in s["points"]}
        assert by_day.get("2026-11-21", 0) + by_day.get("2026-11-22", 0) == expected_total(late)
        assert by_day.get("2026-11-26", 0) + by_day.get("2026-11-27", 0) == expected_total(recent)
    finally:
        stack.stop()
