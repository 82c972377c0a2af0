"""Request sizes and gap shapes calibrated on real LLM traffic (Azure LLM trace 2023).

The simulator samples from empirical quantile tables rather than from a textbook
distribution because real request sizes are lumpy (templates, truncation at the
context limit) and heavy-tailed. When the trace files are present they are read
once; otherwise the built-in summary below (computed from the same files with
``summarise``) keeps the simulator working anywhere.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

# The traces ship beside the repository (../shared/data); TOKENTRAIL_TRACES_DIR
# points elsewhere. Without them the built-in summary below is used.
DEFAULT_DIR = Path(
    os.environ.get("TOKENTRAIL_TRACES_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "azure-llm-2023"
)
PROBS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class Quantiles:
    """An empirical distribution as (probability, value) knots; sampled by inverse CDF."""

    probs: tuple[float, ...]
    values: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        u = rng.random()
        i = min(bisect.bisect_right(self.probs, u), len(self.probs) - 1)
        p0, p1 = self.probs[i - 1], self.probs[i]
        v0, v1 = max(self.values[i - 1], 1e-3), max(self.values[i], 1e-3)
        frac = (u - p0) / (p1 - p0) if p1 > p0 else 0.0
        # Log-linear between knots: sizes span orders of magnitude.
        return math.exp(math.log(v0) + frac * (math.log(v1) - math.log(v0)))

    def median(self) -> float:
        return self.values[self.probs.index(0.5)]


@dataclass(frozen=True)
class Calibration:
    code_context: Quantiles
    code_generated: Quantiles
    conv_context: Quantiles
    conv_generated: Quantiles
    gap_shape: Quantiles  # inter-arrival gaps divided by their median
    source: str


def quantiles(values: Sequence[float], probs: Sequence[float] = PROBS) -> Quantiles:
    ordered = sorted(values)
    last = len(ordered) - 1
    return Quantiles(tuple(probs), tuple(float(ordered[round(p * last)]) for p in probs))


def _gap_shape(timestamps: Iterable[float]) -> Quantiles:
    ts = sorted(timestamps)
    gaps = [b - a for a, b in itertools.pairwise(ts) if b > a]
    med = sorted(gaps)[len(gaps) // 2]
    return quantiles([g / med for g in gaps])


def _read(path: Path) -> tuple[list[float], list[float], list[float]]:
    ts: list[float] = []
    ctx: list[float] = []
    gen: list[float] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            ts.append(datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp())
            ctx.append(float(row["ContextTokens"]))
            gen.append(float(row["GeneratedTokens"]))
    return ts, ctx, gen


def summarise(directory: Path) -> Calibration:
    _, code_ctx, code_gen = _read(directory / "AzureLLMInferenceTrace_code.csv")
    conv_ts, conv_ctx, conv_gen = _read(directory / "AzureLLMInferenceTrace_conv.csv")
    # Conversation traffic is the closer model of people thinking between requests.
    return Calibration(
        quantiles(code_ctx), quantiles(code_gen), quantiles(conv_ctx), quantiles(conv_gen),
        _gap_shape(conv_ts), source=str(directory),
    )


def _q(values: tuple[float, ...]) -> Quantiles:
    return Quantiles(PROBS, values)


# summarise(DEFAULT_DIR), rounded; regenerate if the trace changes.
BUILTIN = Calibration(
    code_context=_q((3, 75, 147, 578, 1469, 2745, 5194, 7315, 7436, 7437)),
    code_generated=_q((6, 6, 7, 9, 13, 24, 55, 90, 252, 1899)),
    conv_context=_q((2, 181, 207, 396, 1020, 1189, 2735, 4083, 4142, 14050)),
    conv_generated=_q((7, 41, 54, 85, 129, 395, 424, 451, 601, 1000)),
    gap_shape=_q((0.002, 0.055, 0.14, 0.41, 1.0, 2.08, 3.55, 4.77, 7.5, 36.4)),
    source="builtin",
)


@lru_cache(maxsize=4)
def load(directory: Path | None = DEFAULT_DIR) -> Calibration:
    """The trace-derived calibration when the files exist, else the built-in summary."""
    if directory is not None and (directory / "AzureLLMInferenceTrace_conv.csv").exists():
        try:
            return summarise(directory)
        except (OSError, ValueError, KeyError):
            pass  # A damaged copy should not stop a simulation; the summary is close enough.
    return BUILTIN
