"""Processors alone against the practical ceiling: `python -m bench.processors`.

Fills a fresh embedded broker's usage topic with N events (batch envelopes,
as ingest writes them), then in the same run:
1. a plain consumer that only decodes and sums (the ceiling on this machine);
2. the real processors (`tokentrail worker`, Faust, changelogged state).

Both are timed the same way, by the clock of the process doing the work: from
the moment the first messages are in hand (the plain consumer's first
``consume`` that returned messages; the worker's first batch from
``noack_take``) to the end of the work on the last event (the plain consumer:
last event summed; the worker: the later of the end of the usage batch that
applied the last event, its deltas, progress and org deltas acknowledged by
the broker, and the end of the org-windows batch that applied the last org
delta, its buckets acknowledged). The worker publishes these wall-clock times
with its stats; the benchmark takes the earliest start and the latest end.
``--repeat N`` makes N independent runs (each on a fresh broker) and prints
the median ratio: one 1M run lasts a few seconds, and other work on a 2-core
machine moves it by several points.
Rate = events / (end - start). The consumer-group join and table recovery
before the first batch are reported separately, not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    """(events processed, first batch start ms, end ms) once every partition's
    timing covers its progress and the org windows applied every org delta sent;
    else None. The end is the later of the last usage batch's end and the last
    org batch's end: the processors are done when both agents are."""
    records = list(latest.values())
    if not records or any(r.get("batch_ended_offset") != r.get("offset") for r in records if r.get("offset", -1) >= 0):
        return None
    timed = [r for r in records if "batch_started_ms" in r]
    if not timed:
        return None
    usage_ended = max(r["batch_ended_ms"] for r in timed)
    # The org counters are process-wide: the newest record has them, and must
    # have been made after the last usage batch ended (so "sent" is final;
    # strictly after, as both clocks are in milliseconds). With one worker on
    # a fresh topic, no org delta is read twice, so "applied" counts each once.
    newest = max(records, key=lambda r: r.get("updated_ms", 0))
    if newest.get("updated_ms", 0) <= usage_ended or \
            newest.get("org_messages_applied", 0) < newest.get("org_messages_sent", 0):
        return None
    done = sum(r["processed"] + r["duplicates"] + r["late"] for r in records)
    ended = max(usage_ended, newest.get("org_batch_ended_ms", 0))
    return done, min(r["batch_started_ms"] for r in timed), ended


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used by a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    events: int
    plain: float  # events/s
    rate: float  # events/s
    seconds: float
    cpu_s: float
    join_s: float
    peak_rss: float
    rss_at: dict[int, float]  # millions processed -> worker RSS (MiB) then


def run_once(args: argparse.Namespace, settings: Settings, bodies: list[bytes]) -> Run:
    """One fresh broker: fill, the plain consumer, then the worker, on the same topic."""
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
        rss_at: dict[int, float] = {}
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
    return Run(n, plain, done / max(seconds, 1e-9), seconds, cpu_s, first_ms / 1000 - started_wall, rss, rss_at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=float, default=1.0, help="event-time span of the events")
    parser.add_argument("--repeat", type=int, default=1,
                        help="independent runs (each on a fresh broker); the median ratio is printed too")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.events < 1:
        parser.error("--repeat and --events must be at least 1")

    settings = Settings(stats_interval_s=0.5)
    bodies = make_bodies(args.events, args.users, 4, 5000, days=args.days)
    runs: list[Run] = []
    for i in range(args.repeat):
        r = run_once(args, settings, bodies)
        runs.append(r)
        growth = ", ".join(f"{m}M {v:,.0f}" for m, v in sorted(r.rss_at.items())) or "-"
        print(f"""processors benchmark{f" (run {i + 1} of {args.repeat})" if args.repeat > 1 else ""}: \
{r.events:,} events over {args.days:g} days of event time, {args.users:,} users, {settings.partitions} partitions
  plain consumer (decode + sum)  {r.plain:>10,.0f} events/s  ({r.events / r.plain:.2f} s)
  processors (Faust, windows)    {r.rate:>10,.0f} events/s  ({r.seconds:.2f} s) -> {r.rate / r.plain:.1%} of the ceiling
  worker CPU time from its start to the end (start-up included): {r.cpu_s:.1f} s
  worker start -> first batch (group join, recovery, not counted): {r.join_s:.1f} s
  worker peak RSS {r.peak_rss:,.0f} MiB; RSS after N million processed: {growth}""", flush=True)
    if len(runs) > 1:
        ratios = sorted(r.rate / r.plain for r in runs)
        print(f"ratio over {len(runs)} runs: median {statistics.median(ratios):.1%}, "
              f"min {ratios[0]:.1%}, max {ratios[-1]:.1%} ({', '.join(f'{x:.1%}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
