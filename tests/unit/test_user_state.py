"""The usage agent's in-memory windows per source partition (agents.UserState)
across rebalances: after one, a partition's windows are rebuilt from the table,
never reused from memory, since another worker may have had the partition
meanwhile (pure: no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from stream_processors import agents
from stream_processors.agents import NEW_PROGRESS, UserState, register
from stream_processors.app import build
from stream_processors.table_writes import BufferedTable
from tests.unit.test_detector_replay import Table
from tokentrail.pricing import PriceTable
from tokentrail.settings import Settings

T0 = 1_795_425_300_000
HOUR = 3_600_000


def events(ids: range) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "ts_ms": T0 + i * 1000, "user_id": f"u{i % 3}", "org_id": "acme",
             "input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 0, "cache_write_tokens": 0,
             "cost_nanos": 7} for i in ids]


def fold_and_store(state: UserState, table: BufferedTable, prog: dict[str, int], offset: int,
                   ids: range) -> tuple[int, int, int]:
    """One usage batch of one envelope (source offset ``offset``) on partition 0: fold, store its deltas."""
    windows = state.get(0, prog, [])
    counted = windows.fold(events(ids))
    records, _orgs = windows.take_deltas(offset, offset)
    for key, value in records:
        table.set(0, key, value)
    table.take_records()  # applied to the table (Faust's, shared through the changelog)
    windows.offset = offset
    return counted


def test_a_partition_back_from_another_worker_is_rebuilt_not_reused() -> None:
    table = BufferedTable(Table())
    mine, theirs = UserState(table, 26 * HOUR), UserState(table, 26 * HOUR)
    prog = dict(NEW_PROGRESS)
    assert fold_and_store(mine, table, prog, 0, range(0, 5)) == (5, 0, 0)
    prog["offset"] = 0  # its progress record, written
    # A rebalance gives partition 0 to another worker (or this worker misses a
    # generation in which it had), which folds offset 1 and writes its deltas,
    # then dies before writing the progress record.
    assert fold_and_store(theirs, table, prog, 1, range(5, 10)) == (5, 0, 0)
    # After the next rebalance, offset 1 is replayed here, and its events are
    # already in the table.
    mine.forget()
    assert fold_and_store(mine, table, prog, 1, range(5, 10)) == (0, 5, 0)


def test_the_worker_forgets_partition_state_at_each_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring: Faust's on_partitions_assigned signal reaches UserState.forget."""
    monkeypatch.setattr(agents, "ChangelogWriter", lambda bootstrap: None)  # no producer: nothing is written here
    settings = Settings()
    processors = build(settings, "127.0.0.1:9")
    state = register(processors, settings, PriceTable.load(), "127.0.0.1:9")
    state.parts.update({0: object(), 1: object(), 3: object()})  # type: ignore[dict-item]
    assigned = {TP(settings.usage_topic, 1), TP(settings.usage_topic, 2), TP("other-topic", 3)}
    asyncio.run(processors.app.on_partitions_assigned.send(assigned))
    assert state.parts == {}
