"""How every Faust stage's process is configured (stream_processors/app.py), without a broker."""

from __future__ import annotations

import sys

import pytest

from stream_processors.app import switch_threads_often
from tokentrail.settings import Settings


def test_a_faust_stage_switches_threads_at_the_configured_interval() -> None:
    """The consumer thread must get the GIL often enough to parse records while the agents work."""
    before = sys.getswitchinterval()
    try:
        switch_threads_often(Settings(gil_switch_interval_ms=0.7))
        assert sys.getswitchinterval() == pytest.approx(0.0007)
    finally:
        sys.setswitchinterval(before)
    assert Settings.model_fields["gil_switch_interval_ms"].default == 0.5  # a tenth of CPython's
