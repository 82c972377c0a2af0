"""Scores combine evidence; reasons name it; single kinds of evidence stay under 0.5."""

from __future__ import annotations

import random

from stream_processors.detection.features import UserFeatures
from stream_processors.detection.scoring import score

T0 = 1_794_787_200_000
H = 3_600_000


def _user(times: list[int], prompt: object = None, cache: int = 0, size: int = 1000,
          session: object = None) -> UserFeatures:
    f = UserFeatures()
    rng = random.Random(len(times))
    for i, ts in enumerate(times):
        ph = prompt(i) if callable(prompt) else f"{rng.getrandbits(64):016x}"
        sid = session(i) if callable(session) else "s"
        f.update(ts, size + cache + 50, size, cache, sid, ph)
    return f


def test_fixed_loop_with_one_prompt_scores_high_with_reasons() -> None:
    f = _user([T0 + i * 12_000 for i in range(int(3 * H / 12_000))], prompt=lambda i: "abc123")
    value, reasons = score(f)
    assert value > 0.8
    assert any(r.startswith("requests every 12.0 s ± 0.0 s for") for r in reasons)
    assert any(r.startswith("same prompt 100% of") for r in reasons)


def test_heavy_agentic_coder_scores_low() -> None:
    rng = random.Random(5)
    times = []
    for day in range(5):
        t = T0 + day * 24 * H + 9 * H
        while t < T0 + day * 24 * H + 18 * H:
            for _ in range(rng.randint(50, 300)):  # an agent loop: seconds apart
                t += rng.randint(1_500, 20_000)
                times.append(t)
            t += rng.randint(10, 60) * 60_000
    value, reasons = score(_user(times, cache=150_000))
    assert value < 0.2, reasons


def test_one_off_batch_job_scores_low() -> None:
    rng = random.Random(9)
    t, times = T0 + 10 * H, []
    for _ in range(2500):  # sequential script, gap = response latency
        t += int(rng.uniform(300, 900) + rng.choice((40, 130, 400)) * rng.uniform(12, 30))
        times.append(t)
    value, reasons = score(_user(times, size=3000))
    assert value < 0.5, reasons


def test_one_kind_of_evidence_alone_stays_below_threshold() -> None:
    # Perfectly regular but every prompt different and sizes varied: cadence only, for twenty
    # minutes. Held for 25 minutes and more it becomes the early path.
    rng = random.Random(2)
    f = UserFeatures()
    for i in range(60):
        f.update(T0 + i * 20_000, 2000, rng.randint(100, 5000), 0, "s", f"{rng.getrandbits(64):016x}")
    assert score(f)[0] < 0.5
    for i in range(60, 200):
        f.update(T0 + i * 20_000, 2000, rng.randint(100, 5000), 0, "s", f"{rng.getrandbits(64):016x}")
    value, reasons = score(f)
    assert value >= 0.5 and reasons[0].startswith("requests every 20.0 s ± 0.0 s for")


def test_parallel_sessions_around_the_clock_score_high() -> None:
    times = [T0 + i * 2_000 for i in range(int(26 * H / 2_000))]
    value, reasons = score(_user(times, session=lambda i: f"w{i % 12}-{i // 900}"))
    assert value > 0.8
    assert any("sessions running at once" in r for r in reasons)
    # No rest: the user's day, or (the stronger form, when one stream carries it) one stream's.
    assert any(r.startswith("active 24 of the last 24 hours") or "in each of the last 2" in r
               for r in reasons), reasons


def test_near_limit_uncached_contexts_with_cadence_score_high() -> None:
    times = [T0 + i * 90_000 for i in range(int(10 * H / 90_000))]
    value, reasons = score(_user(times, size=190_000, prompt=lambda i: f"{i % 3:x}"))
    assert value > 0.8
    assert any("≥100k uncached tokens" in r for r in reasons)


def test_empty_user_scores_zero() -> None:
    assert score(UserFeatures()) == (0.0, [])
