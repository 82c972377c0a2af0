"""The FastAPI application factory and the one place errors become HTTP."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.context import ApiContext
from api.routers import events, ops, usage
from tokentrail import __version__
from tokentrail.errors import BrokerUnavailable
from tokentrail.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="TokenTrail",
        version=__version__,
        description="Exact AI token usage and cost per user, team and org; see CONTRACT.md.",
    )
    app.state.ctx = ctx
    for router in (events.router, usage.router, ops.router):
        app.include_router(router)
    _install_error_handlers(app)
    return app


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

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        # A query the store refused: log it in full, answer without internals.
        log.error("store error: %s", exc)
        return JSONResponse({"detail": "the history store could not answer this query"}, status_code=503,
                            headers={"Retry-After": "5"})
