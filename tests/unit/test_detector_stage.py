"""The detector stage's bookkeeping: re-sent events, state hand-off, risk updates (pure)."""

from __future__ import annotations

from stream_processors.detection import Detector
from stream_processors.detection.stage import DetectorStage, stored_fed

T0 = 1_794_787_200_000


def _event(i: int, user: str = "u1", period_ms: int = 10_000, prompt: str = "abc") -> dict:
    return {"event_id": f"{user}-e{i}", "ts_ms": T0 + i * period_ms, "user_id": user, "org_id": "acme/eng",
            "model": "m", "input_tokens": 1000, "output_tokens": 50, "cache_read_tokens": 0,
            "cache_write_tokens": 0, "session_id": "s", "prompt_hash": prompt, "client": "api"}


def test_re_sent_events_are_not_fed_twice() -> None:
    stage = DetectorStage(recent_ids=8)
    assert stage.observe(_event(1)) == []
    assert stage.observe(_event(1)) is None
    for i in range(2, 10):
        stage.observe(_event(i))
    assert stage.observe(_event(9)) is None
    assert stage.observe(_event(1)) == []  # older than the 8 most recent: fed again (documented)
    assert stage.meta["u1"].fed == 10


def test_state_hand_off_continues_exactly() -> None:
    """Restore from the table value mid-stream: same alerts as one uninterrupted run."""
    events = [_event(i) for i in range(6 * 360)]  # 6 h of a 10 s loop
    whole = DetectorStage()
    expected = [a for e in events for a in whole.observe(e) or []]
    first, second = DetectorStage(), DetectorStage()
    got = [a for e in events[:1000] for a in first.observe(e) or []]
    value = first.state("u1", 0)
    assert value is not None and stored_fed(value) == 1000
    second.sync("u1", value)
    assert second.observe(events[999]) is None  # the re-send window came along
    got += [a for e in events[1000:] for a in second.observe(e) or []]
    assert [a.alert_id for a in got] == [a.alert_id for a in expected] and expected


def test_sync_keeps_memory_when_it_is_the_stored_state_and_follows_the_table_otherwise() -> None:
    stage = DetectorStage()
    for i in range(5):
        stage.observe(_event(i))
    value = stage.state("u1", 0)
    assert value is not None
    features = stage.detector.users["u1"].features
    stage.sync("u1", value)
    assert stage.detector.users["u1"].features is features  # no reload
    stage.observe(_event(5))
    stage.sync("u1", value)  # the table is behind memory (another instance's write): reload
    assert stage.meta["u1"].fed == 5
    stage.sync("u1", None)  # the table has nothing: forget
    assert "u1" not in stage.meta and "u1" not in stage.detector.users


def test_risk_updates_only_when_the_score_moves() -> None:
    stage = DetectorStage(min_change=0.05)
    for i in range(3 * 360):  # 3 h of clockwork: the score climbs past 0.5
        stage.observe(_event(i))
    updates = stage.take_risk_updates()
    assert updates, "a scripted loop must get a risk update"
    assert len(updates) < 3 * 360 // 16  # not per scoring (every 16 events), let alone per event
    assert updates[-1].bot_score >= 0.5 and updates[-1].reasons
    assert all(u.updated_ms <= T0 + 3 * 360 * 10_000 for u in updates)
    assert stage.take_risk_updates() == []  # taken once


def test_risk_updates_do_not_depend_on_when_they_are_taken() -> None:
    """Decided at the detector's own scorings, per event: a replay in other batch sizes
    publishes the same updates."""
    whole, piecewise = DetectorStage(), DetectorStage()
    taken = []
    for i in range(3 * 360):
        whole.observe(_event(i))
        piecewise.observe(_event(i))
        if i % 97 == 0:
            taken += piecewise.take_risk_updates()
    assert whole.take_risk_updates() == taken + piecewise.take_risk_updates()


def test_forgotten_users_have_no_state() -> None:
    stage = DetectorStage(detector=Detector(idle_days=1))
    stage.observe(_event(0, user="old"))
    stage.observe(_event(0, user="new", period_ms=0) | {"ts_ms": T0 + 3 * 86_400_000})
    assert stage.detector.evict() == 1
    assert stage.state("old", 0) is None and stage.state("new", 0) is not None
