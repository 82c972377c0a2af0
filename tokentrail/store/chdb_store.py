"""Embedded backend: chdb (ClickHouse in-process) on a persistent data dir.

chdb is driven through clickhouse-connect's chdb interface, which reads results
in ClickHouse's Native format and decodes them into typed Python values, the
same decoder the server backend uses.

chdb rules the rest of the code must live with:
- one process owns a data dir: chdb flocks `<data_dir>/status`;
- one data dir per process: a second, different path fails until the first
  store is closed;
- one connection serves every thread, so calls are serialized here.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from tokentrail.store.base import StoreUnavailable
from tokentrail.store.clickhouse_store import ClickHouseStore


class ChdbStore(ClickHouseStore):
    """A Store on an embedded chdb engine rooted at `data_dir`."""

    def __init__(self, data_dir: str):
        path = Path(data_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=str(path), tz_mode="aware")
        except ClickHouseError as exc:
            raise StoreUnavailable(_explain_open_failure(path, exc)) from exc
        # clickhouse-connect also locks its chdb handle, but the API threads and
        # the sink thread sharing one store must not depend on that detail.
        super().__init__(client, lock=threading.Lock())
        self.data_dir = path


def _explain_open_failure(path: Path, exc: Exception) -> str:
    """Turn chdb's terse open errors into ones that say what to do."""
    owner = _other_process_owner(path)
    if owner is not None:
        return (
            f"chdb data dir {path} is already in use by another process ({owner}); "
            "only one process may own a chdb data dir - stop it or use another dir"
        )
    if "already initialized with path" in str(exc):
        return (
            f"cannot open chdb at {path}: this process already has a different chdb "
            f"data dir open and chdb allows one per process - close that store first ({exc})"
        )
    return f"cannot open chdb at {path}: {exc}"


def _other_process_owner(path: Path) -> str | None:
    """Describe the process holding chdb's flock on `status`, if one does.

    Only called after an open failed, so a held lock cannot be our own.
    """
    status = path / "status"
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                first_line = handle.readline().decode(errors="replace").strip()
                return first_line or "pid unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None
