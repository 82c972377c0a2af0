"""Online features on hand-built sequences."""

from __future__ import annotations

import random

from stream_processors.detection.features import UserFeatures

T0 = 1_794_787_200_000


def _feed(times: list[int], prompts: list[str] | None = None, sessions: list[str] | None = None,
          sizes: list[int] | None = None, cache: int = 0) -> UserFeatures:
    f = UserFeatures()
    for i, ts in enumerate(times):
        size = sizes[i] if sizes else 1000
        f.update(ts, size + 100 + cache, size, cache, sessions[i] if sessions else "s",
                 prompts[i] if prompts else f"{random.Random(i).getrandbits(64):016x}")
    return f


def test_periodic_stream_has_near_zero_cv_and_entropy() -> None:
    f = _feed([T0 + i * 12_000 for i in range(500)])
    assert f.gap_cv() < 0.01
    assert f.gap_sd_log() < 0.01
    assert f.burstiness() < -0.95
    assert f.gap_entropy() < 0.1
    assert f.regular_since and f.last_ts - f.regular_since > 3_600_000


def test_poisson_and_bursty_streams_are_irregular() -> None:
    rng = random.Random(1)
    t, times = T0, []
    for _ in range(2000):
        t += int(rng.expovariate(1 / 30_000)) + 1
        times.append(t)
    f = _feed(times)
    assert 0.7 < f.gap_cv() < 1.3
    assert abs(f.burstiness()) < 0.2
    assert f.gap_entropy() > 2
    assert f.regular_since == 0
    bursts, t = [], T0
    for _ in range(40):
        for _ in range(20):
            t += rng.randint(1_000, 5_000)
            bursts.append(t)
        t += 3_600_000
    assert _feed(bursts).burstiness() > 0.5


def test_prompt_repetition_is_seen_and_unique_prompts_are_not() -> None:
    times = [T0 + i * 30_000 for i in range(3000)]
    same = _feed(times, prompts=["ab12"] * 3000)
    assert same.top_prompt_share() > 0.95
    pool = [f"{random.Random(i % 150).getrandbits(64):016x}" for i in range(3000)]
    cycled = _feed(times, prompts=pool)
    assert cycled.rep > 0.8
    unique = _feed(times)
    assert unique.rep < 0.05 and unique.top_prompt_share() < 0.05


def test_concurrency_counts_overlapping_sessions() -> None:
    times = [T0 + i * 1_000 for i in range(3600)]
    many = _feed(times, sessions=[f"s{i % 10}" for i in range(3600)])
    one = _feed(times)
    assert many.conc > 8
    assert one.conc < 1.1


def test_context_sizes_and_cache_share() -> None:
    times = [T0 + i * 60_000 for i in range(200)]
    burner = _feed(times, sizes=[180_000 + i for i in range(200)])
    assert burner.big > 0.95 and burner.size_sd_log() < 0.01
    coder = _feed(times, sizes=[1_500] * 200, cache=150_000)
    assert coder.big == 0 and coder.cache_share > 0.95


def test_rhythm_active_hours_and_idle_gap() -> None:
    around_clock = _feed([T0 + i * 120_000 for i in range(720)])  # 24 h
    assert around_clock.active_hours() == 24
    assert around_clock.longest_idle_min(around_clock.last_ts) == 0
    office = _feed([T0 + h * 3_600_000 + m * 60_000 for h in range(9, 17) for m in range(0, 60, 5)]
                   + [T0 + 86_400_000 + 9 * 3_600_000])
    assert office.active_hours() <= 9
    assert office.longest_idle_min(office.last_ts) >= 15 * 60


def test_growth_blocks_count_requests() -> None:
    times: list[int] = []
    for block in range(8):
        n = 10 * 2**block
        times += [T0 + block * 6 * 3_600_000 + i * (6 * 3_600_000 // n) for i in range(n)]
    f = _feed(sorted(times))
    counts = f.block_counts()
    assert counts[-8:] == [10 * 2**b for b in range(8)]


def test_state_round_trips_and_stays_small() -> None:
    rng = random.Random(3)
    times = sorted(T0 + rng.randrange(7 * 86_400_000) for _ in range(20_000))
    f = _feed(times, sessions=[f"session-{rng.randrange(100)}" for _ in times])
    data = f.to_bytes()
    assert len(data) <= 4096
    g = UserFeatures.from_bytes(data)
    assert g.to_bytes() == data
    assert g.gap_cv() == f.gap_cv() and g.sessions == f.sessions and g.bloom0 == f.bloom0
    g.update(times[-1] + 1000, 10, 10, 0, "x", "ff")  # the restored state keeps working


def test_late_events_do_not_move_the_clock_back() -> None:
    f = _feed([T0, T0 + 10_000, T0 + 5_000])
    assert f.last_ts == T0 + 10_000 and f.n == 3
