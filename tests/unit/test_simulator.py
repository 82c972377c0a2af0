"""The simulator: reproducible, valid, ordered, labelled, calibrated."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

from producers.simulator import BOTS, HUMANS, build, labels, simulate
from producers.simulator.calibration import BUILTIN, DEFAULT_DIR, load
from tokentrail.events import validate

START = 1_794_787_200_000  # a Monday, 00:00 UTC


def _take(seed: int, n: int = 3000) -> list[dict]:
    return list(itertools.islice(simulate(seed, humans=30, days=2, start_ms=START), n))


def test_same_seed_same_events_and_other_seed_differs() -> None:
    assert _take(7) == _take(7)
    assert _take(7, 200) != _take(8, 200)


def test_events_are_valid_ordered_and_unique() -> None:
    events = _take(3, 5000)
    wire = [validate(e) for e in events]
    times = [w["ts_ms"] for w in wire]
    assert times == sorted(times)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["timestamp"].endswith("Z") and "/" in e["org_id"] for e in events)


def test_labels_cover_every_archetype_and_hide_them_in_ids() -> None:
    lab = labels(5, humans=60, days=2, start_ms=START, bots_per_archetype=1)
    kinds = Counter(lab.values())
    assert set(BOTS) <= set(kinds) and set(kinds) <= set(BOTS) | set(HUMANS)
    assert sum(kinds[k] for k in BOTS) == len(BOTS)
    assert not any(k in uid for uid in lab for k in (*BOTS, *HUMANS))


def test_bots_run_at_night_and_humans_mostly_do_not() -> None:
    scenario = build(11, humans=40, days=2, start_ms=START)
    lab = scenario.labels
    active_hours: dict[str, set[int]] = {}
    for ts, e in scenario.timed_events():
        active_hours.setdefault(e["user_id"], set()).add(ts // 3_600_000)
    loops = [u for u, k in lab.items() if k in ("fixed_loop", "jittered_loop", "parallel_burner")]
    chats = [u for u, k in lab.items() if k == "chat" and u in active_hours]
    assert min(len(active_hours[u]) for u in loops) >= 30
    assert max(len(active_hours[u]) for u in chats) <= 24


def test_calibration_falls_back_to_builtin_and_matches_trace() -> None:
    assert load(Path("/nonexistent")) is BUILTIN
    live = load(DEFAULT_DIR)
    if live is not BUILTIN:  # trace files present: the summary must still describe them
        assert abs(live.conv_context.median() - BUILTIN.conv_context.median()) < 1
    rng = random.Random(1)
    samples = sorted(BUILTIN.code_context.sample(rng) for _ in range(4000))
    assert 1000 < samples[2000] < 2000  # median of the code trace is 1,469 tokens
    assert samples[-1] <= 7437


def test_agentic_coders_use_big_cached_contexts() -> None:
    scenario = build(2, humans=40, days=1, start_ms=START + 86_400_000, bots_per_archetype=0)
    lab = scenario.labels
    coder = [e for e in itertools.islice(scenario.events(), 50_000) if lab[e["user_id"]] == "agentic_coder"]
    assert coder
    share = sum(e["cache_read_tokens"] for e in coder) / sum(e["input_tokens"] + e["cache_read_tokens"]
                                                           for e in coder)
    assert share > 0.8
