"""`tokentrail evaluate --pipeline` against the offline evaluation: same scenario,
same outcome per archetype (who is flagged, how many alerts, how fast in event
time). The pipeline sends the events with the producer SDK at full speed, so
each detector batch spans hours of event time: a replay must give what live does."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_processors.detection.evaluate import evaluate
from stream_processors.detection.evaluate_pipeline import evaluate_pipeline

pytestmark = pytest.mark.e2e


def test_the_pipeline_finds_what_the_library_finds(tmp_path: Path) -> None:
    args = ([7], 30, 2.0, 1)
    offline = evaluate(*args)
    piped = evaluate_pipeline(*args, workdir=tmp_path)
    assert piped.events == offline.events > 0
    assert set(piped.rows) == set(offline.rows)
    for name, row in offline.rows.items():
        got = piped.rows[name]
        assert (got.users, got.flagged, got.alerts, got.spikes, got.latencies_ms) == (
            row.users, row.flagged, row.alerts, row.spikes, row.latencies_ms), name
    assert offline.totals()[0] >= 5  # most planted bots are found at all (else this proves little)
    assert piped.top_bots_after == offline.top_bots_after
    print("\n" + "\n".join(piped.notes))
