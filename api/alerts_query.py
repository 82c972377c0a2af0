"""GET /v1/alerts as SQL, and its opaque pagination cursor (pure: no I/O).

Order: newest detection first, ``(detected_at, alert_id)`` descending. The cursor
is the last row's key, and the next page is the rows strictly below it (keyset
pagination), so alerts inserted meanwhile never shift or repeat a page: new
ones are detected later and sort above any cursor handed out before them.
The table may hold several versions of an alert (replays, or the alert's window
grown) until merges collapse them, so rows are grouped by alert_id and each
alert is its latest version (by window_end); every version carries the first
detection's detected_at (the alert sink sees to it), so an alert keeps its place.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from tokentrail.store.base import Params

_CURSOR_VERSION: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class CursorError(ValueError):
    """The cursor was not handed out by this API (or was altered)."""


def encode_cursor(detected_ms: int, alert_id: str) -> str:
    doc = orjson.dumps({"v": _CURSOR_VERSION, "t": detected_ms, "id": alert_id})
    return base64.urlsafe_b64encode(doc).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("'cursor' is not a cursor from a previous answer") from None
    if (not isinstance(doc, dict) or doc.get("v") != _CURSOR_VERSION or type(doc.get("t")) is not int
            or not isinstance(doc.get("id"), str)):
        raise CursorError("'cursor' is not a cursor from a previous answer")
    return int(doc["t"]), str(doc["id"])


@dataclass(frozen=True)
class AlertsQuery:
    limit: int = 100
    since: datetime | None = None  # on detected_at (wall time)
    user_id: str | None = None
    org_id: str | None = None  # this org and every org below it
    kind: str | None = None
    after: tuple[int, str] | None = None  # decoded cursor


def build_sql(q: AlertsQuery) -> tuple[str, Params]:
    where = ["1"]
    params: Params = {"limit": q.limit + 1}  # one more row tells whether a next page exists
    if q.user_id is not None:
        where.append("user_id = {user:String}")
        params["user"] = q.user_id
    if q.org_id is not None:
        where.append("(org_id = {org:String} OR startsWith(org_id, {org_below:String}))")
        params.update(org=q.org_id, org_below=q.org_id + "/")
    if q.kind is not None:
        where.append("kind = {kind:String}")
        params["kind"] = q.kind
    having = ["1"]
    if q.since is not None:
        having.append("first_detected >= {since:DateTime64(3, 'UTC')}")
        params["since"] = q.since
    if q.after is not None:
        having.append("(first_detected, alert_id) < (fromUnixTimestamp64Milli({after_t:Int64}, 'UTC'), "
                      "{after_id:String})")
        params.update(after_t=q.after[0], after_id=q.after[1])
    sql = (
        "SELECT alert_id, a.1, a.2, a.3, a.4, a.5, a.6, a.7, first_detected, a.8 FROM ("
        " SELECT alert_id, min(detected_at) AS first_detected,"
        " argMax((user_id, org_id, kind, severity, score, window_start, window_end, reasons), window_end) AS a"
        f" FROM alerts WHERE {' AND '.join(where)} GROUP BY alert_id HAVING {' AND '.join(having)})"
        " ORDER BY first_detected DESC, alert_id DESC LIMIT {limit:UInt32}"
    )
    return sql, params


def iso_ms(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def epoch_ms(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(milliseconds=1)  # exact: integer arithmetic


def to_page(q: AlertsQuery, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Rows of build_sql -> {"alerts": [...], "next_cursor": str | None}."""
    alerts = [{
        "alert_id": r[0], "user_id": r[1], "org_id": r[2], "kind": r[3], "severity": r[4], "score": float(r[5]),
        "window_start": iso_ms(r[6]), "window_end": iso_ms(r[7]), "detected_at": iso_ms(r[8]),
        "reasons": list(r[9]),
    } for r in rows[: q.limit]]
    cursor = encode_cursor(epoch_ms(rows[q.limit - 1][8]), rows[q.limit - 1][0]) if len(rows) > q.limit else None
    return {"alerts": alerts, "next_cursor": cursor}
