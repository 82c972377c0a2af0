"""The history-store interface every backend implements.

SQL is ClickHouse SQL with server-side parameters (`{name:Type}`) in every
backend, so callers write a query once and never format values into text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from tokentrail.errors import TokenTrailError

Params = dict[str, Any]


class StoreError(TokenTrailError):
    """The backend rejected a call; the message carries the backend's own text."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached: server down, or chdb data dir owned elsewhere."""


class Store(ABC):
    """A ClickHouse-compatible history store, shared by the sink and the API."""

    @abstractmethod
    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Run a SELECT; rows come back as tuples of Python values (aware UTC datetimes)."""

    @abstractmethod
    def command(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns no rows (DDL, ALTER, SET...)."""

    @abstractmethod
    def insert(self, table: str, column_names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Write rows with ONE INSERT statement (one part below ~1M rows, all-or-nothing)."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers; never raises."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend; idempotent."""

    def apply_migrations(self) -> list[str]:
        """Apply pending DDL files in order; returns the file names applied now."""
        # Imported here: migrations needs StoreError from this module.
        from tokentrail.store.migrations import apply_migrations

        return apply_migrations(self)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
