"""Turn a user's features into a bot score in [0, 1] with reasons a person can check.

Each signal is a strength in [0, 1] times a weight; the score is a logistic of the
weighted sum. Evidence that people also show now and then (a long day, a flat hour,
regular sizes, a few repeats) stays under 0.5 alone, and it takes two kinds to cross
it: heavy agentic coders are bursty but human-paced, batch jobs are regular but short
and varied, and neither piles up a second kind. Evidence that people do not keep up
(a clock held for 25 minutes in one stream, prompts re-sent nearly verbatim in a row,
session ids rotated with no pause 8 times in 12, near-limit uncached contexts over
and over) is enough on its own, which is what makes detection fast.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from stream_processors.detection.features import HOUR_MS, SAMPLE_MASK, UserFeatures
from stream_processors.detection.peers import PeerReference
from stream_processors.detection.streams import Stream

BIAS = 0.95  # weighted evidence at which the score is 0.5
STEEPNESS = 6.0


@dataclass(frozen=True)
class Signal:
    name: str
    strength: float  # 0..1
    weight: float
    reason: str

    @property
    def evidence(self) -> float:
        return self.strength * self.weight


def _clamp(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _duration(ms: float) -> str:
    minutes = ms / 60_000
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.0f} h" if minutes < 72 * 60 else f"{minutes / 1440:.1f} days"


def cadence(f: UserFeatures, now: int) -> Signal:
    """Clockwork gaps: strong fast when near-periodic, slowly when only jittered."""
    sd, since = f.gap_sd_log(), f.regular_since
    if f.ss_regular_since and (since == 0 or f.ss_regular_since < since):
        sd, since = f.session_gap_sd_log(), f.ss_regular_since
    if since == 0:
        return Signal("cadence", 0.0, 0.7, "")
    dur = now - since
    periodic = _clamp((0.25 - sd) / 0.15) * _clamp(dur / (30 * 60_000))
    jittered = _clamp((0.5 - sd) / 0.2) * _clamp(dur / (8 * HOUR_MS))
    gap_sd = math.sqrt(max(0.0, f.g_m2 - f.g_mean**2))
    reason = f"requests every {f.g_mean:.1f} s ± {gap_sd:.1f} s for {_duration(dur)}"
    return Signal("cadence", max(periodic, jittered), 0.7, reason)


def repetition(f: UserFeatures) -> Signal:
    """People rarely re-send a prompt verbatim; scripts cycle through a few templates."""
    share = f.top_prompt_share()
    top = _clamp((share - 0.2) / 0.5) * _clamp(f.mg_n / 40)
    repeat = _clamp((f.rep - 0.2) / 0.6) * _clamp(f.rep_n / 24)
    volume = _clamp((f.repeats_estimate() - 50) / 250)
    hits, sampled = f.recent_repeats(12)
    # A replay: nearly every recent prompt was sent before, in a row (1 in 8 sampled, so
    # 12 samples are ~100 requests; a stray re-send or Bloom false hit is one bit, not 10).
    run = _clamp((hits - 6) / 4) * (sampled >= 12)
    best = max(top, repeat, volume, run)
    if run > max(top, repeat, volume):
        return Signal("repetition", run, 1.0, f"{hits} of the last {sampled} sampled prompts "
                      f"(~{sampled * (SAMPLE_MASK + 1)} requests) were sent before, verbatim")
    if best == top:
        return Signal("repetition", top, 1.0, f"same prompt {share:.0%} of {f.mg_n:,} requests")
    return Signal("repetition", best, 1.0, f"{f.rep:.0%} of prompts were sent before "
                  f"(~{f.repeats_estimate():,.0f} repeats in the last 6-12 h)")


def no_rest(f: UserFeatures, now: int) -> Signal:
    if f.hours_observed() < 23:
        return Signal("no_rest", 0.0, 0.6, "")
    hours, idle = f.active_hours(24), f.longest_idle_min(now)
    strength = _clamp((hours - 18) / 5) * _clamp((240 - idle) / 180)
    return Signal("no_rest", strength, 0.6, f"active {hours} of the last 24 hours, longest pause {idle} min")


def concurrency(f: UserFeatures) -> Signal:
    return Signal("concurrency", _clamp((f.conc - 3.5) / 4), 1.0,
                  f"{f.conc:.1f} sessions running at once (10-minute average)")


def context_burn(f: UserFeatures) -> Signal:
    # Share catches a dedicated burner; the count catches one hiding among its owner's requests.
    strength = max(_clamp((f.big - 0.3) / 0.5) * _clamp(1 - f.cache_share * 2) * _clamp(f.n / 20),
                   _clamp((f.big_hits - 20) / 40))
    return Signal("context_burn", strength, 0.9,
                  f"{f.big:.0%} of requests send ≥100k uncached tokens (mean {f.unc_mean / 1000:.0f}k)")


def flat_day(f: UserFeatures) -> Signal:
    if f.hours_observed() < 8:
        return Signal("flat_day", 0.0, 0.6, "")
    active = f.active_slots(48)
    return Signal("flat_day", _clamp((active - 45) / 3), 0.4,
                  f"active in {active} of the last 48 ten-minute slots, no breaks")


def _growth(counts: list[float], observed_h: float, weight: float, where: str) -> Signal:
    """Steady growth across the last six complete 6 h blocks, day and night alike (people sleep)."""
    counts = counts[-7:-1]
    steady = all(b >= 0.8 * a for a, b in itertools.pairwise(counts))
    if observed_h < 36 or min(counts) < 3 or not steady:
        return Signal("growth", 0.0, weight, "")
    logs = [math.log(c) for c in counts]
    n = len(logs)
    xm, ym = (n - 1) / 2, sum(logs) / n
    sxx = sum((i - xm) ** 2 for i in range(n))
    slope = sum((i - xm) * (y - ym) for i, y in enumerate(logs)) / sxx * 4  # per day
    per_day = math.exp(slope)
    return Signal("growth", _clamp((slope - math.log(1.3)) / math.log(1.5)), weight,
                  f"requests{where} growing ×{per_day:.1f} a day for 36 h without a night's break")


def growth(f: UserFeatures) -> Signal:
    return _growth(f.block_counts(), f.hours_observed(), 0.7, "")


def size_regularity(f: UserFeatures) -> Signal:
    sd = f.size_sd_log()
    strength = _clamp((0.3 - sd) / 0.2) * _clamp((f.n - 30) / 50)
    return Signal("size_regularity", strength, 0.4, f"request size varies only ±{sd:.0%}")


PEER_FROM = math.log(50)  # heavy honest users reach ~25x a typical day, the heaviest ~150x
PEER_FULL = math.log(1000)


def peer_volume(f: UserFeatures, peers: PeerReference | None) -> Signal:
    """Today's tokens against a typical day of the user's org. Weak on purpose: volume
    alone is what tokenmaxxing games, and heavy agentic coders run far above their
    peers too; it only adds to evidence of another kind, and tells a reviewer the scale."""
    if peers is None or peers.typical_tokens <= 0 or f.day_tokens <= 0:
        return Signal("peer_volume", 0.0, 0.25, "")
    ratio = f.day_tokens / peers.typical_tokens
    strength = _clamp((math.log(max(ratio, 1e-9)) - PEER_FROM) / (PEER_FULL - PEER_FROM))
    return Signal("peer_volume", strength, 0.25,
                  f"{f.day_tokens:,.0f} tokens today, {ratio:,.0f}× a typical day in {peers.org_id} "
                  f"({peers.typical_tokens:,.0f}, over {peers.user_days} recent user-days)")


NOTHING = Signal("none", 0.0, 0.0, "")  # a stream signal without evidence: never shown
STALE_MS = 2 * HOUR_MS  # a stream silent this long no longer testifies
EXACT_RUN = 200  # near-identical gaps over this many requests: the early path
BOUNDED_AFTER = 12 * 60_000  # people keep a band of gaps for minutes (agent bursts), not longer
HELD = 25 * 60_000  # a clock kept this long is evidence on its own


def stream_cadence(s: Stream) -> Signal:
    """A clock inside one stream: a tight robust spread of gaps, gaps that stay within a
    narrow band (a sleep(uniform(a, b)) loop), or gaps without a single pause. People's
    fastest stretches and agent tool loops pass the looser two tests for minutes at a
    time, a script for hours: those count only after the stream has kept it up for
    ``BOUNDED_AFTER``. Held for ``HELD`` (or near-identical over a full ring of gaps, the
    early path), this is enough on its own."""
    if s.regular_since == 0:
        return NOTHING
    dur = s.last_ts - s.regular_since
    tight = _clamp((0.32 - s.rsd) / 0.17) * _clamp(dur / (15 * 60_000))
    bounded = max(_clamp((1.45 - s.span) / 0.35), _clamp((0.6 - s.hi) / 0.2))
    strength = max(tight, bounded * _clamp((dur - BOUNDED_AFTER) / (HELD - BOUNDED_AFTER)))
    if strength == 0:
        return NOTHING
    held = 1.0 if s.near >= 0.8 and s.n >= EXACT_RUN else _clamp((dur - BOUNDED_AFTER) / (HELD - BOUNDED_AFTER))
    if tight >= bounded:
        how = f"± {s.med_gap * s.rsd:.1f} s"
    else:
        how = (f"(gaps within ×{math.exp(s.span):.1f} of one another, none over "
               f"{math.exp(s.hi):.1f}× the median)")
    reason = f"requests every {s.med_gap:.1f} s {how} for {_duration(dur)} from {s.label}"
    return Signal("cadence", strength, 0.7 + 0.35 * held, reason)


def stream_no_rest(s: Stream, now: int) -> Signal:
    """One tool/model busy every hour for most of a day: a process, not a person's shift
    (people's busiest streams stay under ~15 consecutive hours)."""
    hours = s.hours_without_rest(now)
    if hours <= 16:
        return NOTHING
    return Signal("no_rest", _clamp((hours - 16) / 6), 0.8,
                  f"requests from {s.label} in each of the last {hours} hours")


def stream_growth(s: Stream, now: int) -> Signal:
    if now - s.first_ts < 36 * HOUR_MS:
        return NOTHING
    return _growth([float(c) for c in s.block_counts(now)], (now - s.first_ts) / HOUR_MS, 0.7,
                   f" from {s.label}")


def stream_sessions(s: Stream) -> Signal:
    """Session ids rotated on a timer: each new one begins without a pause, never two at once."""
    seamless, new = s.seamless_sessions(12)
    if new < 8 or seamless <= 4:
        return NOTHING
    return Signal("sessions", _clamp((seamless - 4) / 4), 1.0,
                  f"{seamless} of the last {new} sessions from {s.label} began with no pause after "
                  f"the previous one, never two at once")


def stream_repetition(s: Stream) -> Signal:
    share = s.repeat_share()
    strength = _clamp((share - 0.2) / 0.4) * _clamp((s.n - 6) / 14)
    if strength == 0:
        return NOTHING
    return Signal("repetition", strength, 1.0,
                  f"same prompts again in {share:.0%} of the last {s.recent()} requests from {s.label}")


def stream_context(s: Stream) -> Signal:
    share = s.big_share()
    if share <= 0.3:
        return NOTHING
    return Signal("context_burn", _clamp((share - 0.3) / 0.5) * _clamp(s.n / 12), 0.9,
                  f"{share:.0%} of the last {s.recent()} requests from {s.label} send ≥100k uncached tokens")


def signals(f: UserFeatures, now: int, peers: PeerReference | None = None) -> list[Signal]:
    found = {s.name: s for s in (cadence(f, now), repetition(f), no_rest(f, now), concurrency(f),
                                 context_burn(f), flat_day(f), growth(f), size_regularity(f),
                                 peer_volume(f, peers),
                                 Signal("sessions", 0.0, 1.0, ""))}  # sessions: streams only
    for stream in f.streams.table.values():
        if now - stream.last_ts > STALE_MS:
            continue
        for sig in (stream_cadence(stream), stream_repetition(stream), stream_context(stream),
                    stream_no_rest(stream, now), stream_growth(stream, now), stream_sessions(stream)):
            if sig.strength > 0 and sig.evidence > found[sig.name].evidence:
                found[sig.name] = sig
    return list(found.values())


def score(f: UserFeatures, now: int | None = None,
          peers: PeerReference | None = None) -> tuple[float, list[str]]:
    """(bot_score, reasons strongest first); reasons only for signals that count."""
    if f.n == 0:
        return 0.0, []
    found = signals(f, f.last_ts if now is None else now, peers)
    total = sum(s.evidence for s in found)
    value = 1.0 / (1.0 + math.exp(-STEEPNESS * (total - BIAS)))
    ranked = sorted((s for s in found if s.strength >= 0.3), key=lambda s: -s.evidence)
    return value, [s.reason for s in ranked]
