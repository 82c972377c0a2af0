"""FastAPI dependencies as annotated aliases (one place for auth and context)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.context import ApiContext


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


def require_token(request: Request, ctx: ContextDep) -> None:
    """Bearer token check. With TOKENTRAIL_ADMIN_TOKEN unset the API is open
    (local development; `tokentrail up` warns about it)."""
    expected = ctx.settings.admin_token
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


AuthDep = Depends(require_token)
