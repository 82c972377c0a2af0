"""Processors alone against the practical ceiling: `python -m bench.processors`.

Fills a fresh embedded broker's usage topic with N events (batch envelopes,
as ingest writes them), then in the same run:
1. a plain consumer that only decodes and sums (the ceiling on this machine);
2. the real processors (`tokentrail worker`, Faust, changelogged state).

Both are timed the same way, by the clock of the process doing the work: from
the moment the first messages are in hand (the plain consumer's first
``consume`` that returned messages; the worker's first batch from
``take_events``) to the end of the work on the last event (the plain consumer:
last event summed; the worker: the end of the batch that applied the last
event, its deltas, progress and org deltas acknowledged by the broker). The
worker publishes these wall-clock times with its per-partition stats; the
benchmark takes the earliest start and the latest end over the partitions.
Rate = events / (end - start). The consumer-group join and table recovery
before the first batch are reported separately, not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.pipeline import make_bodies, peak_rss_mib, plain_consumer_rate, rss_mib
from stream_processors.worker import processor_topics
from tokentrail.envelope import build_envelopes, encode_event
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.runtime.topics import create_missing
from tokentrail.settings import Settings


def fill(bootstrap: str, settings: Settings, bodies: list[bytes]) -> int:
    prices = PriceTable.load()
    publisher = Publisher(bootstrap, settings.usage_topic)
    n = 0
    for body in bodies:
        events = [encode_event(orjson.loads(line), prices) for line in body.split(b"\n")]
        envs = list(build_envelopes(events, settings.partitions))
        assert publisher.publish(envs, len(envs), len(events)).wait(60)
        n += len(events)
    publisher.close()
    return n


def read_stats(consumer: Consumer, latest: dict[bytes, dict[str, Any]]) -> None:
    """The latest processor stats record per key, read until the topic is idle."""
    while True:
        msg = consumer.poll(0.2)
        if msg is None:
            return
        key = msg.key()
        if msg.error() is None and key and key.startswith(b"processor/"):
            latest[key] = orjson.loads(msg.value() or b"{}")


def timed_span(latest: dict[bytes, dict[str, Any]]) -> tuple[int, int, int] | None:
    """(events processed, first batch start ms, last batch end ms) once every
    partition's timing covers its progress; else None."""
    records = list(latest.values())
    if not records or any(r.get("batch_ended_offset") != r.get("offset") for r in records if r.get("offset", -1) >= 0):
        return None
    timed = [r for r in records if "batch_started_ms" in r]
    if not timed:
        return None
    done = sum(r["processed"] + r["duplicates"] + r["late"] for r in records)
    return done, min(r["batch_started_ms"] for r in timed), max(r["batch_ended_ms"] for r in timed)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used by a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=float, default=1.0, help="event-time span of the events")
    args = parser.parse_args(argv)

    settings = Settings(stats_interval_s=0.5)
    bodies = make_bodies(args.events, args.users, 4, 5000, days=args.days)
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp, EmbeddedBroker(log_path=Path(tmp) / "b.log") as b:
        create_missing(b.bootstrap, processor_topics(settings))
        print(f"filling the usage topic with {args.events:,} events ...", file=sys.stderr)
        n = fill(b.bootstrap, settings, bodies)
        plain, _ = plain_consumer_rate(b.bootstrap, settings.usage_topic, settings.partitions, n)
        env = {**os.environ, **settings.env(), "TOKENTRAIL_KAFKA_BOOTSTRAP": b.bootstrap,
               "TOKENTRAIL_LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        started_wall = time.time()
        worker = subprocess.Popen([sys.executable, "-m", "tokentrail.cli", "worker"], env=env,
                                  stdout=open(Path(tmp) / "w.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        stats = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "bench", "enable.auto.commit": False})
        stats.assign([TopicPartition(settings.stats_topic, 0, 0)])
        latest: dict[bytes, dict[str, Any]] = {}
        span = None
        cpu_s = float("nan")
        rss = 0.0
        rss_at: dict[int, float] = {}  # millions processed -> worker RSS (MiB) then
        try:
            while time.perf_counter() - started < 1800:
                read_stats(stats, latest)
                span = timed_span(latest)
                rss = max(rss, peak_rss_mib(worker.pid))
                million = sum(r["processed"] for r in latest.values()) // 1_000_000
                if million >= 1 and million not in rss_at:
                    rss_at[million] = rss_mib(worker.pid)
                if span is not None and span[0] >= n:
                    break
                if worker.poll() is not None:
                    raise SystemExit(f"worker exited with {worker.returncode}; see {tmp}/w.log")
                cpu_s = cpu_seconds(worker.pid)
        finally:
            worker.terminate()
            worker.wait(60)
            stats.close()
    assert span is not None and span[0] >= n, f"processors did not finish: {span}"
    done, first_ms, last_ms = span
    seconds = (last_ms - first_ms) / 1000
    rate = done / max(seconds, 1e-9)
    growth = ", ".join(f"{m}M {v:,.0f}" for m, v in sorted(rss_at.items())) or "-"
    print(f"""processors benchmark: {n:,} events over {args.days:g} days of event time, {args.users:,} users, \
{settings.partitions} partitions
  plain consumer (decode + sum)  {plain:>10,.0f} events/s  ({n / plain:.2f} s)
  processors (Faust, windows)    {rate:>10,.0f} events/s  ({seconds:.2f} s) -> {rate / plain:.1%} of the ceiling
  worker CPU time from its start to the last batch (start-up included): {cpu_s:.1f} s
  worker start -> first batch (group join, recovery, not counted): {first_ms / 1000 - started_wall:.1f} s
  worker peak RSS {rss:,.0f} MiB; RSS after N million processed: {growth}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
