"""POST /v1/events (CONTRACT.md §3)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import AuthDep, ContextDep
from api.ingest import BodyError, split_body, validate_items
from tokentrail.envelope import build_envelopes, dead_letter
from tokentrail.errors import BrokerUnavailable

router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[AuthDep])
log = logging.getLogger(__name__)

RETRY_AFTER_S = "5"


@router.post("/events", status_code=202, summary="Send usage events (JSON array or NDJSON)")
async def post_events(request: Request, ctx: ContextDep) -> JSONResponse:
    if ctx.draining:
        return _unavailable("shutting down; retry against the restarted service")
    try:
        body = await request.body()  # the BodyLimit middleware answers 413 past the limit
        ndjson = "ndjson" in request.headers.get("content-type", "")
        items = split_body(body, ndjson, ctx.settings.max_events_per_request)
    except BodyError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=413 if exc.too_large else 400)
    return await run_in_threadpool(_accept, ctx, items)


def _accept(ctx: ApiContext, items: list[tuple[object, str | None]]) -> JSONResponse:
    parsed = validate_items(items, ctx.prices)
    s = ctx.settings
    try:
        envelopes = list(build_envelopes(parsed.events, s.partitions))
        tickets = [ctx.publisher.publish(envelopes, len(envelopes), len(parsed.events))]
        if parsed.rejected_raw:
            letters = [(0, dead_letter(raw, reason, "ingest"), 0) for raw, reason in parsed.rejected_raw]
            tickets.append(ctx.publisher.publish(letters, len(letters), 0, topic=s.dead_letter_topic))
        ok = all(t.wait(s.produce_timeout_s) for t in tickets)
    except BrokerUnavailable as exc:
        log.warning("ingest: %s", exc)
        ok = False
    if not ok:
        with ctx.ingest.lock:
            ctx.ingest.unavailable += 1
        return _unavailable("the broker did not acknowledge the events in time; nothing is confirmed, retry")
    ctx.ingest.add(len(parsed.events), len(parsed.errors))
    body: dict[str, Any] = {"accepted": len(parsed.events), "rejected": len(parsed.errors), "errors": parsed.errors}
    return JSONResponse(body, status_code=202)


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})
