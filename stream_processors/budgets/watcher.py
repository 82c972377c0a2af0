"""Checks the budgets against the history store and publishes ``budget`` alerts.

Runs as a thread of the process that owns the store (``serve``, or each
``sink`` with a ClickHouse server). Every ``budget_check_s`` it asks the
minute roll-up, per budget, which periods of the last ``budget_lookback_days``
have spent enough to cross a threshold not alerted yet, finds the crossing
minute of those (crossings.py), and publishes the alerts to the alerts topic,
where the alert sink stores them and webhooks deliver them like any other.

Alert ids are stable per (budget, period, threshold), so a restart, a second
watcher or a replay re-sends ids the sink already has, and nothing doubles.
A store or broker outage only delays the check; the next one catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stream_processors.budgets.config import Budget
from stream_processors.budgets.crossings import alert_id, crossings, period_bounds, reason, severity
from tokentrail import alerts as wire
from tokentrail.store.base import Store

log = logging.getLogger(__name__)
BUDGET = "budget"
# A period is a UTC day or month; its bucket id groups minute rows by it.
_PERIOD_SQL = {"day": "toYYYYMMDD(t)", "month": "toYYYYMM(t)"}

Send = Callable[[bytes, bytes], bool]  # (key, value) -> acknowledged


def scope_sql(budget: Budget) -> tuple[str, dict[str, Any]]:
    """The roll-up rows of a budget's spend, each event counted once."""
    if budget.org_id and budget.user_id:
        return "org_prefix = {org:String} AND user_id = {user:String}", {"org": budget.org_id,
                                                                         "user": budget.user_id}
    if budget.org_id:
        return "org_prefix = {org:String}", {"org": budget.org_id}
    return "org_depth = 1 AND user_id = {user:String}", {"user": budget.user_id}


class BudgetWatcher:
    def __init__(self, store: Store, budgets: list[Budget], send: Send, interval_s: float = 30.0,
                 lookback_days: int = 62) -> None:
        self.store = store
        self.budgets = budgets
        self.send = send
        self.interval_s = interval_s
        self.lookback_ms = lookback_days * 86_400_000
        self.sent: set[str] | None = None  # alert ids known to be published; loaded on the first check
        self.checks = self.alerts = self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="budget-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def stats(self) -> dict[str, Any]:
        return {"budgets": len(self.budgets), "checks": self.checks, "alerts": self.alerts,
                "failures": self.failures, "last_error": self.last_error}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check(int(time.time() * 1000))
            except Exception as exc:  # the store or broker is down: try again next time
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("budget check failed (retrying in %.0f s): %s", self.interval_s, self.last_error)
            self._stop.wait(self.interval_s)

    def check(self, now_ms: int) -> list[dict[str, Any]]:
        """One pass over every budget; returns the alert messages published."""
        if self.sent is None:
            rows = self.store.query("SELECT DISTINCT alert_id FROM alerts WHERE kind = {k:String}", {"k": BUDGET})
            self.sent = {r[0] for r in rows}
        since = datetime.fromtimestamp((now_ms - self.lookback_ms) / 1000, UTC)
        out: list[dict[str, Any]] = []
        for budget in self.budgets:
            out += self._check_budget(budget, since, now_ms)
        self.checks += 1
        return out

    def _check_budget(self, budget: Budget, since: datetime, now_ms: int) -> list[dict[str, Any]]:
        assert self.sent is not None
        where, params = scope_sql(budget)
        floor = int(budget.thresholds[0] * budget.limit_nanos)
        periods = self.store.query(
            f"SELECT {_PERIOD_SQL[budget.period]} AS p, toUnixTimestamp(min(t)), sum(cost_nanos), any(org_id) "
            f"FROM usage_minute WHERE {where} AND t >= {{since:DateTime('UTC')}} GROUP BY p "
            f"HAVING sum(cost_nanos) >= {{floor:UInt64}} ORDER BY p",
            {**params, "since": since, "floor": floor})
        out: list[dict[str, Any]] = []
        for _, first_s, spent, org_id in periods:
            start_ms, end_ms = period_bounds(int(first_s) * 1000, budget.period)
            due = [t for t in budget.thresholds if int(spent) >= t * budget.limit_nanos]
            if all(alert_id(budget, start_ms, t) in self.sent for t in due):
                continue
            minutes = self.store.query(
                f"SELECT toUnixTimestamp(t) * 1000, sum(cost_nanos) FROM usage_minute WHERE {where} "
                "AND t >= {start:DateTime('UTC')} AND t < {end:DateTime('UTC')} GROUP BY t",
                {**params, "start": datetime.fromtimestamp(start_ms / 1000, UTC),
                 "end": datetime.fromtimestamp(end_ms / 1000, UTC)})
            for crossing in crossings(budget, ((int(m), int(c)) for m, c in minutes)):
                aid = alert_id(budget, crossing.period_start_ms, crossing.threshold)
                if aid in self.sent:
                    continue
                message = wire.alert_message(
                    aid, budget.user_id or "", budget.org_id or str(org_id), BUDGET, severity(crossing.threshold),
                    crossing.spent_nanos / budget.limit_nanos, (crossing.period_start_ms, crossing.at_ms), now_ms,
                    [reason(budget, crossing)])
                key = (budget.user_id or budget.org_id or budget.name).encode()
                if not self.send(key, wire.encode(message)):
                    raise RuntimeError("the broker did not acknowledge a budget alert")
                self.sent.add(aid)
                self.alerts += 1
                out.append(message)
        return out
