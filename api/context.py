"""Everything a request handler needs, built once per serving process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.auth.audit import AuditLog
from api.auth.tokens import TokenRepo
from api.pipeline_stats import LagProbe, StatsReader
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.settings import Settings
from tokentrail.store import Store


@dataclass
class IngestCounters:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    unavailable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, accepted: int, rejected: int) -> None:
        with self.lock:
            self.requests += 1
            self.accepted += accepted
            self.rejected += rejected


@dataclass
class ApiContext:
    settings: Settings
    bootstrap: str
    store: Store
    prices: PriceTable
    publisher: Publisher
    sink_stats: Callable[[], dict[str, Any]] | None = None  # the in-process sink's counters
    stats: StatsReader | None = None
    processor_lag: LagProbe | None = None
    sink_lag: LagProbe | None = None
    detector_lag: LagProbe | None = None
    alert_sink_stats: Callable[[], dict[str, Any]] | None = None  # the in-process alert sink's counters
    webhook_stats: Callable[[], dict[str, Any]] | None = None  # webhook deliveries, when configured
    budget_stats: Callable[[], dict[str, Any]] | None = None  # the budget watcher, when budgets are set
    ingest: IngestCounters = field(default_factory=IngestCounters)
    started_at: float = field(default_factory=time.time)
    draining: bool = False  # set on shutdown: ingest answers 503 while the rest drains
    tokens: TokenRepo | None = None  # API tokens (create_app sets it from the store)
    audit: AuditLog | None = None  # per-person read log (create_app sets it from the store)
