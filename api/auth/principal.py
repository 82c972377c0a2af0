"""Who is calling: the role and scope a bearer token carries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything
    ORG_VIEWER = "org_viewer"  # aggregates of one org subtree; per-person rows only with the grant
    SELF = "self"  # one user's own data
    INGEST = "ingest"  # POST /v1/events only


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: Role
    org_id: str | None = None  # org_viewer: its subtree; self: optional leaderboard org
    user_id: str | None = None  # self: the user
    per_person: bool = False  # org_viewer: may read per-person rows in its subtree

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


BOOTSTRAP_ADMIN = Principal(token_id="bootstrap-admin", role=Role.ADMIN)
DEV_ADMIN = Principal(token_id="open-dev-mode", role=Role.ADMIN)


def in_subtree(org: str, scope: str) -> bool:
    """True when `org` is `scope` or below it (`a/b` is in `a`, `ab` is not)."""
    return org == scope or org.startswith(scope + "/")
