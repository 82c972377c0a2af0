"""Who may call what, with which filters: the one place access is decided.

Every route is looked up in POLICIES by (method, path). A route that is not
listed is admin-only (fail closed). `decide` is pure: it checks the role, then
narrows the request's own filters (query `user_id`/`org_id`/`group_by`, path
`{user_id}`) to the caller's scope, and returns the effective query string.
The `authorize` dependency (api/auth/guard.py) applies it to every route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from api.auth.principal import Principal, Role, in_subtree

ADMIN: Final = frozenset({Role.ADMIN})
READERS: Final = frozenset({Role.ADMIN, Role.ORG_VIEWER, Role.SELF})


class Audit(Enum):
    NEVER = "never"
    ALWAYS = "always"  # the answer is per-person data
    PER_PERSON = "per_person"  # when the effective filters single out people


@dataclass(frozen=True)
class Policy:
    roles: frozenset[Role] = ADMIN
    open: bool = False  # no token needed at all
    user_param: str | None = None  # query parameter naming one user
    org_param: str | None = None  # query parameter naming an org subtree
    group_param: str | None = None  # query parameter whose value `user` means per-person rows
    path_user: str | None = None  # path parameter naming one user
    per_person_only: bool = False  # every answer is per-person (org_viewer needs the grant)
    audit: Audit = Audit.NEVER


OPEN: Final = Policy(roles=frozenset(Role), open=True)

# (METHOD, path) -> policy. Add a row with every new route; unlisted = admin only.
POLICIES: Final[dict[tuple[str, str], Policy]] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("POST", "/v1/events"): Policy(roles=frozenset({Role.ADMIN, Role.INGEST})),
    # Counts and lag only, no one's usage: the ingest clients that send may wait on it (CONTRACT §3).
    ("GET", "/v1/pipeline"): Policy(roles=frozenset({Role.ADMIN, Role.INGEST})),
    ("GET", "/v1/usage"): Policy(roles=READERS, user_param="user_id", org_param="org_id",
                                  group_param="group_by", audit=Audit.PER_PERSON),
    ("GET", "/v1/leaderboard"): Policy(roles=READERS, org_param="org_id", audit=Audit.ALWAYS),
    ("PUT", "/v1/users/{user_id}/display-name"): Policy(roles=frozenset({Role.ADMIN, Role.SELF}),
                                                         path_user="user_id"),
    ("GET", "/v1/users/{user_id}/risk"): Policy(roles=frozenset({Role.ADMIN, Role.SELF}), path_user="user_id",
                                                audit=Audit.ALWAYS),
    ("GET", "/v1/alerts"): Policy(roles=READERS, user_param="user_id", org_param="org_id",
                                   per_person_only=True, audit=Audit.ALWAYS),
    ("GET", "/v1/audit"): Policy(),
    ("GET", "/v1/admin/tokens"): Policy(),
    ("POST", "/v1/admin/tokens"): Policy(),
    ("DELETE", "/v1/admin/tokens/{token_id}"): Policy(),
}


class Denied(Exception):
    """The caller may not do this: 403 (or 400 for a malformed filter)."""

    def __init__(self, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass
class Access:
    """The decision for one request, read by routes and by the audit log."""

    principal: Principal
    user_id: str | None = None  # this request sees only this user (forced filter)
    org_id: str | None = None  # this request sees only this org subtree
    per_person: bool = True  # may see rows of single, named people
    private: bool = False  # k-anonymity applies to aggregates
    audited: bool = False
    filters: dict[str, Any] = field(default_factory=dict)
    result_size: int = 0  # set by the route: rows / series / entries answered


def policy_for(method: str, path: str) -> Policy:
    return POLICIES.get((method, path), Policy())


def decide(principal: Principal, policy: Policy, query: list[tuple[str, str]],
           path_params: dict[str, Any]) -> tuple[Access, list[tuple[str, str]]]:
    """Allow or raise Denied; returns the access and the effective query."""
    if policy.open:
        return Access(principal), query
    if principal.role not in policy.roles:
        allowed = ", ".join(sorted(r.value for r in policy.roles))
        raise Denied(f"a {principal.role.value} token may not call this endpoint (allowed: {allowed})")
    for name in (policy.user_param, policy.org_param):
        if name and len([v for k, v in query if k == name]) > 1:
            raise Denied(f"give '{name}' at most once", status=400)
    if principal.role is Role.SELF:
        access, query = _self(principal, policy, query, path_params)
    elif principal.role is Role.ORG_VIEWER:
        access, query = _org_viewer(principal, policy, query, path_params)
    else:  # admin, or ingest on the one route it may call
        access = Access(principal)
    access.audited = _audited(policy, access, query)
    access.filters = {**_as_dict(query), **{f"path.{k}": v for k, v in path_params.items()}}
    for name, value in (("scope.user_id", access.user_id), ("scope.org_id", access.org_id)):
        if value is not None:
            access.filters[name] = value
    return access, query


def _self(p: Principal, policy: Policy, query: list[tuple[str, str]],
          path_params: dict[str, Any]) -> tuple[Access, list[tuple[str, str]]]:
    own = p.user_id or ""
    if policy.path_user and path_params.get(policy.path_user) != own:
        raise Denied("a self token may only reach its own user")
    if policy.user_param:
        if any(k == policy.user_param and v != own for k, v in query):
            raise Denied(f"a self token may only filter by its own user ({policy.user_param}={own})")
        query = _set(query, policy.user_param, own)  # forced: absent means "mine", not "everyone"
    org = _one(query, policy.org_param)
    if org is not None and p.org_id and not in_subtree(org, p.org_id):
        raise Denied(f"org_id must be within this token's org '{p.org_id}'")
    return Access(p, user_id=own, org_id=org or p.org_id, per_person=True, private=False), query


def _org_viewer(p: Principal, policy: Policy, query: list[tuple[str, str]],
                path_params: dict[str, Any]) -> tuple[Access, list[tuple[str, str]]]:
    scope = p.org_id or ""
    needs_grant = policy.per_person_only or bool(policy.path_user)
    if policy.user_param and _one(query, policy.user_param) is not None:
        needs_grant = True
    if policy.group_param and any(k == policy.group_param and v == "user" for k, v in query):
        needs_grant = True
    if needs_grant and not p.per_person:
        raise Denied("per-person data (a user_id filter, group_by=user, per-user endpoints) needs an "
                     "org_viewer token with the per_person grant")
    if policy.path_user:  # a single person outside the token's org cannot be checked here
        raise Denied("an org_viewer token cannot reach per-user endpoints")
    org = _one(query, policy.org_param)
    if org is not None and not in_subtree(org, scope):
        raise Denied(f"org_id must be within this token's org subtree '{scope}'")
    if policy.org_param:
        query = _set(query, policy.org_param, org or scope)  # forced: absent means "my subtree"
    return Access(p, org_id=org or scope, per_person=p.per_person, private=not p.per_person), query


def _audited(policy: Policy, access: Access, query: list[tuple[str, str]]) -> bool:
    if policy.audit is Audit.ALWAYS:
        return True
    if policy.audit is Audit.NEVER:
        return False
    if access.principal.role is Role.SELF:
        return True
    by_user = bool(policy.group_param) and (policy.group_param, "user") in query
    return by_user or (bool(policy.user_param) and _one(query, policy.user_param) is not None)


def _one(query: list[tuple[str, str]], name: str | None) -> str | None:
    values = [v for k, v in query if k == name] if name else []
    return values[-1] if values else None


def _set(query: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query if k != name] + [(name, value)]


def _as_dict(query: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in query:
        out.setdefault(k, []).append(v)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}
