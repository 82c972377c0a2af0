"""Shared test helpers: a running `tokentrail up`, HTTP calls, event factories."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningStack:
    """`tokentrail up` as a real subprocess on a free port and its own data dir."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TOKENTRAIL_LOG_LEVEL": "WARNING", "TOKENTRAIL_STATS_INTERVAL_S": "0.5",
                    **(extra_env or {})}
        self.env.pop("TOKENTRAIL_KAFKA_BOOTSTRAP", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self, timeout_s: float = 120) -> RunningStack:
        log = open(self.data_dir / "up.out", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokentrail.cli", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            if (self.data_dir / "runtime.json").exists():
                try:
                    if self.client.get("/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise AssertionError(f"stack not ready in {timeout_s} s:\n{self.output()}")

    @property
    def bootstrap(self) -> str:
        return str(orjson.loads((self.data_dir / "runtime.json").read_bytes())["bootstrap"])

    def output(self) -> str:
        path = self.data_dir / "up.out"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stage_pids(self) -> list[int]:
        """Pids of our own children (broker and stages), from /proc."""
        assert self.process is not None
        return children_of(self.process.pid)

    def stop(self, timeout_s: float = 90) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()
        return int(self.process.returncode)

    def pipeline(self) -> dict[str, Any]:
        return dict(self.client.get("/v1/pipeline").json())

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
