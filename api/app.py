"""The FastAPI application factory and the one place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth.audit import AuditLog
from api.auth.guard import authorize
from api.auth.middleware import AuditTrail, BodyLimit
from api.auth.tokens import TokenRepo
from api.context import ApiContext
from api.routers import admin, alerts, events, leaderboard, ops, usage
from tokentrail import __version__
from tokentrail.errors import BrokerUnavailable
from tokentrail.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


# Documented on every route (schema-driven clients and tests rely on it).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid filter, time range or unknown query parameter"},
    401: {"description": "Missing, invalid or revoked bearer token"},
    403: {"description": "The token's role or scope does not allow this"},
    413: {"description": "Request body too large"},
    422: {"description": "Parameters or body fail validation"},
    503: {"description": "Broker or history store temporarily unavailable"},
}


def create_app(ctx: ApiContext) -> FastAPI:
    if ctx.tokens is None:
        ctx.tokens = TokenRepo(ctx.store, ctx.settings.token_cache_s)
    if ctx.audit is None:
        ctx.audit = AuditLog(ctx.store, ctx.settings.audit_flush_s, ctx.settings.audit_flush_rows)
    app = FastAPI(
        title="TokenTrail",
        version=__version__,
        description="Exact AI token usage and cost per user, team and org; see CONTRACT.md and docs/access.md.",
        # Every route passes the access policy (api/auth/policy.py); unlisted routes are admin-only.
        dependencies=[Depends(authorize)],
        lifespan=_lifespan,
    )
    app.state.ctx = ctx
    for router in (events.router, usage.router, ops.router, leaderboard.router, alerts.router, admin.router):
        app.include_router(router, responses=COMMON_RESPONSES)
    app.add_middleware(AuditTrail)
    app.add_middleware(BodyLimit)
    _install_error_handlers(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    audit: AuditLog | None = app.state.ctx.audit
    if audit is not None:
        audit.close()  # flush what is buffered before the store closes


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(BrokerUnavailable)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"temporarily unavailable: {exc}"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The contract promises never a 500. A bug still gets logged in full; the
        # client gets a retryable answer that confirms nothing.
        log.error("unexpected error answering a request", exc_info=exc)
        return JSONResponse({"detail": "internal error (logged); nothing was confirmed, retry later"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        # A query the store refused: log it in full, answer without internals.
        log.error("store error: %s", exc)
        return JSONResponse({"detail": "the history store could not answer this query"}, status_code=503,
                            headers={"Retry-After": "5"})
