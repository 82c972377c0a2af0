"""Buffered writes to a Faust table, one changelog record per key per batch.

Every table write is a changelog record, the main cost of Faust state. The
processors take many envelopes at a time and write each touched key once, to
the changelog partition of the source partition whose events produced it
(which is where Faust's own ``table[key] = value`` would put it, if it had
the event context that ``take_events`` does not give).
"""

from __future__ import annotations

from typing import Any


class BufferedTable:
    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: dict[Any, tuple[int, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self.pending.get(key)
        if hit is not None:
            return hit[1]
        return self.table.data.get(key)

    def set(self, partition: int, key: Any, value: Any) -> None:
        self.pending[key] = (partition, value)

    def delete(self, partition: int, key: Any) -> None:
        self.pending[key] = (partition, None)

    def keys(self) -> list[Any]:
        return list(self.table.data.keys())

    def flush(self) -> int:
        """Apply pending writes locally and send them to the changelog."""
        data = self.table.data
        for key, (partition, value) in self.pending.items():
            if value is None:
                data.pop(key, None)
                self.table.send_changelog(partition, key, None, value_serializer="raw")
            else:
                data[key] = value
                self.table.send_changelog(partition, key, value)
        n = len(self.pending)
        self.pending = {}
        return n
