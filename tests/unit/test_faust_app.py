"""How every Faust stage is configured (stream_processors/app.py), without a broker."""

from __future__ import annotations

import sys

import pytest

from stream_processors.app import faust_app
from tokentrail.settings import Settings


def test_a_faust_stage_switches_threads_at_the_configured_interval() -> None:
    """The consumer thread must get the GIL often enough to parse records while the agents work."""
    before = sys.getswitchinterval()
    try:
        faust_app("tt-switch-test", Settings(gil_switch_interval_ms=0.7), "127.0.0.1:9", batch_messages=10)
        assert sys.getswitchinterval() == pytest.approx(0.0007)
        assert Settings().gil_switch_interval_ms == 0.5  # the default: a tenth of CPython's
    finally:
        sys.setswitchinterval(before)
