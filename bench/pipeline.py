"""End-to-end benchmark of the embedded stack: `python -m bench.pipeline`.

Starts `tokentrail up` on a fresh data dir, POSTs N events (request sizes
drawn from the Azure LLM traces) with two client threads, and prints:
- POST rate, end-to-end rate (first POST -> all events queryable), sustained
  rates of the processors and the sink (from /v1/pipeline counters);
- peak RSS of each stage (VmHWM);
- /v1/usage latency p50/p99 (one org, one day, hourly) at the stored volume;
- a plain consumer that only decodes and sums the same topic (the practical
  ceiling on this machine) and the processors' ratio to it.
Figures are printed, never asserted: speed is a property of the machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from producers.simulator.calibration import load as load_calibration
from tests.helpers import RunningStack
from tokentrail.settings import Settings

DAY_MS = 86_400_000


def start_ms(days: float) -> int:
    """Midnight UTC far enough back that `days` of event time end before now
    (events more than 24 h in the future are rejected)."""
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    return today - (int(days) + 1) * DAY_MS
MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "gpt-5", "gpt-5-mini", "gemini-2.5-pro")


def make_bodies(n: int, users: int, orgs: int, batch: int, seed: int = 1, days: float = 1.0) -> list[bytes]:
    """NDJSON bodies of `batch` events spread evenly over `days` of event time."""
    span_ms = int(days * DAY_MS)
    first_ms = start_ms(days)
    rng = random.Random(seed)
    cal = load_calibration()
    bodies: list[bytes] = []
    lines: list[bytes] = []
    for i in range(n):
        u = rng.randrange(users)
        event = {
            "event_id": f"b{seed}-{i}", "timestamp": _ts(first_ms + (i * span_ms) // n),
            "user_id": f"user-{u:05d}", "org_id": f"corp/div{u % orgs}/team{u % (orgs * 4)}",
            "model": MODELS[u % len(MODELS)], "input_tokens": int(cal.code_context.sample(rng)),
            "output_tokens": int(cal.code_generated.sample(rng)), "cache_read_tokens": rng.randrange(0, 20000),
            "client": "claude-code", "session_id": f"s-{u}-{i // 500}",
        }
        lines.append(orjson.dumps(event))
        if len(lines) == batch:
            bodies.append(b"\n".join(lines))
            lines = []
    if lines:
        bodies.append(b"\n".join(lines))
    return bodies


def _ts(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}Z"


def post_all(url: str, bodies: list[bytes], threads: int) -> float:
    queue = list(reversed(bodies))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                while client.post("/v1/events", content=body,
                                  headers={"Content-Type": "application/x-ndjson"}).status_code != 202:
                    time.sleep(0.2)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - started


class Sampler(threading.Thread):
    """Samples /v1/pipeline and the stages' RSS every half second."""

    def __init__(self, stack: RunningStack, worker_pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.samples: list[tuple[float, int, int, int]] = []  # (t, processed, stored, fed to detection)
        self.stop_flag = threading.Event()
        self.worker_pid = worker_pid
        self.worker_rss: dict[int, float] = {}  # millions processed -> processor RSS (MiB) then
        # millions processed -> every RSS sample (MiB) taken until the next million
        self.worker_rss_samples: dict[int, list[float]] = {}

    def _note_rss(self, processed: int) -> None:
        million = processed // 1_000_000
        if self.worker_pid and million >= 1:
            rss = rss_mib(self.worker_pid)
            self.worker_rss.setdefault(million, rss)
            self.worker_rss_samples.setdefault(million, []).append(rss)

    def run(self) -> None:
        with httpx.Client(base_url=self.stack.url, timeout=30) as client:
            while not self.stop_flag.is_set():
                try:
                    snap = client.get("/v1/pipeline").json()
                    fed = snap["stages"].get("detector", {}).get("fed", 0)
                    self.samples.append((time.perf_counter(), snap["processed"], snap["stored"], fed))
                    self._note_rss(snap["processed"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.5)

    def rate(self, index: int, total: int) -> float:
        """Events/s between 5% and 95% of the total (steady state)."""
        lo = [s for s in self.samples if s[index] >= 0.05 * total]
        hi = [s for s in self.samples if s[index] >= 0.95 * total]
        if not lo or not hi or hi[0][0] <= lo[0][0]:
            return float("nan")
        return (hi[0][index] - lo[0][index]) / (hi[0][0] - lo[0][0])


def peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS:")


def _status_mib(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stage_names(stack: RunningStack) -> dict[int, str]:
    names = {}
    for pid in stack.stage_pids():
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        names[pid] = "broker" if b"broker" in cmd else cmd[-2].decode() if cmd[-1] == b"" else cmd[-1].decode()
    return names


def plain_consumer_rate(bootstrap: str, topic: str, partitions: int, expect: int) -> tuple[float, int]:
    """Decode envelopes and sum total tokens, nothing else: the ceiling.

    Timed like the processors in bench.processors: from the moment the first
    messages are in hand (consume returned them) to the end of the last one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-plain", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 * 1024 * 1024})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = tokens = 0
    started = None
    idle_since = None
    while seen < expect:
        msgs = consumer.consume(1000, 0.5)
        if not msgs:
            idle_since = idle_since or time.perf_counter()
            if time.perf_counter() - idle_since > 10:
                break
            continue
        idle_since = None
        if started is None:
            started = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                for e in orjson.loads(m.value() or b"[]"):
                    tokens += e["input_tokens"] + e["output_tokens"] + e["cache_read_tokens"] + e["cache_write_tokens"]
                    seen += 1
    elapsed = time.perf_counter() - started if started is not None else float("nan")
    consumer.close()
    return seen / elapsed, tokens


def wait_detected(sampler: Sampler, events: int, started: float, timeout_s: float = 600) -> float:
    """Seconds from the first POST until detection was fed every event (nan when it is off)."""
    if not Settings().detection:  # TOKENTRAIL_DETECTION=0: the stack runs no detector stage
        return float("nan")
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        samples = list(sampler.samples)
        if samples and samples[-1][3] >= events:
            return samples[-1][0] - started
        time.sleep(0.5)
    return float("nan")


def usage_latency(url: str, n: int, day_ms: int) -> tuple[float, float]:
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            params = {"org_id": f"corp/div{i % 4}", "granularity": "hour",
                      "from": _ts(day_ms), "to": _ts(day_ms + DAY_MS)}
            t = time.perf_counter()
            assert client.get("/v1/usage", params=params).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5000, help="events per POST")
    parser.add_argument("--threads", type=int, default=2, help="concurrent POST clients")
    parser.add_argument("--queries", type=int, default=200, help="/v1/usage requests for latency")
    parser.add_argument("--days", type=float, default=None,
                        help="event-time span (default: one day per million events, so live state stays bounded)")
    args = parser.parse_args(argv)

    print(f"generating {args.events:,} events ...", file=sys.stderr)
    days = args.days if args.days is not None else max(args.events / 1_000_000, 1.0)
    bodies = make_bodies(args.events, args.users, args.orgs, args.batch, days=days)
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        stack = RunningStack(Path(tmp)).start()
        try:
            names = stage_names(stack)
            worker_pid = next((pid for pid, name in names.items() if name == "worker"), None)
            sampler = Sampler(stack, worker_pid)
            sampler.start()
            started = time.perf_counter()
            post_s = post_all(stack.url, bodies, args.threads)
            print(f"posted in {post_s:.1f} s; waiting until stored ...", file=sys.stderr)
            snap = stack.wait_drained(args.events, args.events, timeout_s=3600)
            e2e_s = time.perf_counter() - started
            detected_s = wait_detected(sampler, args.events, started)
            sampler.stop_flag.set()
            p50, p99 = usage_latency(stack.url, args.queries, start_ms(days))
            rss = {names.get(pid, str(pid)): peak_rss_mib(pid) for pid in stack.stage_pids()}
            plain, _ = plain_consumer_rate(stack.bootstrap, "tokentrail.usage", 4, args.events)
            proc_rate = sampler.rate(1, args.events)
            report: dict[str, Any] = {
                "events": args.events, "post_events_per_s": args.events / post_s,
                "end_to_end_events_per_s": args.events / e2e_s, "end_to_end_s": e2e_s,
                "processor_events_per_s": proc_rate, "sink_events_per_s": sampler.rate(2, args.events),
                "detector_events_per_s": args.events / detected_s, "detected_s": detected_s,
                "plain_consumer_events_per_s": plain, "processor_to_ceiling": proc_rate / plain,
                "usage_p50_ms": p50, "usage_p99_ms": p99, "peak_rss_mib": rss,
                "stored": snap["stored"], "processed": snap["processed"], "worker_rss": sampler.worker_rss,
                "worker_rss_median": {m: statistics.median(v) for m, v in sampler.worker_rss_samples.items()},
            }
        finally:
            stack.stop()
    print(format_report(report))
    return 0


def format_report(r: dict[str, Any]) -> str:
    rss = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["peak_rss_mib"].items()))
    growth = ", ".join(f"{m}M: {v:,.0f}" for m, v in sorted(r.get("worker_rss", {}).items()))
    medians = r.get("worker_rss_median", {})
    typical = ", ".join(f"{m}M: {v:,.0f}" for m, v in sorted(medians.items()))
    return "\n".join([
        f"TokenTrail pipeline benchmark: {r['events']:,} events (stored {r['stored']:,}, processed {r['processed']:,})",
        f"  POST /v1/events          {r['post_events_per_s']:>10,.0f} events/s",
        f"  end to end (POST->query) {r['end_to_end_events_per_s']:>10,.0f} events/s  ({r['end_to_end_s']:.1f} s)",
        f"  processors (steady)      {r['processor_events_per_s']:>10,.0f} events/s",
        f"  sink (steady)            {r['sink_events_per_s']:>10,.0f} events/s",
        f"  detection (POST->fed)    {r['detector_events_per_s']:>10,.0f} events/s  "
        f"({r['detected_s']:.1f} s; nan = TOKENTRAIL_DETECTION=0)",
        f"  plain consumer ceiling   {r['plain_consumer_events_per_s']:>10,.0f} events/s"
        f"  -> processors at {r['processor_to_ceiling']:.1%} of it",
        f"  /v1/usage org/day/hourly p50 {r['usage_p50_ms']:.1f} ms, p99 {r['usage_p99_ms']:.1f} ms",
        f"  peak RSS MiB: {rss}",
        f"  processor RSS MiB after N million processed: {growth or '-'}{_spread(r.get('worker_rss', {}))}",
        f"  processor RSS MiB from N to N+1 million, median of 0.5 s samples: {typical or '-'}{_spread(medians)}",
    ])


def _spread(by_million: dict[int, float]) -> str:
    """How far the figures for 2M, 3M, ... are from the 1M one (the flat-memory target: within 10%)."""
    if 1 not in by_million or len(by_million) < 2:
        return ""
    base = by_million[1]
    worst = max(abs(v - base) / base for v in by_million.values())
    return f"  (at most {worst:.1%} from 1M)"


if __name__ == "__main__":
    sys.exit(main())
