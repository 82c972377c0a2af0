"""`tokentrail up` as a child process: a whole embedded stack for a tool or a test.

Used by `tokentrail evaluate --pipeline` and the benchmarks (and the test
suite), which need the real pipeline, started on a free 127.0.0.1 port in a
data dir of their own, and stopped by the pid they started.
"""

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

from tokentrail.errors import TokenTrailError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildStack:
    """`tokentrail up --port P --data-dir D`, its output in ``D/up.out``."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TOKENTRAIL_LOG_LEVEL": "WARNING", "TOKENTRAIL_STATS_INTERVAL_S": "0.5",
                    **(extra_env or {})}
        self.env.pop("TOKENTRAIL_KAFKA_BOOTSTRAP", None)  # its own embedded broker, always
        self.process: subprocess.Popen[bytes] | None = None
        headers = {"Authorization": f"Bearer {self.env['TOKENTRAIL_ADMIN_TOKEN']}"} \
            if self.env.get("TOKENTRAIL_ADMIN_TOKEN") else {}
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=headers)

    def start(self, timeout_s: float = 120) -> ChildStack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "up.out", "ab")  # noqa: SIM115 (the child writes to it until it stops)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokentrail.cli", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TokenTrailError(f"tokentrail up exited with {self.process.returncode}:\n{self.output()}")
            if (self.data_dir / "runtime.json").exists():
                try:
                    if self.client.get("/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise TokenTrailError(f"stack not ready in {timeout_s} s:\n{self.output()}")

    @property
    def bootstrap(self) -> str:
        return str(orjson.loads((self.data_dir / "runtime.json").read_bytes())["bootstrap"])

    def output(self) -> str:
        path = self.data_dir / "up.out"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM (a graceful stop: drain, then stop the broker); SIGKILL after ``timeout_s``."""
        if self.process is None:
            return 0
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

    def __enter__(self) -> ChildStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
