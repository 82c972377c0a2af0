"""The `authorize` dependency: authenticate, apply the route's policy, narrow filters.

Installed once on the whole app (api/app.py), so a route added later is
covered too, and a route without a policy row is admin-only.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from api.auth.policy import Access, Denied, decide, policy_for
from api.auth.principal import BOOTSTRAP_ADMIN, DEV_ADMIN, Principal
from api.context import ApiContext

AUDIT_SCOPE_KEY = "tokentrail.audit"  # holder the audit middleware reads after the response
ACCESS_STATE = "access"
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
_NAMES: dict[int, tuple[APIRoute, frozenset[str]]] = {}


async def authorize(request: Request) -> Access:
    ctx: ApiContext = request.app.state.ctx
    route = request.scope.get("route")
    path = route.path_format if isinstance(route, APIRoute) else request.url.path
    policy = policy_for(request.method, path)
    principal = DEV_ADMIN if policy.open else await authenticate(request, ctx)
    query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if isinstance(route, APIRoute):
        _reject_unknown(route, query)
    try:
        access, effective = decide(principal, policy, query, dict(request.path_params))
    except Denied as exc:
        raise HTTPException(exc.status, exc.detail) from None
    if effective != query:
        _replace_query(request, effective)
    holder = request.scope.get(AUDIT_SCOPE_KEY)
    if isinstance(holder, dict) and access.audited:
        holder[ACCESS_STATE] = access
    return access


async def authenticate(request: Request, ctx: ApiContext) -> Principal:
    """401 unless the bearer token is the admin token or a valid API token.

    With no admin token configured the API is in open dev mode: a valid API
    token still counts (to try roles locally), anything else is admin.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    expected = ctx.settings.admin_token
    if token and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return BOOTSTRAP_ADMIN
    principal = await run_in_threadpool(ctx.tokens.authenticate, token) if token and ctx.tokens else None
    if principal is not None:
        return principal
    if not expected:
        return DEV_ADMIN
    if not token:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", headers=_UNAUTHORIZED)
    raise HTTPException(401, "invalid or revoked token", headers=_UNAUTHORIZED)


def _reject_unknown(route: APIRoute, query: list[tuple[str, str]]) -> None:
    known = _query_names(route)
    unknown = sorted({k for k, _ in query} - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise HTTPException(400, f"unknown query parameter(s): {', '.join(unknown)} (accepted: {accepted})")


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters a route declares (cached: routes are unhashable, so by id)."""
    hit = _NAMES.get(id(route))
    if hit is None or hit[0] is not route:
        hit = _NAMES[id(route)] = (route, frozenset(_aliases(route.dependant)))
    return hit[1]


def _aliases(dependant: Dependant) -> list[str]:
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names.extend(_aliases(sub))
    return names


def _replace_query(request: Request, query: list[tuple[str, str]]) -> None:
    """Make the route see the narrowed filters: FastAPI reads query parameters
    after the dependencies ran, from `request.query_params` (cached on first use)."""
    request.scope["query_string"] = urlencode(query).encode("latin-1")
    request.__dict__.pop("_query_params", None)


def current_access(request: Request) -> Access | None:
    holder: Any = request.scope.get(AUDIT_SCOPE_KEY)
    return holder.get(ACCESS_STATE) if isinstance(holder, dict) else None
