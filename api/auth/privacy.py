"""Privacy rules for non-admin answers: k-anonymity and stable pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tokentrail.settings import Settings

DEV_PSEUDONYM_KEY = b"tokentrail-open-dev-mode"


def suppress_small_groups(rows: list[tuple[Any, ...]], k: int) -> tuple[list[tuple[Any, ...]], int]:
    """Rows ending in a distinct-user count -> rows covering >= k users (count
    dropped), and how many points were suppressed."""
    kept = [row[:-1] for row in rows if int(row[-1]) >= k]
    return kept, len(rows) - len(kept)


def pseudonym_key(settings: Settings) -> bytes:
    """The deployment's pseudonym key: the setting, else derived from the admin token."""
    if settings.pseudonym_secret:
        return settings.pseudonym_secret.encode()
    if settings.admin_token:
        return hashlib.sha256(b"tokentrail-pseudonym:" + settings.admin_token.encode()).digest()
    return DEV_PSEUDONYM_KEY


def pseudonym(key: bytes, user_id: str) -> str:
    """Stable per deployment, not reversible without the key."""
    return "anon-" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:12]
