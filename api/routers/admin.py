"""Admin API: tokens (POST/GET/DELETE /v1/admin/tokens) and GET /v1/audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth.principal import Role
from api.auth.tokens import TokenRepo, TokenSpecError
from api.deps import ContextDep
from api.routers.usage import parse_time

router = APIRouter(prefix="/v1", tags=["admin"])


class TokenRequest(BaseModel):
    model_config = {"extra": "forbid"}
    role: Role
    org_id: str | None = Field(None, min_length=1, max_length=256, description="org_viewer: its org subtree")
    user_id: str | None = Field(None, min_length=1, max_length=256, description="self: its user")
    per_person: bool = Field(False, description="org_viewer: may read per-person rows")
    name: str = Field("", max_length=200, description="a label for people, e.g. 'finance dashboard'")


def _repo(repo: TokenRepo | None) -> TokenRepo:
    if repo is None:  # create_app always sets it; a bare ApiContext may not
        raise HTTPException(503, "token store not configured")
    return repo


@router.post("/admin/tokens", status_code=201, summary="Create a token (the secret is shown once)")
async def create_token(ctx: ContextDep, spec: TokenRequest) -> dict[str, Any]:
    repo = _repo(ctx.tokens)
    try:
        token, record = await run_in_threadpool(repo.create, spec.role.value, spec.org_id, spec.user_id,
                                                spec.per_person, spec.name)
    except TokenSpecError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"token": token, **record.public()}


@router.get("/admin/tokens", summary="List tokens (never their secrets)")
async def list_tokens(ctx: ContextDep) -> dict[str, Any]:
    records = await run_in_threadpool(_repo(ctx.tokens).list)
    return {"tokens": [r.public() for r in records]}


@router.delete("/admin/tokens/{token_id}", summary="Revoke a token (effective at once)",
               responses={404: {"description": "No such token"}})
async def revoke_token(ctx: ContextDep, token_id: Annotated[str, Path(min_length=1, max_length=64)]) -> dict[str, Any]:
    record = await run_in_threadpool(_repo(ctx.tokens).revoke, token_id)
    if record is None:
        raise HTTPException(404, f"no token {token_id!r}")
    return record.public()


@router.get("/audit", summary="Who read per-person data (newest first)")
async def get_audit(
    ctx: ContextDep,
    since: Annotated[str | None, Query(description="RFC 3339; default: 24 h before 'to'")] = None,
    to: Annotated[str | None, Query(description="RFC 3339, exclusive; default: now")] = None,
    token_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    end = parse_time(to, "to", datetime.now(UTC) + timedelta(seconds=1))
    start = parse_time(since, "since", end - timedelta(hours=24))
    if end <= start:
        raise HTTPException(400, "'to' must be after 'since'")
    if ctx.audit is not None:
        await run_in_threadpool(ctx.audit.flush)  # read-your-reads: include what is still buffered
    where = "at >= {start:DateTime64(3, 'UTC')} AND at < {end:DateTime64(3, 'UTC')}"
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    if token_id is not None:
        where += " AND token_id = {token:String}"
        params["token"] = token_id
    rows = await run_in_threadpool(
        ctx.store.query, "SELECT at, token_id, role, method, endpoint, filters, status, result_size FROM audit_log "
        f"WHERE {where} ORDER BY at DESC LIMIT {{limit:UInt32}}", params)
    return {"entries": [{"at": r[0].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "token_id": r[1], "role": r[2],
                         "method": r[3], "endpoint": r[4], "filters": orjson.loads(r[5]), "status": r[6],
                         "result_size": r[7]} for r in rows]}
