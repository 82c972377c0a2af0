"""Operations: /healthz, /readyz, /metrics and GET /v1/pipeline."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import AuthDep, ContextDep
from tokentrail.runtime.broker import broker_reachable

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Broker and store reachable")
async def readyz(ctx: ContextDep) -> JSONResponse:
    broker = await run_in_threadpool(broker_reachable, ctx.bootstrap, 2.0)
    store = await run_in_threadpool(ctx.store.ping)
    ok = broker and store and not ctx.draining
    body = {"status": "ready" if ok else "not ready", "broker": broker, "store": store, "draining": ctx.draining}
    return JSONResponse(body, status_code=200 if ok else 503)


def pipeline_snapshot(ctx: ApiContext) -> dict[str, Any]:
    stored_rows = ctx.store.query("SELECT count() FROM event_ids")
    stored = int(stored_rows[0][0]) if stored_rows else 0
    proc = ctx.stats.processor_totals() if ctx.stats else {}
    sink = ctx.sink_stats() if ctx.sink_stats else {}
    with ctx.ingest.lock:
        ingest = {"requests": ctx.ingest.requests, "accepted": ctx.ingest.accepted,
                  "rejected": ctx.ingest.rejected, "unavailable": ctx.ingest.unavailable}
    processor_lag = ctx.processor_lag.lag() if ctx.processor_lag else None
    sink_lag = ctx.sink_lag.lag() if ctx.sink_lag else None
    return {
        "ingested": ingest["accepted"],
        "processed": proc.get("processed", 0),
        "stored": stored,
        "late_events": proc.get("late", 0),
        "stages": {
            "ingest": ingest,
            "processor": {**proc, "lag": processor_lag},
            "sink": {**sink, "stored_total": stored, "lag": sink_lag},
            "detector": {**(ctx.stats.detector_totals() if ctx.stats else {}),
                         "lag": ctx.detector_lag.lag() if ctx.detector_lag else None},
            "alert_sink": ctx.alert_sink_stats() if ctx.alert_sink_stats else {},
            "webhooks": ctx.webhook_stats() if ctx.webhook_stats else {},
            "budgets": ctx.budget_stats() if ctx.budget_stats else {},
        },
        "restarts": ctx.stats.supervisor().get("restarts", {}) if ctx.stats else {},
        "uptime_s": round(time.time() - ctx.started_at, 1),
    }


@router.get("/v1/pipeline", summary="Per-stage counts and lag", dependencies=[AuthDep])
async def pipeline(ctx: ContextDep) -> dict[str, Any]:
    return await run_in_threadpool(pipeline_snapshot, ctx)


@router.get("/metrics", summary="Prometheus text format", response_class=PlainTextResponse)
async def metrics(ctx: ContextDep) -> PlainTextResponse:
    snap = await run_in_threadpool(pipeline_snapshot, ctx)
    lines = []

    def gauge(name: str, value: Any, help_text: str) -> None:
        if value is None:
            return
        lines.extend([f"# HELP tokentrail_{name} {help_text}", f"# TYPE tokentrail_{name} gauge",
                      f"tokentrail_{name} {value}"])

    gauge("ingest_accepted_events", snap["stages"]["ingest"]["accepted"], "Events accepted by POST /v1/events")
    gauge("ingest_rejected_events", snap["stages"]["ingest"]["rejected"], "Events rejected (dead-lettered)")
    gauge("ingest_unavailable_responses", snap["stages"]["ingest"]["unavailable"], "503 answers from ingest")
    gauge("processed_events", snap["processed"], "Distinct events in live windows")
    gauge("late_events", snap["late_events"], "Events older than live-window retention (stored, not windowed)")
    gauge("stored_events", snap["stored"], "Distinct events in the history store")
    gauge("processor_lag_messages", snap["stages"]["processor"]["lag"], "Processor consumer lag (messages)")
    gauge("sink_lag_messages", snap["stages"]["sink"]["lag"], "Sink consumer lag (messages)")
    gauge("detector_fed_events", snap["stages"]["detector"].get("fed"), "Events fed to bot detection")
    gauge("detector_lag_messages", snap["stages"]["detector"].get("lag"), "Detector consumer lag (messages)")
    gauge("alerts_stored", snap["stages"]["alert_sink"].get("alerts"), "Alert rows written by this process")
    gauge("webhook_failed", snap["stages"]["webhooks"].get("failed"), "Webhook deliveries given up")
    gauge("sink_store_failures", snap["stages"]["sink"].get("store_failures"), "Failed store writes (retried)")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
