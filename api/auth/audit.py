"""The audit log: who read per-person data, buffered, flushed in batches.

`record` only appends to a list, so reads are not slowed by the store; a
background thread (started on first use) writes the buffer with ONE insert
every `flush_s` seconds, or sooner once `flush_rows` rows are waiting.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from tokentrail.store import Store, StoreError

log = logging.getLogger(__name__)
COLUMNS: Final = ("at", "token_id", "role", "method", "endpoint", "filters", "status", "result_size")
MAX_BUFFERED: Final = 100_000  # while the store is down, keep at most this many rows


class AuditLog:
    def __init__(self, store: Store, flush_s: float = 1.0, flush_rows: int = 1000) -> None:
        self.store = store
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self.dropped = 0
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, token_id: str, role: str, method: str, endpoint: str, filters: dict[str, Any],
               status: int, result_size: int) -> None:
        row = (datetime.now(UTC), token_id, role, method, endpoint,
               orjson.dumps(filters, option=orjson.OPT_SORT_KEYS).decode(), status, max(0, result_size))
        with self._lock:
            if len(self._rows) >= MAX_BUFFERED:
                self.dropped += 1
                return
            self._rows.append(row)
            full = len(self._rows) >= self.flush_rows
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written (kept on failure)."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            try:
                self.store.insert("audit_log", COLUMNS, rows)
            except StoreError as exc:
                log.warning("audit log flush failed (%s); will retry", exc)
                with self._lock:
                    self._rows[:0] = rows
                return 0
            return len(rows)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()
