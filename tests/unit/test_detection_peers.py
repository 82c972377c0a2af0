"""Volume against peers in the same org: the figures, the signal, and exact restores."""

from __future__ import annotations

import math

import orjson

from producers.simulator import build
from stream_processors.detection import Detector, PartitionPeers
from stream_processors.detection.alerts import THRESHOLD
from stream_processors.detection.evaluate import START_MS
from stream_processors.detection.features import UserFeatures
from stream_processors.detection.peers import MAX_ORGS, MIN_PEERS, PeerReference
from stream_processors.detection.scoring import peer_volume, score
from tokentrail.envelope import partition_for

DAY = 86_400_000


def test_a_typical_day_is_the_geometric_mean_of_recent_user_days() -> None:
    peers = PartitionPeers()
    for tokens in [1_000, 10_000, 100_000] * 4:
        peers.add("acme/eng", tokens)
    ref = peers.reference("acme/eng")
    assert ref is not None and ref.user_days == 12
    assert math.isclose(ref.typical_tokens, 10_000, rel_tol=0.01)
    assert math.isclose(ref.spread, math.log(10) * math.sqrt(2 / 3), rel_tol=0.01)
    assert peers.reference("acme/ops") is None


def test_no_figure_before_enough_user_days_and_empty_days_do_not_count() -> None:
    peers = PartitionPeers()
    for _ in range(MIN_PEERS - 1):
        peers.add("acme/eng", 5_000)
    peers.add("acme/eng", 0)
    assert peers.reference("acme/eng") is None
    peers.add("acme/eng", 5_000)
    assert peers.reference("acme/eng") is not None


def test_one_burner_does_not_become_the_typical_day() -> None:
    peers = PartitionPeers()
    for i in range(40):
        peers.add("acme/eng", 20_000 * (1 + i % 3))
    before = peers.reference("acme/eng")
    peers.add("acme/eng", 5e11)  # a thousand-fold day
    after = peers.reference("acme/eng")
    assert before is not None and after is not None
    assert after.typical_tokens < 1.2 * before.typical_tokens


def test_orgs_per_partition_are_bounded_and_the_stalest_goes_first() -> None:
    peers = PartitionPeers()
    for i in range(MAX_ORGS + 10):
        peers.add(f"org-{i}", 1_000)
    assert len(peers.orgs) == MAX_ORGS
    assert "org-0" not in peers.orgs and f"org-{MAX_ORGS + 9}" in peers.orgs


def test_figures_restored_from_json_go_on_bit_for_bit() -> None:
    a = PartitionPeers()
    for i in range(30):
        a.add("acme/eng", 1_000 + 7_919 * i)
    b = PartitionPeers.from_json(orjson.loads(orjson.dumps(a.to_json())))
    for i in range(30):
        a.add("acme/eng", 333 + 104_729 * i)
        b.add("acme/eng", 333 + 104_729 * i)
    assert a.to_json() == b.to_json()


def test_the_detector_hands_each_closed_day_of_a_user_to_its_orgs_peers() -> None:
    det = Detector(partitions=1)
    for day in range(3):
        for user in range(5):
            for k in range(4):
                det.observe({"ts_ms": START_MS + day * DAY + 3_600_000 * (9 + user) + k * 60_000,
                             "user_id": f"u{user}", "org_id": "acme/eng", "event_id": f"{day}-{user}-{k}",
                             "model": "m", "input_tokens": 1_000 * (user + 1), "output_tokens": 0})
    org = det.peers[0].orgs["acme/eng"]
    assert org.n == 10  # 5 users x 2 closed days (the third is still open)
    expected = sum(math.log(4_000 * (u + 1) + 1) for u in range(5)) / 5
    assert math.isclose(org.mean, expected, rel_tol=1e-9)


def test_the_signal_is_weak_and_says_the_scale() -> None:
    ref = PeerReference("acme/eng", 100_000.0, 2.0, 64)
    f = UserFeatures()
    f.day_tokens = 2_500_000.0  # 25x: an agentic coder's ordinary day
    assert peer_volume(f, ref).strength == 0
    f.day_tokens = 60_000_000.0  # 600x
    sig = peer_volume(f, ref)
    assert 0.5 < sig.strength < 1 and sig.weight < 0.5
    assert "600× a typical day in acme/eng" in sig.reason and "64 recent user-days" in sig.reason
    assert peer_volume(f, None).strength == 0
    # At full strength it is named, and stays below the alert threshold by itself.
    f.n, f.day_tokens = 100, 1e12
    value, reasons = score(f, peers=ref)
    assert value < THRESHOLD and any("a typical day in acme/eng" in r for r in reasons)


def test_restoring_every_user_and_the_peers_anywhere_changes_no_alert() -> None:
    """What the detector stage does after a crash (load each user's bytes, the peers'
    JSON) must continue exactly as if nothing happened: same alerts, same ids."""
    scenario = build(5, humans=8, days=2, start_ms=START_MS, bots_per_archetype=1)
    events = [{**e, "ts_ms": ts} for ts, e in scenario.timed_events()]

    def alerts(restore_every: int) -> list[tuple[str, int, float]]:
        det, out = Detector(partitions=2), []
        for i, event in enumerate(events):
            if restore_every and i and i % restore_every == 0:
                fresh = Detector(partitions=2)
                for user_id in det.users:
                    fresh.load_state(user_id, det.state_bytes(user_id))
                for part, peers in det.peers.items():
                    fresh.peers[part] = PartitionPeers.from_json(orjson.loads(orjson.dumps(peers.to_json())))
                det = fresh
            out += [(a.alert_id, a.window_end_ms, a.score) for a in det.observe(event)]
        assert det.peers and any(p.orgs for p in det.peers.values())
        return out

    whole = alerts(0)
    assert whole
    assert alerts(997) == whole
    assert alerts(4_001) == whole
    assert {partition_for(u, 2) for u in scenario.labels} == {0, 1}
