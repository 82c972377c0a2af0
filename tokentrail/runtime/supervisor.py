"""A small process supervisor: start stages, restart the ones that die.

Each stage is its own child process; when one exits unexpectedly it is
restarted after a back-off (1 s doubling to 30 s, reset after a minute of
healthy running). Restarts are logged and published to the stats topic (key
"supervisor") so GET /v1/pipeline reports them. Stages are stopped by their
own pids, in the order given (ingest/store process first so that it drains
what was accepted, then the processors).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff_s: float = 1.0
    history: list[float] = field(default_factory=list)

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT if out else None,
                                            start_new_session=True)  # Ctrl-C reaches us, not the stage directly
        finally:
            if out is not None:
                out.close()  # the child has its own copy; ours would leak one per restart
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokentrail.cli", *args]


class Supervisor:
    def __init__(self, stages: list[Stage], on_restart: object = None) -> None:
        self.stages = stages
        self.on_restart = on_restart
        self.stopping = False

    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    def check(self) -> None:
        """Restart stages that died; call this periodically."""
        now = time.monotonic()
        for stage in self.stages:
            proc = stage.process
            if proc is None or self.stopping:
                continue
            code = proc.poll()
            if code is None:
                if now - stage.started_at > 60:
                    stage.backoff_s = 1.0  # healthy for a minute: forget earlier trouble
                continue
            if stage.next_start == 0.0:
                stage.next_start = now + stage.backoff_s
                log.warning("%s (pid %d) exited with %s; restarting in %.0f s", stage.name, proc.pid, code,
                            stage.backoff_s)
                continue
            if now >= stage.next_start:
                stage.restarts += 1
                stage.history.append(time.time())
                stage.backoff_s = min(stage.backoff_s * 2, 30.0)
                stage.next_start = 0.0
                stage.start()
                if callable(self.on_restart):
                    self.on_restart(self.restarts())

    def restarts(self) -> dict[str, int]:
        return {s.name: s.restarts for s in self.stages}

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM each stage in order and wait for it; SIGKILL if it hangs."""
        self.stopping = True
        for stage in self.stages:
            proc = stage.process
            if proc is None or proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s; killing it", stage.name, proc.pid, timeout_s)
                proc.kill()
                proc.wait(10)
