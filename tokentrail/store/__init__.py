"""The history store: one interface, an embedded (chdb) and a server backend."""

from __future__ import annotations

from tokentrail.store.base import Store, StoreError, StoreUnavailable
from tokentrail.store.chdb_store import ChdbStore
from tokentrail.store.clickhouse_store import ClickHouseStore

__all__ = [
    "ChdbStore",
    "ClickHouseStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]


def open_store(data_dir: str | None, clickhouse_url: str | None) -> Store:
    """A server store when `clickhouse_url` is set, else chdb at `data_dir`.

    Migrations are not applied here; call `store.apply_migrations()` once at startup.
    """
    if clickhouse_url:
        return ClickHouseStore.from_url(clickhouse_url)
    if not data_dir:
        raise StoreError("open_store needs a chdb data_dir or a clickhouse_url")
    return ChdbStore(data_dir)
