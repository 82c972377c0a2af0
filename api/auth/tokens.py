"""API tokens: `tt_<id>_<secret>`, stored as sha256, looked up by id.

The id is public (it names the token in lists, audit rows and revocation);
the secret is 256 random bits, so a plain sha256 is enough (no password
stretching needed) and the comparison is constant-time. Lookups are cached
for at most `token_cache_s` (<= 1 s) and revocation in this process clears
the cache at once, so a revoked token stops working within a second anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from api.auth.principal import Principal, Role
from tokentrail.store import Store

PREFIX: Final = "tt_"
_TOKEN_RE: Final = re.compile(r"tt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_COLUMNS: Final = ("token_id", "token_sha256", "role", "org_id", "user_id", "per_person", "name",
                   "created_at", "revoked_at", "version")


class TokenSpecError(ValueError):
    """A token cannot be created as asked (a 400 with this message)."""


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    token_sha256: str
    role: Role
    org_id: str
    user_id: str
    per_person: bool
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def principal(self) -> Principal:
        return Principal(self.token_id, self.role, self.org_id or None, self.user_id or None, self.per_person)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: never the hash, never the secret."""
        return {"token_id": self.token_id, "role": self.role.value, "org_id": self.org_id or None,
                "user_id": self.user_id or None, "per_person": self.per_person, "name": self.name,
                "created_at": _iso(self.created_at),
                "revoked_at": _iso(self.revoked_at) if self.revoked_at else None}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse(token: str) -> str | None:
    """The token id of a well-formed token, else None."""
    match = _TOKEN_RE.fullmatch(token)
    return match.group(1) if match else None


def check_spec(role: str, org_id: str | None, user_id: str | None, per_person: bool) -> Role:
    try:
        r = Role(role)
    except ValueError:
        raise TokenSpecError(f"role must be one of {', '.join(x.value for x in Role)}") from None
    if r is Role.ORG_VIEWER and not org_id:
        raise TokenSpecError("an org_viewer token needs org_id (the org subtree it may read)")
    if r is Role.SELF and not user_id:
        raise TokenSpecError("a self token needs user_id (the user whose data it may read)")
    if r is not Role.SELF and user_id:
        raise TokenSpecError("only a self token has a user_id")
    if r in (Role.ADMIN, Role.INGEST) and org_id:
        raise TokenSpecError(f"a {r.value} token has no org scope")
    if per_person and r is not Role.ORG_VIEWER:
        raise TokenSpecError("per_person is a grant for org_viewer tokens only")
    return r


class TokenRepo:
    """Tokens in the `api_tokens` table, with a short lookup cache."""

    def __init__(self, store: Store, cache_s: float = 1.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._lock = threading.Lock()

    def create(self, role: str, org_id: str | None = None, user_id: str | None = None,
               per_person: bool = False, name: str = "") -> tuple[str, TokenRecord]:
        """A new token; the returned secret is shown once and stored nowhere."""
        r = check_spec(role, org_id, user_id, per_person)
        token_id = secrets.token_hex(8)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(token_id, digest(token), r, org_id or "", user_id or "", per_person, name,
                             datetime.now(UTC), None)
        self._write(record)
        return token, record

    def revoke(self, token_id: str) -> TokenRecord | None:
        record = self.get(token_id, fresh=True)
        if record is None:
            return None
        if record.revoked_at is None:
            record = TokenRecord(**{**record.__dict__, "revoked_at": datetime.now(UTC)})
            self._write(record)
        return record

    def list(self) -> list[TokenRecord]:
        rows = self.store.query(f"SELECT {', '.join(_COLUMNS[:-1])} FROM api_tokens FINAL ORDER BY created_at")
        return [_record(row) for row in rows]

    def get(self, token_id: str, fresh: bool = False) -> TokenRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token_id)
        if hit is not None and not fresh and now - hit[0] < self.cache_s:
            return hit[1]
        rows = self.store.query(f"SELECT {', '.join(_COLUMNS[:-1])} FROM api_tokens FINAL "
                                "WHERE token_id = {id:String}", {"id": token_id})
        record = _record(rows[0]) if rows else None
        with self._lock:
            if len(self._cache) > 10_000:  # junk ids must not grow it without bound
                self._cache.clear()
            self._cache[token_id] = (now, record)
        return record

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token, else None."""
        token_id = parse(token)
        record = self.get(token_id) if token_id else None
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.token_sha256, digest(token)):
            return None
        return record.principal()

    def _write(self, record: TokenRecord) -> None:
        version = time.time_ns()
        row = (record.token_id, record.token_sha256, record.role.value, record.org_id, record.user_id,
               int(record.per_person), record.name, record.created_at, record.revoked_at, version)
        self.store.insert("api_tokens", _COLUMNS, [row])
        with self._lock:
            self._cache.pop(record.token_id, None)


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(row[0], row[1], Role(row[2]), row[3], row[4], bool(row[5]), row[6], row[7], row[8])


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
