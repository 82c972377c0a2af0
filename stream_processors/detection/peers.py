"""Volume against peers in the same org: what a typical day of a user's org looks like.

Every completed day of a user (the tokens of the day it just left, handed over when
its first event of a later day arrives) is one *user-day* of its org. Per org we
keep a decayed mean and variance of log(tokens) over roughly the last 64 user-days:
``exp(mean)`` is the typical (geometric-mean) day of the org's people, robust to a
few very heavy users because it is taken in log space and clipped at 3 sd.

Peers are counted per source partition of the usage topic: each partition sees a
hash sample (1/P) of the org's users, processed in offset order, so the figures
are a deterministic function of that partition's events. A replay of last month,
a restart, and the offline library fed the same events give the same numbers.
The state is a few floats per (partition, org), kept with the partition's
progress record (see ``detection/agent.py``), so it moves atomically with the
offset it describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

WINDOW = 64  # user-days a figure mostly reflects
MIN_PEERS = 8  # user-days before an org's figure is used
CLIP_SD = 3.0
MAX_ORGS = 4096  # per partition; the least recently updated org goes first


@dataclass(frozen=True)
class PeerReference:
    """What a typical day of the org looks like, for the reasons of a score."""

    org_id: str
    typical_tokens: float  # geometric mean of recent user-days
    spread: float  # sd of log(tokens)
    user_days: int


class OrgPeers:
    __slots__ = ("m2", "mean", "n", "touched")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0, touched: int = 0) -> None:
        self.n, self.mean, self.m2, self.touched = n, mean, m2, touched

    def add(self, tokens: float) -> None:
        x = math.log(tokens + 1.0)
        if self.n >= 16:  # clip: one bot's thousand-fold day must not become "typical"
            sd = math.sqrt(max(0.0, self.m2 - self.mean * self.mean))
            x = min(max(x, self.mean - CLIP_SD * sd), self.mean + CLIP_SD * sd)
        a = 1.0 / (self.n + 1) if self.n < WINDOW else 1.0 / WINDOW
        self.mean += a * (x - self.mean)
        self.m2 += a * (x * x - self.m2)
        self.n += 1


class PartitionPeers:
    """The peer figures of every org seen in one partition."""

    __slots__ = ("orgs", "seq")

    def __init__(self) -> None:
        self.orgs: dict[str, OrgPeers] = {}
        self.seq = 0  # contributions so far: orders orgs for eviction

    def add(self, org_id: str, tokens: float) -> None:
        if tokens <= 0:
            return
        org = self.orgs.get(org_id)
        if org is None:
            if len(self.orgs) >= MAX_ORGS:
                del self.orgs[min(self.orgs, key=lambda o: self.orgs[o].touched)]
            org = self.orgs[org_id] = OrgPeers()
        self.seq += 1
        org.touched = self.seq
        org.add(tokens)

    def reference(self, org_id: str) -> PeerReference | None:
        org = self.orgs.get(org_id)
        if org is None or org.n < MIN_PEERS:
            return None
        spread = math.sqrt(max(0.0, org.m2 - org.mean * org.mean))
        return PeerReference(org_id, math.exp(org.mean) - 1.0, spread, org.n)

    def to_json(self) -> dict[str, object]:
        # Floats survive a JSON round trip exactly (shortest repr), so a restored copy
        # continues bit for bit where the original stopped.
        return {"seq": self.seq, "orgs": {k: [o.n, o.mean, o.m2, o.touched] for k, o in self.orgs.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> PartitionPeers:
        peers = cls()
        if not data:
            return peers
        peers.seq = int(data.get("seq", 0))  # type: ignore[call-overload]
        orgs = data.get("orgs") or {}
        assert isinstance(orgs, dict)
        for org_id, (n, mean, m2, touched) in orgs.items():
            peers.orgs[org_id] = OrgPeers(int(n), float(mean), float(m2), int(touched))
        return peers
