"""ASGI middleware: body-size limits (413 before anything reads a body) and
the audit record written after each audited response (with its status)."""

from __future__ import annotations

from typing import Any, Final

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth.guard import ACCESS_STATE, AUDIT_SCOPE_KEY
from api.context import ApiContext

SMALL_BODY_BYTES: Final = 64 * 1024  # every JSON body except events is tiny
EVENTS_PATH: Final = "/v1/events"


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing passes it on as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class BodyLimit:
    """413 for bodies over the limit: by Content-Length at once, else while streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx: ApiContext = scope["app"].state.ctx
        limit = ctx.settings.max_body_bytes if scope["path"] == EVENTS_PATH else SMALL_BODY_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:  # a route that read the stream without FastAPI's handlers in between
            if not started:
                await _send_413(send, limit)


async def _send_413(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": f"request body over the limit of {limit:,} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AuditTrail:
    """After an audited request, one audit row: who, what, filters, status, size."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder: dict[str, Any] = {}
        scope[AUDIT_SCOPE_KEY] = holder
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            access = holder.get(ACCESS_STATE)
            ctx: ApiContext = scope["app"].state.ctx
            if access is not None and ctx.audit is not None:
                route = scope.get("route")
                endpoint = str(getattr(route, "path_format", scope["path"]))
                ctx.audit.record(access.principal.token_id, access.principal.role.value, scope["method"],
                                 endpoint, access.filters, status, access.result_size)
