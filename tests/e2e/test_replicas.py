"""A second processor replica joins a running stack mid-stream (production runs any
number of `tokentrail worker` processes in one consumer group). Partitions move,
their state comes back from the changelogs on the new owner, and the totals stay
exact: every event processed once, every bucket summed once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.e2e.test_faults import expected_total, post_with_retries, total, traffic
from tests.helpers import RunningStack
from tokentrail.settings import Settings

pytestmark = pytest.mark.e2e


def stats_instances(bootstrap: str, topic: str, read_s: float = 10.0) -> set[str]:
    """The worker instances that published processor progress (the topic never goes
    quiet: every replica publishes on a timer, so read for a while)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: set[str] = set()
    deadline = time.monotonic() + read_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        doc = orjson.loads(msg.value() or b"{}")
        if doc.get("stage") == "processor":
            out.add(str(doc.get("instance", "")))
    consumer.close()
    return out


def test_a_second_worker_takes_partitions_and_totals_stay_exact(tmp_path: Path) -> None:
    stack = RunningStack(tmp_path / "stack").start()
    second: subprocess.Popen[bytes] | None = None
    try:
        events = traffic(60_000, seed=51)
        batches = [events[i:i + 2000] for i in range(0, len(events), 2000)]

        def send_all() -> None:
            with httpx.Client(base_url=stack.url, timeout=60) as client:
                for batch in batches:
                    post_with_retries(client, batch)
                    time.sleep(0.2)  # a stream, not one burst: the join happens mid-way

        sender = threading.Thread(target=send_all)
        sender.start()
        time.sleep(2)
        workdir = tmp_path / "worker-2"
        workdir.mkdir()
        env = {**stack.env, "TOKENTRAIL_KAFKA_BOOTSTRAP": stack.bootstrap, "TOKENTRAIL_DATA_DIR": str(workdir)}
        log = open(workdir / "worker.out", "wb")  # noqa: SIM115
        second = subprocess.Popen([sys.executable, "-m", "tokentrail.cli", "worker"], env=env, cwd=workdir,
                                  stdout=log, stderr=subprocess.STDOUT)
        sender.join(300)
        assert not sender.is_alive()
        snap = stack.wait_drained(expect_stored=len(events), expect_processed=len(events), timeout_s=240)
        time.sleep(3)  # stale progress from a replica that lost a partition would show now
        snap = stack.pipeline()
        assert second.poll() is None, (workdir / "worker.out").read_text()[-3000:]
        assert snap["stored"] == len(events)
        assert snap["processed"] == len(events)
        assert total(stack.client) == expected_total(events)
        instances = stats_instances(stack.bootstrap, Settings().stats_topic)
        assert any(i.endswith(f":{second.pid}") for i in instances), instances  # it did take partitions
    finally:
        if second is not None and second.poll() is None:
            os.kill(second.pid, signal.SIGTERM)
            try:
                second.wait(60)
            except subprocess.TimeoutExpired:
                second.kill()
        stack.stop()
