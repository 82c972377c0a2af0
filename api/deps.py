"""FastAPI dependencies as annotated aliases (one place for auth and context).

Access control lives in api/auth: `authorize` runs on every route (the app
installs it globally) and applies the route's row of api/auth/policy.py.
Routes that need the decision (forced filters, privacy) take `AccessDep`;
FastAPI caches it per request, so naming it again costs nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth.guard import authorize
from api.auth.policy import Access
from api.context import ApiContext


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]
AccessDep = Annotated[Access, Depends(authorize)]
AuthDep = Depends(authorize)
