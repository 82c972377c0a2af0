"""Processors alone against the practical ceiling: `python -m bench.processors`.

Fills a fresh embedded broker's usage topic with N events (batch envelopes,
as ingest writes them), then in the same run:
1. a plain consumer that only decodes and sums (the ceiling on this machine);
2. the real processors (`tokentrail worker`, Faust, changelogged state),
timed from their first processed event to the last (the consumer-group join
before that is reported separately). Prints the figures and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.pipeline import make_bodies, peak_rss_mib, plain_consumer_rate
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


def processed(consumer: Consumer) -> int:
    latest: dict[bytes, int] = {}
    while True:
        msg = consumer.poll(0.2)
        if msg is None:
            return sum(latest.values())
        key = msg.key()
        if msg.error() is None and key:
            latest[key] = orjson.loads(msg.value() or b"{}").get("processed", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5000)
    args = parser.parse_args(argv)

    settings = Settings(stats_interval_s=0.5)
    bodies = make_bodies(args.events, args.users, 4, 5000)
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp, EmbeddedBroker(log_path=Path(tmp) / "b.log") as b:
        create_missing(b.bootstrap, processor_topics(settings))
        print(f"filling the usage topic with {args.events:,} events ...", file=sys.stderr)
        n = fill(b.bootstrap, settings, bodies)
        plain, _ = plain_consumer_rate(b.bootstrap, settings.usage_topic, settings.partitions, n)
        env = {**os.environ, **settings.env(), "TOKENTRAIL_KAFKA_BOOTSTRAP": b.bootstrap,
               "TOKENTRAIL_LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "tokentrail.cli", "worker"], env=env,
                                  stdout=open(Path(tmp) / "w.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        stats = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "bench", "enable.auto.commit": False})
        stats.assign([TopicPartition(settings.stats_topic, 0, 0)])
        first = last = None
        done = 0
        rss = 0.0
        try:
            while done < n and time.perf_counter() - started < 1800:
                done = max(done, processed(stats))
                now = time.perf_counter()
                if done and first is None:
                    first = (now, done)
                last = (now, done)
                rss = max(rss, peak_rss_mib(worker.pid))
                if worker.poll() is not None:
                    raise SystemExit(f"worker exited with {worker.returncode}; see {tmp}/w.log")
        finally:
            worker.terminate()
            worker.wait(60)
            stats.close()
    assert first is not None and last is not None
    rate = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
    print(f"""processors benchmark: {n:,} events, {args.users:,} users, {settings.partitions} partitions
  plain consumer (decode + sum)  {plain:>10,.0f} events/s
  processors (Faust, windows)    {rate:>10,.0f} events/s  -> {rate / plain:.1%} of the ceiling
  group join + recovery before the first event: {first[0] - started:.1f} s; all done after {last[0] - started:.1f} s
  worker peak RSS {rss:,.0f} MiB""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
