"""GET /v1/leaderboard and PUT /v1/users/{user_id}/display-name (docs/access.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from api.auth import ranking
from api.auth.privacy import pseudonym, pseudonym_key
from api.context import ApiContext
from api.deps import AccessDep, ContextDep
from api.routers import USER_PATH
from api.routers.usage import parse_time

router = APIRouter(prefix="/v1", tags=["leaderboard"])
UserId = Annotated[str, Path(min_length=1, max_length=256)]


@router.get("/leaderboard", summary="Ranked users for a window, privacy rules applied")
async def get_leaderboard(
    ctx: ContextDep,
    access: AccessDep,
    window: Annotated[Literal["7d", "30d"], Query()] = "7d",
    metric: Annotated[Literal["tokens", "cost", "active_days", "tokens_per_active_day"], Query()] = "tokens",
    to: Annotated[str | None, Query(description="RFC 3339 end of the window (event time); default: now")] = None,
    org_id: Annotated[str | None, Query(min_length=1, max_length=256, description="rank within this org subtree")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    end = parse_time(to, "to", datetime.now(UTC))
    org = org_id if access.org_id is None else access.org_id
    sql, params = ranking.build_sql(end, window, org)
    rows = await run_in_threadpool(ctx.store.query, sql, params)
    ranked = ranking.rank(rows, metric)
    names = await run_in_threadpool(_display_names, ctx, [r.user_id for _, r in ranked[:limit]] +
                                    ([access.user_id] if access.user_id else []))
    admin = access.principal.is_admin
    suppressed = not admin and len(ranked) < ctx.settings.k_anonymity
    key = pseudonym_key(ctx.settings)
    entries = [] if suppressed else [_entry(pos, row, len(ranked), names, key, admin) for pos, row in ranked[:limit]]
    body: dict[str, Any] = {
        "window": window, "metric": metric, "from": _iso(end - ranking.WINDOWS[window]), "to": _iso(end),
        "org_id": org, "ranked_users": len(ranked), "entries": entries,
        "privacy": {"k": ctx.settings.k_anonymity, "suppressed": suppressed, "raw_totals": admin},
    }
    if access.user_id is not None:
        body["you"] = _you(ranked, access.user_id, names, key, suppressed)
    access.result_size = len(entries)
    return body


def _entry(position: int, row: ranking.Row, total: int, names: dict[str, str], key: bytes,
           admin: bool) -> dict[str, Any]:
    name = names.get(row.user_id)
    out: dict[str, Any] = {"rank": position, "name": name or pseudonym(key, row.user_id),
                           "pseudonymous": name is None, "band": ranking.band(position, total),
                           "badges": row.badges}
    if admin:
        out.update(_totals(row))
    return out


def _you(ranked: list[tuple[int, ranking.Row]], user_id: str, names: dict[str, str], key: bytes,
         suppressed: bool) -> dict[str, Any]:
    mine = next(((pos, row) for pos, row in ranked if row.user_id == user_id), None)
    if mine is None or suppressed:
        why = "fewer ranked users than k" if suppressed and mine else "not ranked in this window"
        return {"ranked": False, "reason": why}
    pos, row = mine
    entry = _entry(pos, row, len(ranked), names, key, admin=False)
    return {"ranked": True, **entry, "of": len(ranked), **_totals(row)}  # one's own numbers


def _totals(row: ranking.Row) -> dict[str, Any]:
    return {"user_id": row.user_id, "tokens": row.tokens, "cost_usd": row.cost_nanos / 1e9,
            "active_days": row.active_days, "tokens_per_active_day": round(row.tokens_per_active_day, 3),
            "distinct_models": row.models, "active_days_30": row.active_days_30}


def _display_names(ctx: ApiContext, user_ids: list[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    rows = ctx.store.query("SELECT user_id, display_name FROM user_display_names FINAL "
                           "WHERE user_id IN {ids:Array(String)} AND display_name != ''", {"ids": user_ids})
    return {str(r[0]): str(r[1]) for r in rows}


class DisplayName(BaseModel):
    """Opt in to being named on leaderboards; null opts out (back to a pseudonym)."""

    model_config = {"extra": "forbid"}
    display_name: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("display_name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("must be printable text, not only spaces")
        return value


@router.put(f"{USER_PATH}/display-name", summary="Opt in/out of a leaderboard display name")
async def put_display_name(ctx: ContextDep, user_id: UserId, body: DisplayName) -> dict[str, Any]:
    row = (user_id, (body.display_name or "").strip(), datetime.now(UTC))
    await run_in_threadpool(ctx.store.insert, "user_display_names", ("user_id", "display_name", "updated_at"), [row])
    return {"user_id": user_id, "display_name": row[1] or None}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
