"""The budgets file (``TOKENTRAIL_BUDGETS_FILE``): JSON, checked once at start.

    {"budgets": [
      {"name": "acme-monthly", "org_id": "acme", "period": "month", "limit_usd": 5000,
       "thresholds": [0.5, 0.8, 1.0]},
      {"name": "alice-daily", "user_id": "alice", "period": "day", "limit_usd": 40}
    ]}

``org_id`` covers that org and everything below it ("acme" covers "acme/eng").
A budget names an org, a user, or both (that user's spend within that org).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokentrail.errors import TokenTrailError

NANOS_PER_USD = 1_000_000_000


class BudgetConfigError(TokenTrailError, ValueError):
    """The budgets file cannot be used; the message says where and why."""


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    org_id: str | None = Field(None, min_length=1, max_length=256)
    user_id: str | None = Field(None, min_length=1, max_length=256)
    period: Literal["day", "month"]
    limit_usd: float = Field(gt=0)
    thresholds: tuple[float, ...] = (0.8, 1.0)

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.org_id is None and self.user_id is None:
            raise ValueError("a budget needs org_id, user_id or both")
        if not self.thresholds or any(not 0 < t <= 10 for t in self.thresholds):
            raise ValueError("thresholds must be fractions of the limit in (0, 10], e.g. [0.8, 1.0]")
        if list(self.thresholds) != sorted(set(self.thresholds)):
            raise ValueError("thresholds must be increasing and distinct")
        return self

    @property
    def limit_nanos(self) -> int:
        return round(self.limit_usd * NANOS_PER_USD)

    def describe(self) -> str:
        if self.org_id and self.user_id:
            return f"{self.user_id} in {self.org_id}"
        return self.org_id or self.user_id or self.name


class BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budgets: list[Budget]

    @model_validator(mode="after")
    def _unique(self) -> BudgetsFile:
        names = [b.name for b in self.budgets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"budget names must be unique; repeated: {', '.join(twice)}")
        return self


def load_budgets(path: str | Path) -> list[Budget]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BudgetConfigError(f"budgets file {p}: cannot read it ({exc.strerror or exc})") from None
    try:
        return BudgetsFile.model_validate_json(text).budgets
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise BudgetConfigError(f"budgets file {p}: {problems}") from None
