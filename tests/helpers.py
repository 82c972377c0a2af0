"""Shared test helpers: a running `tokentrail up`, HTTP calls, event factories."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from tokentrail.errors import TokenTrailError
from tokentrail.runtime.child import ChildStack, free_port
from tokentrail.runtime.topics import create_missing, pipeline_topics
from tokentrail.settings import Settings
from tokentrail.store import Store, open_store

__all__ = ["RunningStack", "free_port", "new_store", "read_all"]


def new_store(directory: Path) -> Store:
    """A fresh embedded store (chdb) in ``directory``, with every migration applied."""
    store = open_store(str(directory / "chdb"), None)
    store.apply_migrations()
    return store


class RunningStack(ChildStack):
    """`tokentrail up` as a real subprocess on a free port and its own data dir."""

    def start(self, timeout_s: float = 120) -> RunningStack:
        try:
            super().start(timeout_s)
        except TokenTrailError as exc:
            raise AssertionError(str(exc)) from None
        return self

    def stage_pids(self) -> list[int]:
        """Pids of our own children (broker and stages), from /proc."""
        assert self.process is not None
        return children_of(self.process.pid)

    def wait_drained(self, expect_stored: int, expect_processed: int | None = None, timeout_s: float = 180) -> dict:
        deadline = time.monotonic() + timeout_s
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                snap = self.pipeline()
            except (httpx.HTTPError, ValueError):  # the API is restarting
                time.sleep(0.5)
                continue
            done = snap["stored"] >= expect_stored
            if expect_processed is not None:
                done = done and snap["processed"] >= expect_processed
            if done:
                return snap
            time.sleep(0.5)
        raise AssertionError(f"pipeline not drained in {timeout_s} s: {snap}")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def post_ndjson(client: httpx.Client, events: list[Any]) -> httpx.Response:
    body = b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events)
    return client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})


def require_docker() -> None:
    """Skip the calling test cleanly when no Docker daemon is reachable."""
    import pytest

    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        pytest.skip(f"no Docker daemon reachable ({type(exc).__name__}: {exc}); testcontainers tests need one")


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records POSTs; answers `statuses` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        import http.server
        import threading

        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.statuses = list(statuses or [])
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    owner.attempts += 1
                    status = owner.statuses.pop(0) if owner.statuses else 200
                    if status == 200:
                        owner.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def isolated_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topics and groups of their own (one broker serves a whole test
    session), the topics created; quick group joins on Tansu."""
    tag = uuid.uuid4().hex[:8]
    s = Settings(**{
        "usage_topic": f"usage-{tag}", "dead_letter_topic": f"dlq-{tag}", "stats_topic": f"stats-{tag}",
        "alerts_topic": f"alerts-{tag}", "risk_topic": f"risk-{tag}", "sink_group": f"sink-{tag}",
        "alert_sink_group": f"as-{tag}", "sink_flush_s": 0.2, "session_timeout_ms": 2000, **overrides})
    create_missing(bootstrap, pipeline_topics(s))
    return s


def read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, Any]]:
    """(partition, decoded value) of every message of ``topic``, until it is quiet."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 8 << 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, Any]] = []
    quiet = 0
    while quiet < 6:
        msg = consumer.poll(0.5)
        if msg is None:
            quiet += 1
        elif msg.error() is None:
            quiet = 0
            out.append((int(msg.partition() or 0), orjson.loads(msg.value() or b"null")))
    consumer.close()
    return out


def run_until(stage: Any, predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    """Start a sink-like stage (start/stop), wait until ``predicate()``, stop it."""
    stage.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stage.stop()
    assert predicate(), getattr(stage, "stats", None)
