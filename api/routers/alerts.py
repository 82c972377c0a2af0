"""GET /v1/alerts and GET /v1/users/{user_id}/risk (CONTRACT.md §3).

Both are per-person data: the access policy (api/auth/policy.py) narrows the
filters to the caller's scope before these handlers run, and every call is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.alerts_query import AlertsQuery, CursorError, build_sql, decode_cursor, iso_ms, to_page
from api.deps import AccessDep, ContextDep
from api.routers import USER_PATH
from api.routers.usage import parse_time

router = APIRouter(prefix="/v1", tags=["detection"])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UserId = Annotated[str, Path(min_length=1, max_length=256)]


class AlertOut(BaseModel):
    alert_id: str
    user_id: str
    org_id: str
    kind: str
    severity: str
    score: float
    window_start: str  # event time
    window_end: str  # event time
    detected_at: str  # wall time
    reasons: list[str]


class AlertsPage(BaseModel):
    alerts: list[AlertOut]
    next_cursor: str | None  # pass as `cursor` for the next page; null on the last page


class RiskOut(BaseModel):
    user_id: str
    bot_score: float  # 0..1; 0.5 or more means suspected tokenmaxxing
    reasons: list[str]
    updated_at: str | None  # event time of the latest event scored; null: no score yet


@router.get("/alerts", response_model=AlertsPage, summary="Alerts, newest detection first")
async def get_alerts(
    ctx: ContextDep,
    access: AccessDep,
    since: Annotated[str | None, Query(description="RFC 3339; alerts detected at or after this (wall time)")]
    = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    org_id: Annotated[str | None, Query(min_length=1, max_length=256, description="this org and below")] = None,
    kind: Annotated[str | None, Query(min_length=1, max_length=64, description="tokenmaxxing, spike, budget")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except CursorError as exc:
        raise HTTPException(400, str(exc)) from None
    start = parse_time(since, "since", _EPOCH) if since is not None else None
    q = AlertsQuery(limit=limit, since=start, user_id=access.user_id or user_id, org_id=org_id, kind=kind,
                    after=after)
    sql, params = build_sql(q)
    rows = await run_in_threadpool(ctx.store.query, sql, params)
    page = to_page(q, rows)
    access.result_size = len(page["alerts"])
    return page


@router.get(f"{USER_PATH}/risk", response_model=RiskOut, summary="A user's current bot score and reasons")
async def get_risk(ctx: ContextDep, access: AccessDep, user_id: UserId) -> dict[str, Any]:
    rows = await run_in_threadpool(
        ctx.store.query, "SELECT bot_score, reasons, updated_at FROM user_risk FINAL WHERE user_id = {u:String}",
        {"u": user_id})
    access.result_size = len(rows)
    if not rows:  # never scored above the publishing threshold: no evidence, not unknown
        return {"user_id": user_id, "bot_score": 0.0, "reasons": [], "updated_at": None}
    score, reasons, updated = rows[0]
    return {"user_id": user_id, "bot_score": float(score), "reasons": list(reasons), "updated_at": iso_ms(updated)}
