"""`tokentrail serve`: the process that owns the history store.

It runs the HTTP API and the history sink together, because an embedded chdb
data dir can be opened by one process only: the sink writes and the API reads
through the same store object. (With a ClickHouse server, `tokentrail sink`
and `tokentrail api` may also run as separate processes.)

This module is a composition root: it wires components (api, stream
processors) that never import each other.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import uvicorn

from tokentrail.envelope import dead_letter
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher, Ticket
from tokentrail.runtime.topics import create_missing, pipeline_topics
from tokentrail.settings import Settings
from tokentrail.store import open_store

log = logging.getLogger(__name__)


def budget_watcher(settings: Settings, store: Any, publisher: Publisher) -> Any:
    """The budget watcher when a budgets file is set (read and checked now: a bad
    file stops the start with its reason), else None."""
    if not settings.budgets_file:
        return None
    from stream_processors.budgets.config import load_budgets
    from stream_processors.budgets.watcher import BudgetWatcher

    budgets = load_budgets(settings.budgets_file)

    def send(key: bytes, value: bytes) -> bool:
        return publisher.send_raw(settings.alerts_topic, value, key).wait(30)

    log.info("budget alerts: %d budget(s) from %s", len(budgets), settings.budgets_file)
    return BudgetWatcher(store, budgets, send, settings.budget_check_s, settings.budget_lookback_days)


def run(settings: Settings, bootstrap: str, with_sink: bool = True) -> None:
    from api.app import create_app
    from api.context import ApiContext
    from api.pipeline_stats import LagProbe, StatsReader
    from stream_processors.alert_sink import AlertSink
    from stream_processors.sink import HistorySink
    from stream_processors.webhooks import WebhookDispatcher

    create_missing(bootstrap, pipeline_topics(settings), settings.replication_factor)
    store = open_store(str(settings.data_dir / "chdb"), settings.clickhouse_url)
    applied = store.apply_migrations()
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    prices = PriceTable.load(settings.prices_file)
    publisher = Publisher(bootstrap, settings.usage_topic)
    stats = StatsReader(settings, bootstrap)
    ctx = ApiContext(
        settings=settings, bootstrap=bootstrap, store=store, prices=prices, publisher=publisher, stats=stats,
        processor_lag=LagProbe(bootstrap, settings.app_id, settings.usage_topic, settings.partitions),
        sink_lag=LagProbe(bootstrap, settings.sink_group, settings.usage_topic, settings.partitions),
        detector_lag=LagProbe(bootstrap, f"{settings.app_id}-detector", settings.usage_topic, settings.partitions)
        if settings.detection else None,
    )
    sink = alert_sink = webhooks = budgets = None
    if with_sink:
        def to_dead_letters(raw: object, reason: str) -> Ticket:
            return publisher.send_raw(settings.dead_letter_topic, dead_letter(raw, reason, "sink"))

        def alerts_to_dead_letters(raw: object, reason: str) -> Ticket:
            return publisher.send_raw(settings.dead_letter_topic, dead_letter(raw, reason, "alert-sink"))

        sink = HistorySink(settings, bootstrap, store, prices, to_dead_letters)
        ctx.sink_stats = lambda: _sink_stats(sink)
        sink.start()
        # Alerts and bot scores land in the store this process owns; webhooks
        # deliver alerts on their own consumer group and threads.
        alert_sink = AlertSink(settings, bootstrap, store, alerts_to_dead_letters)
        ctx.alert_sink_stats = alert_sink.stats.snapshot
        alert_sink.start()
        if settings.webhook_url_list():
            webhooks = WebhookDispatcher(settings, bootstrap)
            ctx.webhook_stats = webhooks.stats.snapshot
            webhooks.start()
        budgets = budget_watcher(settings, store, publisher)
        if budgets is not None:
            ctx.budget_stats = budgets.stats
            budgets.start()
    stats.start()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host=settings.host, port=settings.port,
                                           log_level=settings.log_level.lower(), access_log=False))
    sinks = [s for s in (sink, alert_sink) if s is not None]
    died = threading.Event()

    def watchdog() -> None:
        """A dead sink thread must not leave an API that looks healthy while
        history stops: stop serving, so the supervisor restarts the process."""
        while not server.should_exit:
            if any(not s.alive() for s in sinks):
                log.error("a sink thread died; stopping so that the stage is restarted")
                died.set()
                server.should_exit = True
            time.sleep(1.0)

    threading.Thread(target=watchdog, name="sink-watchdog", daemon=True).start()
    try:
        server.run()
    finally:
        # Graceful stop: ingest already refuses (server stopped), then the sink
        # stores and commits what it read, then the store closes.
        ctx.draining = True
        _stop_in_order(sink, alert_sink, webhooks, budgets)
        stats.stop()
        for probe in (ctx.processor_lag, ctx.sink_lag, ctx.detector_lag):
            if probe is not None:
                probe.close()
        publisher.close(10)
        store.close()
    if died.is_set():
        raise SystemExit(70)


def run_sink(settings: Settings, bootstrap: str) -> None:
    """`tokentrail sink`: the history sink, the alert sink and webhooks, without the
    API (production, with a ClickHouse server; run as many as the usage topic has
    partitions)."""

    from stream_processors.alert_sink import AlertSink
    from stream_processors.sink import HistorySink
    from stream_processors.webhooks import WebhookDispatcher

    create_missing(bootstrap, pipeline_topics(settings), settings.replication_factor)
    store = open_store(str(settings.data_dir / "chdb"), settings.clickhouse_url)
    store.apply_migrations()
    publisher = Publisher(bootstrap, settings.usage_topic)

    def to_dead_letters(raw: object, reason: str) -> Ticket:
        return publisher.send_raw(settings.dead_letter_topic, dead_letter(raw, reason, "sink"))

    sink = HistorySink(settings, bootstrap, store, PriceTable.load(settings.prices_file), to_dead_letters)
    alert_sink = AlertSink(settings, bootstrap, store, to_dead_letters)
    webhooks = WebhookDispatcher(settings, bootstrap) if settings.webhook_url_list() else None
    budgets = budget_watcher(settings, store, publisher)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    for stage in (sink, alert_sink, webhooks, budgets):
        if stage is not None:
            stage.start()
    try:
        while not stopped.wait(1.0):
            if sink._thread is not None and not sink._thread.is_alive():
                raise SystemExit("history sink stopped unexpectedly; see the log above")
            if not alert_sink.alive():
                raise SystemExit("alert sink stopped unexpectedly; see the log above")
    except KeyboardInterrupt:
        pass
    finally:
        _stop_in_order(sink, alert_sink, webhooks, budgets)
        publisher.close(10)
        store.close()


def _stop_in_order(*stages: Any) -> None:
    """Stop the background stages that run (None: not configured), first to last:
    the history sink stores and commits what it read before anything after it stops."""
    for stage in stages:
        if stage is not None:
            stage.stop()


def _sink_stats(sink: Any) -> dict[str, Any]:
    s = sink.stats
    with s.lock:
        return {"stored": s.stored, "duplicates": s.duplicates, "invalid": s.invalid, "batches": s.batches,
                "store_failures": s.store_failures, "paused": s.paused, "last_error": s.last_error}

