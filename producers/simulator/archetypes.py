"""How each kind of user sends requests: human habits and tokenmaxxing bots.

Every behaviour is a generator of ``Req`` in non-decreasing event time, driven only
by the ``Actor`` it is given (its own seeded RNG), so users are independent and a
scenario is reproducible user by user. Generators are lazy: a week of a busy bot is
never held in memory.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from producers.simulator.calibration import Calibration

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR


class Req(NamedTuple):
    ts_ms: int
    session: str
    model: str
    client: str
    input_tokens: int
    output_tokens: int
    cache_read: int
    cache_write: int
    prompt: str
    latency_ms: int


@dataclass
class Actor:
    rng: random.Random
    cal: Calibration
    utc_offset_h: float
    weekend: tuple[int, ...]
    start_ms: int
    end_ms: int
    bot_start_ms: int


Behaviour = Callable[[Actor], Iterator[Req]]


def hexid(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def latency(rng: random.Random, output: int) -> int:
    # Time to first token plus decode time: what a sequential script waits for.
    return int(rng.uniform(250, 900) + output * rng.uniform(12, 30))


def think_ms(a: Actor, median_s: float, floor_s: float = 1.0) -> int:
    return int(max(floor_s, median_s * a.cal.gap_shape.sample(a.rng)) * SEC)


def days(a: Actor) -> Iterator[tuple[int, bool]]:
    """(UTC ms of local midnight, is a workday) for each local day of the run."""
    off = int(a.utc_offset_h * HOUR)
    midnight = (a.start_ms + off) // DAY * DAY - off
    while midnight < a.end_ms:
        weekday = ((midnight + off) // DAY + 3) % 7  # 1970-01-01 was a Thursday
        yield midnight, weekday not in a.weekend
        midnight += DAY


def merge(streams: list[Iterator[Req]]) -> Iterator[Req]:
    return heapq.merge(*streams, key=lambda r: r.ts_ms)


# ---- sessions ---------------------------------------------------------------------

def chat_session(a: Actor, t: int, model: str = "gpt-5", client: str = "chat-web") -> Iterator[Req]:
    rng, sid, history = a.rng, hexid(a.rng), 0
    for _ in range(rng.randint(1, 12)):
        inp, out = int(a.cal.conv_context.sample(rng)), int(a.cal.conv_generated.sample(rng))
        lat = latency(rng, out)
        yield Req(t, sid, model, client, inp, out, history, 0, hexid(rng), lat)
        history = min(history + inp + out, 120_000)
        t += lat + think_ms(a, 40, 4)


def coder_session(a: Actor, t: int, minutes: float, model: str = "claude-opus-4-1") -> Iterator[Req]:
    """An agent loop: tool calls seconds apart over a large, mostly cached context."""
    rng, sid = a.rng, hexid(a.rng)
    end, cached = t + int(minutes * MIN), rng.randint(12_000, 30_000)
    while t < end:
        new = int(a.cal.code_context.sample(rng) * 0.6) + 150
        out = int(a.cal.code_generated.sample(rng) * rng.uniform(3, 15)) + 20
        lat = latency(rng, out)
        yield Req(t, sid, model, "claude-code", new, out, cached, new, hexid(rng), lat)
        cached += new + out
        if cached > 185_000:  # the tool compacts the conversation near the limit
            cached = rng.randint(20_000, 40_000)
        pause = think_ms(a, 150, 20) if rng.random() < 0.06 else think_ms(a, 3, 0.5)
        t += lat + pause


# ---- human days -------------------------------------------------------------------

def office_day(a: Actor, midnight: int, session: Callable[[int], Iterator[Req]],
               hours: tuple[float, float] = (9.0, 17.5), break_min: float = 45) -> Iterator[Req]:
    rng = a.rng
    t = midnight + int((hours[0] + rng.gauss(0, 0.7)) * HOUR)
    end = midnight + int((hours[1] + rng.gauss(0, 0.8)) * HOUR)
    lunch = midnight + int((12.5 + rng.gauss(0, 0.3)) * HOUR)
    while t < end:
        last = t
        for req in session(t):
            last = req.ts_ms
            yield req
        t = last + int(break_min * MIN * rng.expovariate(1.0)) + 5 * MIN
        if last < lunch <= t or (t >= lunch > last - 30 * MIN and rng.random() < 0.5):
            t += rng.randint(30, 70) * MIN
            lunch = a.end_ms  # one lunch a day


def chat_days(a: Actor, hours: tuple[float, float] = (9.0, 17.5), weekend_p: float = 0.15,
              intensity: Callable[[int], float] = lambda _: 1.0) -> Iterator[Req]:
    for midnight, workday in days(a):
        level = intensity(midnight)
        if level <= 0 or (not workday and a.rng.random() > weekend_p):
            continue
        yield from office_day(a, midnight, lambda t: chat_session(a, t), hours, 70 / level)


def coder_days(a: Actor, hours: tuple[float, float] = (9.0, 18.0), weekend_p: float = 0.25,
               intensity: Callable[[int], float] = lambda _: 1.0) -> Iterator[Req]:
    for midnight, workday in days(a):
        level = intensity(midnight)
        if level <= 0 or (not workday and a.rng.random() > weekend_p):
            continue
        parallel = a.rng.choices((1, 2, 3), (0.7, 0.2, 0.1))[0]
        streams = [office_day(a, midnight, lambda t: coder_session(a, t, a.rng.uniform(15, 90)),
                              hours, 30 / level) for _ in range(parallel)]
        yield from merge(streams)


# ---- human archetypes -------------------------------------------------------------

def chat_user(a: Actor) -> Iterator[Req]:
    return chat_days(a)


def agentic_coder(a: Actor) -> Iterator[Req]:
    return coder_days(a)


def night_owl(a: Actor) -> Iterator[Req]:
    hours = (a.rng.uniform(18, 21), a.rng.uniform(25, 28))  # past midnight
    if a.rng.random() < 0.5:
        return coder_days(a, hours, weekend_p=0.6)
    return chat_days(a, hours, weekend_p=0.6)


def batch_oneoff(a: Actor) -> Iterator[Req]:
    """A person who once runs a script over a data set, as fast as the API answers."""
    rng = a.rng
    span = max(1, (a.end_ms - a.start_ms) // DAY)
    day_start = a.start_ms + rng.randrange(span) * DAY
    job_t = day_start + rng.randint(0, 20) * HOUR
    return merge([chat_days(a), _batch_job(a, job_t)])


def _batch_job(a: Actor, t: int) -> Iterator[Req]:
    rng, sid = a.rng, hexid(a.rng)
    workers = rng.choice((1, 1, 2, 4))
    pause = rng.choice((0, 0, 200, 1000))  # some scripts sleep to stay under a rate limit
    items = rng.randint(300, 3000) // workers
    template = rng.randint(200, 1500)

    def worker(t: int) -> Iterator[Req]:
        for _ in range(items):
            inp, out = template + int(a.cal.conv_context.sample(rng)), int(a.cal.conv_generated.sample(rng))
            lat = latency(rng, out)
            yield Req(t, sid, "gpt-5-mini", "api", inp, out, 0, 0, hexid(rng), lat)
            t += lat + pause + rng.randint(5, 120)

    return merge([worker(t + i * 150) for i in range(workers)])


def new_joiner(a: Actor) -> Iterator[Req]:
    joined = a.start_ms + a.rng.randint(0, 2) * DAY

    def ramp(midnight: int) -> float:
        return 0.0 if midnight + DAY < joined else min(1.0, 0.2 + 0.2 * (midnight - joined) / DAY)

    if a.rng.random() < 0.5:
        return coder_days(a, intensity=ramp)
    return chat_days(a, intensity=ramp)


def on_call(a: Actor) -> Iterator[Req]:
    """Normal days plus night pages: a burst of urgent requests at any hour."""
    return merge([coder_days(a, weekend_p=0.3), _incidents(a)])


def _incidents(a: Actor) -> Iterator[Req]:
    for midnight, _ in days(a):
        if a.rng.random() < 0.45:
            t = midnight + int(a.rng.uniform(0, 7) * HOUR)
            yield from coder_session(a, t, a.rng.uniform(15, 120), model="claude-sonnet-4-5")


# ---- bot archetypes ---------------------------------------------------------------
# Each runs from a.bot_start_ms to the end on top of its owner's ordinary human use.

def _prompts(a: Actor, low: int, high: int, unique_p: float) -> Callable[[], tuple[str, int]]:
    """A prompt source: a fixed pool of templates (hash, size), or fresh text each time."""
    rng = a.rng
    if rng.random() < unique_p:
        return lambda: (hexid(rng), int(a.cal.conv_context.sample(rng)) + 300)
    pool = [(hexid(rng), int(a.cal.conv_context.sample(rng)) + 300) for _ in range(rng.randint(low, high))]
    return lambda: pool[rng.randrange(len(pool))]


def _owner(a: Actor) -> Iterator[Req]:
    return chat_days(a) if a.rng.random() < 0.6 else coder_days(a)


def fixed_loop(a: Actor) -> Iterator[Req]:
    return merge([_owner(a), _fixed_loop(a)])


def _fixed_loop(a: Actor) -> Iterator[Req]:
    rng = a.rng
    period = int(rng.uniform(10, 180) * SEC)
    cron = rng.random() < 0.5  # cron-like fixed start times, or sleep-after-response
    prompts = [hexid(rng) for _ in range(rng.randint(1, 3))]
    size = int(a.cal.conv_context.sample(rng)) + rng.randint(2000, 30000)  # padded to burn tokens
    new_session = rng.random() < 0.5
    sid, t, i = hexid(rng), a.bot_start_ms, 0
    while t < a.end_ms:
        out = int(a.cal.conv_generated.sample(rng))
        lat = latency(rng, out)
        if new_session:
            sid = hexid(rng)
        yield Req(t, sid, "claude-sonnet-4-5", "api", size + rng.randint(0, 3), out, 0, 0,
                  prompts[i % len(prompts)], lat)
        t += period + (rng.randint(-30, 30) if cron else lat)
        i += 1


def jittered_loop(a: Actor) -> Iterator[Req]:
    return merge([_owner(a), _jittered_loop(a)])


def _jittered_loop(a: Actor) -> Iterator[Req]:
    rng = a.rng
    period = rng.uniform(20, 120) * SEC
    spread = rng.uniform(0.3, 0.7)
    prompt = _prompts(a, 5, 200, unique_p=0.35)
    sid, t = hexid(rng), a.bot_start_ms
    while t < a.end_ms:
        ph, size = prompt()
        out = int(a.cal.conv_generated.sample(rng))
        lat = latency(rng, out)
        if rng.random() < 0.02:
            sid = hexid(rng)
        yield Req(t, sid, "gpt-5", "api", size, out, 0, 0, ph, lat)
        t += lat + int(period * rng.uniform(1 - spread, 1 + spread))


def office_hours_bot(a: Actor) -> Iterator[Req]:
    """Runs only in working hours with human-like gaps, to hide in the daily pattern."""
    return merge([_owner(a), _office_hours_bot(a)])


def _office_hours_bot(a: Actor) -> Iterator[Req]:
    rng = a.rng
    begin, finish = rng.uniform(8.5, 10), rng.uniform(16.5, 18)
    lunch = rng.random() < 0.5
    median = rng.uniform(15, 60)
    prompt = _prompts(a, 30, 300, unique_p=0.3)
    for midnight, workday in days(a):
        t = midnight + int((begin + rng.uniform(-0.05, 0.05)) * HOUR)
        end = midnight + int((finish + rng.uniform(-0.05, 0.05)) * HOUR)
        if not workday or end < a.bot_start_ms:
            continue
        t, sid, renew = max(t, a.bot_start_ms), hexid(rng), t + rng.randint(15, 45) * MIN
        while t < end:
            if t >= renew:
                sid, renew = hexid(rng), t + rng.randint(15, 45) * MIN
            ph, size = prompt()
            out = int(a.cal.conv_generated.sample(rng))
            lat = latency(rng, out)
            yield Req(t, sid, "claude-sonnet-4-5", "claude-code", size, out, 0, 0, ph, lat)
            t += lat + min(think_ms(a, median, 2), 6 * MIN)
            if lunch and midnight + 12 * HOUR <= t < midnight + 12 * HOUR + 45 * MIN:
                t = midnight + 12 * HOUR + 45 * MIN


def context_burner(a: Actor) -> Iterator[Req]:
    return merge([_owner(a), _context_burner(a)])


def _context_burner(a: Actor) -> Iterator[Req]:
    """Pads every request to near the context limit, uncached, for maximum tokens."""
    rng = a.rng
    median = rng.uniform(30, 180)
    repeat = rng.random() < 0.5
    ph, sid, t = hexid(rng), hexid(rng), a.bot_start_ms
    while t < a.end_ms:
        out = rng.randint(5, 120)
        lat = latency(rng, out) + 4000
        yield Req(t, sid, "claude-sonnet-4-5", "api", rng.randint(150_000, 199_000), out, 0, 0,
                  ph if repeat else hexid(rng), lat)
        t += lat + int(median * SEC * math.exp(rng.gauss(0, 0.35)))
        if rng.random() < 0.05:
            sid = hexid(rng)


def parallel_burner(a: Actor) -> Iterator[Req]:
    """Many agent sessions at once, around the clock."""
    workers = a.rng.randint(6, 16)
    return merge([_owner(a)] + [_agent_worker(a, a.bot_start_ms + i * 7 * SEC) for i in range(workers)])


def _agent_worker(a: Actor, t: int) -> Iterator[Req]:
    while t < a.end_ms:
        last = t
        for req in coder_session(a, t, a.rng.uniform(20, 90), model="claude-sonnet-4-5"):
            last = req.ts_ms
            yield req
        t = last + a.rng.randint(5, 90) * SEC


def slow_ramp(a: Actor) -> Iterator[Req]:
    """A loop whose rate grows a little every day, to look like a user getting busier."""
    return merge([_owner(a), _slow_ramp(a)])


def _slow_ramp(a: Actor) -> Iterator[Req]:
    rng = a.rng
    rate0, growth = rng.uniform(3, 8), rng.uniform(1.6, 2.4)  # requests/hour, x per day
    prompt = _prompts(a, 50, 500, unique_p=0.4)
    sid, t = hexid(rng), a.bot_start_ms
    while t < a.end_ms:
        ph, size = prompt()
        out = int(a.cal.conv_generated.sample(rng))
        yield Req(t, sid, "gpt-5", "api", size, out, 0, 0, ph, latency(rng, out))
        rate = min(600.0, rate0 * growth ** ((t - a.bot_start_ms) / DAY))
        t += int(rng.expovariate(rate) * HOUR) + 1
        if rng.random() < 0.01:
            sid = hexid(rng)


def replay(a: Actor) -> Iterator[Req]:
    return merge([_owner(a), _replay(a)])


def _replay(a: Actor) -> Iterator[Req]:
    """Records one human-looking agent session, then plays it back over and over."""
    rng = a.rng
    tape = list(coder_session(a, 0, rng.uniform(40, 150)))
    t = a.bot_start_ms
    while t < a.end_ms:
        sid = hexid(rng)
        for req in tape:
            yield req._replace(ts_ms=t + req.ts_ms, session=sid)
        t += tape[-1].ts_ms + tape[-1].latency_ms + rng.randint(10, 600) * SEC


HUMANS: dict[str, Behaviour] = {
    "chat": chat_user, "agentic_coder": agentic_coder, "night_owl": night_owl,
    "batch_oneoff": batch_oneoff, "new_joiner": new_joiner, "on_call": on_call,
}
HUMAN_MIX: dict[str, float] = {
    "chat": 0.40, "agentic_coder": 0.25, "night_owl": 0.08,
    "batch_oneoff": 0.10, "new_joiner": 0.08, "on_call": 0.09,
}
BOTS: dict[str, Behaviour] = {
    "fixed_loop": fixed_loop, "jittered_loop": jittered_loop, "office_hours_bot": office_hours_bot,
    "context_burner": context_burner, "parallel_burner": parallel_burner,
    "slow_ramp": slow_ramp, "replay": replay,
}
