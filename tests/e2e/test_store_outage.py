"""The store unavailable for a while, under the whole stack: the embedded store's
disk fills up (a small tmpfs mounted on its data dir), writes fail, and later the
disk is grown. Ingest keeps accepting (the broker holds the backlog), the sink
pauses and retries, and once the store takes writes again every accepted event
is stored exactly once.

Mounting needs root (CAP_SYS_ADMIN); elsewhere the test skips."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults import expected_total, post_with_retries, total, traffic
from tests.helpers import RunningStack

pytestmark = pytest.mark.e2e


def mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tokentrail-test", str(path)],
                          capture_output=True)
    return done.returncode == 0


def test_a_full_store_disk_for_a_while_loses_nothing(tmp_path: Path) -> None:
    chdb_dir = tmp_path / "chdb"
    chdb_dir.mkdir()
    if not mount_tmpfs(chdb_dir, "4m"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    stack = RunningStack(tmp_path)
    try:
        stack.start()
        sent: list[dict] = []
        events = [e for seed in range(41, 47) for e in traffic(100_000, seed=seed)]
        sink: dict = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if len(sent) < len(events):
                post_with_retries(stack.client, events[len(sent):len(sent) + 5000])
                sent += events[len(sent):len(sent) + 5000]
            else:
                time.sleep(1)
            sink = stack.pipeline()["stages"]["sink"]
            if sink.get("store_failures", 0) > 0:
                break
        else:
            pytest.fail(f"the store's disk never filled up with {len(sent):,} events: {sink}")
        # The disk is full: ingest still answers 202, and what it takes waits in the broker.
        more = events[len(sent):len(sent) + 5000]
        post_with_retries(stack.client, more)
        sent += more
        time.sleep(3)
        snap = stack.pipeline()
        assert snap["stages"]["sink"]["paused"] is True, snap["stages"]["sink"]
        assert snap["stored"] < len(sent)
        print(f"\nstore full after {snap['stored']:,} of {len(sent):,} events accepted: {snap['stages']['sink']}")

        subprocess.run(["mount", "-o", "remount,size=512m", str(chdb_dir)], check=True)  # the disk is grown
        snap = stack.wait_drained(expect_stored=len(sent), expect_processed=len(sent), timeout_s=300)
        time.sleep(2)  # give a double count the chance to show
        snap = stack.pipeline()
        assert snap["stored"] == len(sent)
        assert snap["stages"]["sink"]["paused"] is False
        assert total(stack.client) == expected_total(sent)
    finally:
        stack.stop()
        subprocess.run(["umount", "-l", str(chdb_dir)], capture_output=True)
