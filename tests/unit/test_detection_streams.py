"""Per-stream evidence: a script hidden in its owner's traffic, and people who are not scripts."""

from __future__ import annotations

import random

from stream_processors.detection import Detector
from stream_processors.detection.features import UserFeatures
from stream_processors.detection.scoring import score
from stream_processors.detection.streams import MAX_STREAMS, Streams

T0 = 1_794_787_200_000
MIN = 60_000
H = 60 * MIN


def _coder(rng: random.Random, start: int, hours: float) -> list[tuple[int, dict]]:
    """Bursty agent sessions: tool calls seconds apart, long pauses, big cached context."""
    out, t, sid = [], start, 0
    while t < start + hours * H:
        sid += 1
        for _ in range(rng.randint(30, 200)):
            t += int(rng.uniform(500, 3000) + rng.choice((20, 60, 400)) * rng.uniform(12, 30))
            if rng.random() < 0.06:
                t += int(150_000 * rng.lognormvariate(0, 1))
            out.append((t, {"client": "claude-code", "model": "claude-opus-4-1", "session_id": f"c{sid}",
                            "input_tokens": rng.randint(200, 4000), "cache_read_tokens": 120_000,
                            "prompt_hash": f"{rng.getrandbits(64):016x}"}))
        t += rng.randint(5, 40) * MIN
    return out


def _loop(rng: random.Random, start: int, hours: float, period_s: float, spread: float,
          prompts: int | None) -> list[tuple[int, dict]]:
    """sleep(period * uniform(1 - spread, 1 + spread)) after each answer; a new session per call."""
    pool = [f"{rng.getrandbits(64):016x}" for _ in range(prompts or 1)]
    out, t = [], start
    while t < start + hours * H:
        ph = rng.choice(pool) if prompts else f"{rng.getrandbits(64):016x}"
        out.append((t, {"client": "api", "model": "gpt-5", "session_id": f"{rng.getrandbits(32):x}",
                        "input_tokens": rng.randint(300, 3000), "cache_read_tokens": 0, "prompt_hash": ph}))
        t += int(period_s * 1000 * rng.uniform(1 - spread, 1 + spread)) + rng.randint(500, 5000)
    return out


def _run(events: list[tuple[int, dict]]) -> tuple[Detector, list]:
    det, alerts = Detector(), []
    for i, (ts, e) in enumerate(sorted(events, key=lambda x: x[0])):
        wire = {"event_id": f"e{i}", "ts_ms": ts, "user_id": "u", "org_id": "o", "output_tokens": 100,
                "cache_write_tokens": 0, **e}
        alerts += [(ts, a) for a in det.observe(wire) if a.kind == "tokenmaxxing"]
    return det, alerts


def test_periodic_stream_under_human_noise_is_detected_within_an_hour() -> None:
    rng = random.Random(1)
    start = T0 + 3 * H
    _, alerts = _run(_coder(rng, T0, 8) + _loop(rng, start, 3, 45, 0.0, prompts=3))
    assert alerts and alerts[0][0] - start <= H
    reasons = alerts[0][1].reasons
    assert any(r.startswith("requests every") and r.endswith("from api/gpt-5") for r in reasons), reasons
    assert any(r.startswith("same prompts again in") for r in reasons), reasons


def test_jittered_loop_with_unique_prompts_is_caught_by_its_bounded_gaps() -> None:
    rng = random.Random(2)
    start = T0 + 2 * H
    det, alerts = _run(_coder(rng, T0, 6) + _loop(rng, start, 3, 60, 0.5, prompts=None))
    assert alerts and alerts[0][0] - start <= 90 * MIN
    stream = det.users["u"].features.streams.table["api/gpt-5"]
    assert stream.span < 1.0 and stream.regular_since


def test_agentic_coder_bursty_sessions_are_not_a_cadence() -> None:
    det, alerts = _run(_coder(random.Random(3), T0, 9))
    assert not alerts
    stream = det.users["u"].features.streams.table["claude-code/claude-opus-4-1"]
    assert stream.span > 1.2
    assert det.risk("u")[0] < 0.2


def test_one_off_batch_job_is_not_flagged() -> None:
    rng = random.Random(4)
    t, events = T0 + 10 * H, []
    for _ in range(1500):  # sequential script: the gap is the answer's latency
        t += int(rng.uniform(250, 900) + rng.choice((40, 130, 400)) * rng.uniform(12, 30)) + 50
        events.append((t, {"client": "api", "model": "gpt-5-mini", "session_id": "b",
                           "input_tokens": rng.randint(300, 2000), "cache_read_tokens": 0,
                           "prompt_hash": f"{rng.getrandbits(64):016x}"}))
    det, alerts = _run(_coder(rng, T0, 9) + events)
    assert not alerts and det.risk("u")[0] < 0.5


def test_busy_stream_survives_many_small_ones_and_state_round_trips() -> None:
    streams = Streams()
    for i in range(400):
        streams.update(T0 + i * 10_000, "api", "bot-model", 1000, "ab12")
        streams.update(T0 + i * 10_000 + 1, f"tool-{i % 7}", "m", 1000, f"{i:016x}")
    assert len(streams.table) == MAX_STREAMS and "api/bot-model" in streams.table
    assert streams.table["api/bot-model"].repeat_share() > 0.95
    data = streams.to_bytes()
    again, end = Streams.from_bytes(data, 0)
    assert end == len(data) and again.to_bytes() == data
    f = UserFeatures()
    f.streams = streams
    assert len(f.to_bytes()) <= 4096 and UserFeatures.from_bytes(f.to_bytes()).to_bytes() == f.to_bytes()
    assert score(f)[0] >= 0.0


