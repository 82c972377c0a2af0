"""A one-line progress report on stderr for long sends (replay, simulate)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, every_s: float = 1.0) -> None:
        self.label = label
        self.total = total
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        sys.stderr.write(f"\r{self.label}: {done:,}{of} events, {rate:,.0f}/s {extra}   ")
        sys.stderr.flush()

    def finish(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        sys.stderr.write("\n")
