"""GET /v1/usage: exact usage and cost time series from the roll-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from api.auth.privacy import suppress_small_groups
from api.deps import AccessDep, AuthDep, ContextDep
from api.usage_query import QueryError, UsageQuery, build_sql, to_series
from tokentrail.errors import EventError
from tokentrail.events import parse_rfc3339_ms

router = APIRouter(prefix="/v1", tags=["usage"], dependencies=[AuthDep])


def parse_time(value: str | None, name: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        ms = parse_rfc3339_ms(value, name)  # the kernel's strict parser, as for events
    except EventError as exc:
        raise HTTPException(400, f"'{name}' must be an RFC 3339 date-time with offset, e.g. "
                                 f"2026-11-23T00:00:00Z ({exc.rule})") from None
    parsed = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if not datetime(1970, 1, 1, tzinfo=UTC) <= parsed <= datetime(2200, 1, 1, tzinfo=UTC):
        raise HTTPException(400, f"'{name}' is out of range")
    return parsed


@router.get("/usage", summary="Usage and cost time series")
async def get_usage(
    ctx: ContextDep,
    access: AccessDep,
    group_by: Annotated[list[str] | None, Query(description="user, org, model, client; repeatable")] = None,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    org_id: Annotated[str | None, Query(max_length=256)] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339; default: 24 h before 'to'")] = None,
    to: Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")] = None,
    granularity: Annotated[str, Query(description="minute, hour or day")] = "hour",
) -> dict[str, Any]:
    end = parse_time(to, "to", datetime.now(UTC))
    start = parse_time(from_, "from", end - timedelta(hours=24))
    q = UsageQuery(start=start, end=end, granularity=granularity, group_by=group_by or [],
                   user_id=user_id, org_id=org_id, model=model, distinct_users=access.private)
    try:
        sql, params = build_sql(q)
        rows = await run_in_threadpool(ctx.store.query, sql, params)
        body: dict[str, Any] = {}
        if access.private:  # k-anonymity: points covering fewer than k users are left out
            rows, hidden = suppress_small_groups(rows, ctx.settings.k_anonymity)
            body["privacy"] = {"k": ctx.settings.k_anonymity, "suppressed_points": hidden}
        series = to_series(q, rows)
        access.result_size = len(series)
        return {"series": series, **body}
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