def test_wide_jitter_loop_without_pauses_is_caught_within_45_minutes() -> None:
    # sleep(uniform(0.3, 1.7) * 30 s): too wide a band for the spread tests, but it never pauses.
    rng = random.Random(5)
    start = T0 + 2 * H
    _, alerts = _run(_coder(rng, T0, 6) + _loop(rng, start, 3, 30, 0.7, prompts=None))
    assert alerts and alerts[0][0] - start <= 45 * MIN
    assert any(r.startswith("requests every") and "from api/gpt-5" in r for r in alerts[0][1].reasons)


def test_a_pause_ends_a_cadence_and_its_backdating() -> None:
    streams = Streams()
    for i in range(30):
        streams.update(T0 + i * 60_000, "api", "m", 1000, f"{i:016x}")
    stream = streams.table["api/m"]
    assert stream.regular_since
    resume = T0 + 30 * 60_000 + 2 * H
    streams.update(resume, "api", "m", 1000, "ff")
    assert stream.regular_since == 0
    for i in range(1, 20):
        streams.update(resume + i * 60_000, "api", "m", 1000, f"{i + 100:016x}")
    assert stream.regular_since >= resume  # not dated back across the two-hour pause


def test_replayed_session_is_caught_soon_after_the_replay_begins() -> None:
    rng = random.Random(6)
    tape = _coder(rng, 0, 0.75)  # one recorded agent session, then played back again and again
    tape = [(t - tape[0][0], e) for t, e in tape if t - tape[0][0] < 45 * MIN]
    start, events = T0 + 3 * H, []
    for play in range(4):
        offset = start + play * (tape[-1][0] + 2 * MIN)
        events += [(offset + t, {**e, "session_id": f"replay-{play}"}) for t, e in tape]
    replay_at = start + tape[-1][0] + 2 * MIN
    _, alerts = _run(_coder(rng, T0, 8) + events)
    assert alerts and alerts[0][0] >= replay_at and alerts[0][0] - replay_at <= 30 * MIN
    assert any("were sent before, verbatim" in r for r in alerts[0][1].reasons), alerts[0][1].reasons


def test_state_from_before_the_stream_version_still_loads() -> None:
    f = UserFeatures()
    for i in range(100):
        f.update(T0 + i * 30_000, 2000, 1500, 0, "s", f"{i % 5:016x}", "api", "m")
    new = f.to_bytes()
    old = new[:len(new) - len(f.streams.to_bytes()) - 9] + bytes([0])  # count-first, no trailer
    g = UserFeatures.from_bytes(old)
    assert g.streams.table == {} and g.seq_bits == 0 and g.n == f.n and g.rep == f.rep
    g.update(T0 + 100 * 30_000, 2000, 1500, 0, "s", "ff", "api", "m")
    assert UserFeatures.from_bytes(g.to_bytes()).to_bytes() == g.to_bytes()


def _office_imitator(rng: random.Random, start: int, hours: float) -> list[tuple[int, dict]]:
    """Human-looking gaps, fresh prompts, a new session every ~30 minutes with no pause."""
    out, t, sid, renew = [], start, 0, start + 30 * MIN
    while t < start + hours * H:
        if t >= renew:
            sid, renew = sid + 1, t + rng.randint(15, 45) * MIN
        out.append((t, {"client": "claude-code", "model": "claude-sonnet-4-5", "session_id": f"o{sid}",
                        "input_tokens": rng.randint(300, 4000), "cache_read_tokens": 0,
                        "prompt_hash": f"{rng.getrandbits(64):016x}"}))
        t += int(min(max(2.0, 30 * rng.lognormvariate(0, 0.8)), 360) * 1000) + rng.randint(500, 5000)
    return out


def test_sessions_rotated_without_a_pause_are_caught_in_a_working_day() -> None:
    rng = random.Random(7)
    start = T0 + 9 * H
    _, alerts = _run(_coder(rng, T0 + 8 * H, 9) + _office_imitator(rng, start, 8))
    assert alerts and alerts[0][0] - start <= 8 * H
    assert any("began with no pause after the previous one" in r for r in alerts[0][1].reasons)


def test_parallel_agent_sessions_and_per_request_ids_are_not_rotated_sessions() -> None:
    rng = random.Random(8)
    events = []
    for lane in range(3):  # three agent sessions side by side, renewed often
        events += [(t, {**e, "session_id": f"{lane}-{e['session_id']}"})
                   for t, e in _coder(rng, T0 + lane * MIN, 9)]
    streams = Streams()
    for t, e in sorted(events, key=lambda x: x[0]):
        streams.update(t, "claude-code", "claude-opus-4-1", 1000, e["prompt_hash"], hash(e["session_id"]) & 0xFFFFFFFF)
    assert streams.table["claude-code/claude-opus-4-1"].seamless_sessions()[0] <= 2
    fresh = Streams()  # a client that mints a new session id for every request
    for i in range(500):
        fresh.update(T0 + i * 20_000, "api", "m", 1000, f"{i:016x}", i + 1)
    assert fresh.table["api/m"].seamless_sessions() == (0, 0)


def test_a_stream_busy_round_the_clock_is_no_rest_but_a_long_day_is_not() -> None:
    streams = Streams()
    for i in range(26 * 12):  # every 5 minutes for 26 hours
        streams.update(T0 + i * 5 * MIN, "api", "m", 1000, f"{i:016x}")
    assert streams.table["api/m"].hours_without_rest(T0 + 26 * H) >= 25
    day = Streams()
    for i in range(14 * 12):  # a 14-hour day, then the night
        day.update(T0 + i * 5 * MIN, "api", "m", 1000, f"{i:016x}")
    assert day.table["api/m"].hours_without_rest(T0 + 14 * H) == 14
    assert day.table["api/m"].hours_without_rest(T0 + 20 * H) == 0
