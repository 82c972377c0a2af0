"""The chdb backend against a real embedded engine in a temporary data dir.

The `check_*` functions take any migrated Store; the server backend's tests
(test_store_clickhouse_server.py) run the very same checks.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokentrail.store import ChdbStore, Store, StoreError, StoreUnavailable, open_store
from tokentrail.store.migrations import ddl_dir

pytestmark = pytest.mark.integration

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
COLUMNS = [
    "event_id", "ts", "user_id", "org_id", "model", "provider", "client", "session_id",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "total_tokens", "cost_nanos", "cost_source", "price_version", "latency_ms",
    "prompt_hash", "metadata", "ingested_at",
]  # fmt: skip
HOSTILE = [
    "a'b", "c\\d", "'; DROP TABLE usage_events; --", "line\nbreak\ttab\r", "ünï©ødé 🚀",
    "\\N", "\\'", "{x:String}", "%(x)s", "",
]  # fmt: skip


def event(event_id: str, org: str, ts: dt.datetime = T0, **overrides: Any) -> list[Any]:
    values: dict[str, Any] = {
        "event_id": event_id, "ts": ts, "user_id": "u1", "org_id": org, "model": "gpt-x",
        "provider": "openai", "client": "cli", "session_id": "s1", "input_tokens": 10,
        "output_tokens": 20, "cache_read_tokens": 3, "cache_write_tokens": 4,
        "total_tokens": 37, "cost_nanos": 1_500, "cost_source": "price_table",
        "price_version": "2024-05", "latency_ms": 250, "prompt_hash": "h",
        "metadata": '{"k": 1}', "ingested_at": ts,
    }  # fmt: skip
    values.update(overrides)
    return [values[c] for c in COLUMNS]


def all_migrations() -> list[Path]:
    """Every versioned DDL file, in order: each must be applied exactly once."""
    files = sorted(ddl_dir().glob("[0-9][0-9][0-9]_*.sql"))
    assert files and files[0].name == "001_usage.sql"
    return files


def check_migrations_idempotent(store: Store) -> None:
    assert store.apply_migrations() == []
    ledger = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert ledger == [(int(f.name[:3]), f.name) for f in all_migrations()]
    tables = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert {"usage_events", "event_ids", "usage_minute", "usage_hour"} <= tables


def check_round_trip_every_type(store: Store) -> None:
    rows = [
        event("rt-1", "o", latency_ms=None, input_tokens=2**32 - 1, total_tokens=2**64 - 1,
              cost_nanos=2**63 + 5, model="ünï-model", metadata='{"a": [1, "x"]}'),
        event("rt-2", "o", ts=T0 + dt.timedelta(milliseconds=1), latency_ms=0),
    ]  # fmt: skip
    store.insert("usage_events", COLUMNS, rows)
    sql = f"SELECT {', '.join(COLUMNS)} FROM usage_events WHERE event_id IN {{ids:Array(String)}}"
    got = store.query(sql + " ORDER BY event_id", {"ids": ["rt-1", "rt-2"]})
    assert got == [tuple(r) for r in rows]
    assert got[0][1].tzinfo is not None and got[0][1].utcoffset() == dt.timedelta(0)


def check_insert_is_one_part(store: Store) -> None:
    rows = [event(f"part-{i}", "p", ts=T0 + dt.timedelta(seconds=i)) for i in range(5000)]
    store.insert("usage_events", COLUMNS, rows)
    parts = store.query(
        "SELECT count(), sum(rows) FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'usage_events' AND active"
    )
    assert parts == [(1, 5000)]


def check_naive_datetimes_are_utc(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    store.insert("usage_events", COLUMNS, [event("naive-1", "o", ts=naive)])
    got = store.query("SELECT ts FROM usage_events WHERE event_id = {id:String}", {"id": "naive-1"})
    assert got == [(T0,)]
    bound = store.query("SELECT {t:DateTime64(3, 'UTC')}", {"t": naive})
    assert bound == [(T0,)]


def check_dedup_lookup(store: Store) -> None:
    store.insert("usage_events", COLUMNS, [event("dd-1", "o"), event("dd-2", "o")])
    got = store.query(
        "SELECT event_id FROM event_ids WHERE event_id IN {ids:Array(String)} ORDER BY event_id",
        {"ids": ["dd-1", "dd-2", "dd-unknown", "x'; --"]},
    )
    assert got == [("dd-1",), ("dd-2",)]


def check_rollups_sum_exactly_per_prefix(store: Store) -> None:
    orgs = ["r/b/c", "r/b", "r", "r/z", "q"]
    batches = [
        [event(f"ru-{b}-{i}", orgs[i % 5], ts=T0 + dt.timedelta(seconds=50 * i + 3600 * b),
               total_tokens=i + 1, cost_nanos=10**12 + i) for i in range(40)]
        for b in range(3)
    ]  # fmt: skip
    for batch in batches:  # separate inserts -> separate parts, unmerged
        store.insert("usage_events", COLUMNS, batch)
    events = [e for batch in batches for e in batch]
    want: Counter[str] = Counter()
    for e in events:
        parts = e[COLUMNS.index("org_id")].split("/")
        for depth in range(1, len(parts) + 1):
            want["/".join(parts[:depth])] += e[COLUMNS.index("total_tokens")]
    for table in ("usage_minute", "usage_hour"):
        got = store.query(
            f"SELECT org_prefix, sum(total_tokens) FROM {table} "
            "WHERE org_prefix IN {p:Array(String)} GROUP BY org_prefix",
            {"p": list(want)},
        )
        assert dict(got) == dict(want), table
        once = store.query(
            f"SELECT sum(requests), sum(cost_nanos) FROM {table} "
            "WHERE org_depth = 1 AND org_prefix IN ('r', 'q')"
        )
        assert once == [(len(events), sum(e[COLUMNS.index("cost_nanos")] for e in events))]
    hours = store.query("SELECT count(DISTINCT t) FROM usage_hour WHERE org_prefix = 'q'")
    assert hours == [(3,)]


def check_hostile_strings(store: Store) -> None:
    for value in HOSTILE:
        assert store.query("SELECT {v:String}", {"v": value}) == [(value,)]
    assert store.query("SELECT {v:Array(String)}", {"v": HOSTILE}) == [(HOSTILE,)]
    rows = [event(f"ho-{i}", "ho", user_id=v, metadata=v) for i, v in enumerate(HOSTILE)]
    store.insert("usage_events", COLUMNS, rows)
    for i, value in enumerate(HOSTILE):
        got = store.query(
            "SELECT event_id, metadata FROM usage_events WHERE org_id = 'ho' AND user_id = {u:String}",
            {"u": value},
        )
        assert got == [(f"ho-{i}", value)]
    assert store.query("SELECT count() FROM usage_events WHERE org_id = 'ho'") == [(len(HOSTILE),)]


def check_errors_carry_backend_message(store: Store) -> None:
    with pytest.raises(StoreError, match="no_such_table"):
        store.query("SELECT * FROM no_such_table")
    with pytest.raises(StoreError):
        store.insert("usage_events", COLUMNS, [event("bad", "o", input_tokens="many")])
    assert store.ping()


CHECKS = [
    check_migrations_idempotent, check_round_trip_every_type, check_insert_is_one_part,
    check_naive_datetimes_are_utc, check_dedup_lookup, check_rollups_sum_exactly_per_prefix,
    check_hostile_strings, check_errors_carry_backend_message,
]  # fmt: skip


# chdb hosts one data dir per process, so each test closes its store before
# the next test opens another dir.
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(str(tmp_path / "chdb"), None)
    assert opened.apply_migrations() == [f.name for f in all_migrations()]
    yield opened
    opened.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_chdb_store(store: Store, check: Any) -> None:
    check(store)


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with ChdbStore(str(tmp_path)) as first:
        first.apply_migrations()
        first.insert("usage_events", COLUMNS, [event("keep-1", "a/b")])
    assert not first.ping()
    with ChdbStore(str(tmp_path)) as second:
        assert second.apply_migrations() == []
        assert second.query("SELECT event_id FROM event_ids") == [("keep-1",)]
        assert second.query("SELECT sum(requests) FROM usage_hour WHERE org_prefix = 'a'") == [(1,)]


def test_second_data_dir_in_same_process_is_refused(tmp_path: Path) -> None:
    with ChdbStore(str(tmp_path / "one")), pytest.raises(StoreUnavailable, match="one per process"):
        ChdbStore(str(tmp_path / "two"))


def test_data_dir_owned_by_another_process_is_refused(tmp_path: Path) -> None:
    with ChdbStore(str(tmp_path)):
        code = f"from tokentrail.store import ChdbStore; ChdbStore({str(tmp_path)!r})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "already in use by another process" in done.stderr


def test_threads_share_one_store(store: Store) -> None:
    errors: list[Exception] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.insert("usage_events", COLUMNS, [event(f"th-{n}-{i}", "th")])
                store.query("SELECT count() FROM usage_events WHERE org_id = 'th'")
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and time.monotonic() - start < 120
    assert store.query("SELECT count() FROM usage_events WHERE org_id = 'th'") == [(80,)]
