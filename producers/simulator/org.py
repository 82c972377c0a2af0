"""A labelled synthetic organisation: who is who, and their merged event stream.

Users are laid out from the seed alone (archetype, org, bot start), each user
gets an RNG derived from (seed, user index), and the per-user lazy streams are
merged with a heap, so memory grows with the number of users, not of events.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from producers.simulator.archetypes import BOTS, DAY, HOUR, HUMAN_MIX, HUMANS, Actor, Req
from producers.simulator.calibration import Calibration, load

PROVIDERS = {"claude": "anthropic", "gpt": "openai", "gemini": "google"}


@dataclass(frozen=True)
class Org:
    path: str
    utc_offset_h: float
    weekend: tuple[int, ...] = (5, 6)  # Monday is 0


DEFAULT_ORGS: tuple[Org, ...] = (
    Org("acme/eng/infra", -8),
    Org("acme/eng/ml", -5),
    Org("acme/sales/emea", 1),
    Org("acme/eng/apac", 8),
    Org("acme/ops/mena", 3, weekend=(4, 5)),
)


@dataclass(frozen=True)
class UserSpec:
    index: int
    user_id: str
    org: Org
    archetype: str
    bot_start_ms: int  # = end of the run for humans

    @property
    def is_bot(self) -> bool:
        return self.archetype in BOTS


@dataclass
class Scenario:
    seed: int
    start_ms: int
    end_ms: int
    users: list[UserSpec]
    calibration: Calibration = field(repr=False)

    @property
    def labels(self) -> dict[str, str]:
        return {u.user_id: u.archetype for u in self.users}

    @property
    def bot_starts(self) -> dict[str, int]:
        return {u.user_id: u.bot_start_ms for u in self.users if u.is_bot}

    def events(self) -> Iterator[dict[str, Any]]:
        for _, event in self.timed_events():
            yield event

    def timed_events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(ts_ms, event): saves consumers that trust the simulator a timestamp parse."""
        streams = [self._user_stream(u) for u in self.users]
        for ts, _, event in heapq.merge(*streams):
            yield ts, event

    def _user_stream(self, user: UserSpec) -> Iterator[tuple[int, int, dict[str, Any]]]:
        actor = Actor(random.Random(f"{self.seed}:{user.index}"), self.calibration,
                      user.org.utc_offset_h, user.org.weekend, self.start_ms, self.end_ms,
                      user.bot_start_ms)
        behaviour = (BOTS | HUMANS)[user.archetype]
        seq = 0
        for req in behaviour(actor):
            if not self.start_ms <= req.ts_ms < self.end_ms:
                continue
            yield req.ts_ms, user.index, _event(self.seed, user, seq, req)
            seq += 1


def rfc3339(ts_ms: int) -> str:
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def _event(seed: int, user: UserSpec, seq: int, req: Req) -> dict[str, Any]:
    return {
        "event_id": f"sim{seed}-{user.index:05d}-{seq:08d}",
        "timestamp": rfc3339(req.ts_ms),
        "user_id": user.user_id,
        "org_id": user.org.path,
        "model": req.model,
        "provider": PROVIDERS.get(req.model.split("-")[0], "other"),
        "input_tokens": req.input_tokens,
        "output_tokens": req.output_tokens,
        "cache_read_tokens": req.cache_read,
        "cache_write_tokens": req.cache_write,
        "client": req.client,
        "session_id": req.session,
        "prompt_hash": req.prompt,
        "latency_ms": req.latency_ms,
    }


def _archetypes(rng: random.Random, humans: int, bots_per_archetype: int) -> list[str]:
    kinds: list[str] = []
    for name, share in HUMAN_MIX.items():
        kinds += [name] * round(share * humans)
    while len(kinds) < humans:
        kinds.append("chat")
    kinds = kinds[:humans]
    for name in BOTS:
        kinds += [name] * bots_per_archetype
    rng.shuffle(kinds)  # ids and order must not reveal who is a bot
    return kinds


def build(seed: int, humans: int, days: float, start_ms: int, bots_per_archetype: int = 2,
          orgs: Sequence[Org] = DEFAULT_ORGS, calibration: Calibration | None = None) -> Scenario:
    rng = random.Random(f"layout:{seed}")
    end_ms = start_ms + int(days * DAY)
    users = []
    for index, kind in enumerate(_archetypes(rng, humans, bots_per_archetype)):
        org = orgs[rng.randrange(len(orgs))]
        if kind == "slow_ramp":
            bot_start = start_ms + int(rng.uniform(0.05, 0.2) * days * DAY)
        elif kind in BOTS:
            bot_start = start_ms + int(rng.uniform(6 * HOUR, max(7 * HOUR, 0.35 * days * DAY)))
        else:
            bot_start = end_ms
        users.append(UserSpec(index, f"u{seed}-{rng.getrandbits(40):010x}", org, kind, bot_start))
    return Scenario(seed, start_ms, end_ms, users, calibration or load())


def simulate(seed: int, humans: int, days: float, start_ms: int, bots_per_archetype: int = 2,
             orgs: Sequence[Org] = DEFAULT_ORGS) -> Iterator[dict[str, Any]]:
    """CONTRACT §1 events of a synthetic org, in non-decreasing event time."""
    return build(seed, humans, days, start_ms, bots_per_archetype, orgs).events()


def labels(seed: int, humans: int, days: float, start_ms: int, bots_per_archetype: int = 2,
           orgs: Sequence[Org] = DEFAULT_ORGS) -> dict[str, str]:
    """user_id -> archetype for the same arguments as ``simulate``."""
    return build(seed, humans, days, start_ms, bots_per_archetype, orgs).labels
