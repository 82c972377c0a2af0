"""Offline evaluation: simulated, labelled organisations through the same Detector.

Reports per archetype how many users were flagged and how fast, plus the numbers
the targets are stated in (precision, recall, false positives per 1,000 humans per
day, leaderboard pollution, cost per event, state size). Seeds 1-3 are for tuning;
report on others.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from producers.simulator import BOTS, build
from stream_processors.detection import Detector
from stream_processors.detection.alerts import SPIKE, THRESHOLD, TOKENMAXXING

START_MS = 1_794_787_200_000  # 2026-11-16T00:00Z, a Monday
TOP_N = 250


@dataclass
class Row:
    users: int = 0
    flagged: int = 0  # bots: detected after their start; humans: ever flagged
    alerts: int = 0  # tokenmaxxing alerts (on humans these are false positives)
    spikes: int = 0
    latencies_ms: list[int] = field(default_factory=list)


@dataclass
class Report:
    seeds: list[int]
    humans: int
    days: float
    rows: dict[str, Row] = field(default_factory=lambda: defaultdict(Row))
    events: int = 0
    detector_s: float = 0.0
    state_bytes: list[int] = field(default_factory=list)
    top_bots_before: list[int] = field(default_factory=list)
    top_bots_after: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures of the run itself (pipeline mode)

    def totals(self) -> tuple[int, int, int, int]:
        """(bots detected, bots, humans flagged, tokenmaxxing alerts on humans)."""
        tp = sum(r.flagged for k, r in self.rows.items() if k in BOTS)
        bots = sum(r.users for k, r in self.rows.items() if k in BOTS)
        fp = sum(r.flagged for k, r in self.rows.items() if k not in BOTS)
        fp_alerts = sum(r.alerts for k, r in self.rows.items() if k not in BOTS)
        return tp, bots, fp, fp_alerts


Progress = Callable[[str], None]


def run_seed(report: Report, seed: int, bots_per_archetype: int, progress: Progress | None) -> None:
    scenario = build(seed, report.humans, report.days, START_MS, bots_per_archetype)
    labels, starts = scenario.labels, scenario.bot_starts
    detector = Detector()
    tokens: dict[str, int] = defaultdict(int)
    first_alert: dict[str, int] = {}
    alerts_by_user: dict[str, list[tuple[str, int]]] = defaultdict(list)
    raised: set[str] = set()
    clock, spent, n = time.perf_counter, 0.0, 0
    for ts, event in scenario.timed_events():
        event["ts_ms"] = ts  # the wire form: the simulator's events are valid by construction
        t0 = clock()
        found = detector.observe(event)
        spent += clock() - t0
        n += 1
        user = event["user_id"]
        tokens[user] += (event["input_tokens"] + event["output_tokens"]
                         + event["cache_read_tokens"] + event["cache_write_tokens"])
        for alert in found:
            if alert.alert_id in raised:
                continue  # the same alert again, its window grown: one alert, dated by its first raise
            raised.add(alert.alert_id)
            alerts_by_user[user].append((alert.kind, alert.window_end_ms))
            if alert.kind == TOKENMAXXING and ts >= starts.get(user, ts + 1):
                first_alert.setdefault(user, ts)
        if progress and n % 500_000 == 0:
            done = (ts - START_MS) / (report.days * 86_400_000)
            progress(f"seed {seed}: {n:,} events, {done:.0%} of simulated time, "
                     f"{spent / n * 1e6:.1f} µs/event")
    report.events += n
    report.detector_s += spent
    report.state_bytes += [len(detector.state_bytes(u)) for u in detector.users]
    tally(report, labels, starts, alerts_by_user, first_alert, tokens,
          lambda users: {u for u in users if detector.risk(u)[0] >= THRESHOLD})


def tally(report: Report, labels: dict[str, str], starts: dict[str, int],
          alerts_by_user: dict[str, list[tuple[str, int]]], first_alert: dict[str, int], tokens: dict[str, int],
          suspected: Callable[[list[str]], set[str]]) -> None:
    """Add one seed's outcome to the report.

    ``alerts_by_user``: (kind, window end) of every alert; ``first_alert``: event
    time of each bot's first tokenmaxxing alert after its start; ``suspected``:
    which of the given users score at or above the threshold now.
    """
    for user, kind in labels.items():
        row = report.rows[kind]
        row.users += 1
        got = alerts_by_user.get(user, [])
        row.spikes += sum(1 for k, _ in got if k == SPIKE)
        if kind in BOTS:
            row.alerts += sum(1 for k, t in got if k == TOKENMAXXING and t >= starts[user])
            if user in first_alert:
                row.flagged += 1
                row.latencies_ms.append(first_alert[user] - starts[user])
        else:
            row.alerts += sum(1 for k, _ in got if k == TOKENMAXXING)
            row.flagged += any(k == TOKENMAXXING for k, _ in got)
    ranked = sorted(tokens, key=lambda u: -tokens[u])
    # Enough of the top to refill its places once the suspected are taken out.
    head = ranked[:2 * TOP_N]
    flagged = suspected(head)
    kept = [u for u in head if u not in flagged]
    report.top_bots_before.append(sum(labels[u] in BOTS for u in ranked[:TOP_N]))
    report.top_bots_after.append(sum(labels[u] in BOTS for u in kept[:TOP_N]))


def evaluate(seeds: Sequence[int], humans: int, days: float, bots_per_archetype: int = 2,
             progress: Progress | None = None) -> Report:
    report = Report(list(seeds), humans, days)
    for seed in seeds:
        run_seed(report, seed, bots_per_archetype, progress)
    return report


def _minutes(values: list[int]) -> str:
    return f"{statistics.median(values) / 60_000:8.0f}" if values else "       -"


def _slowest(values: list[int]) -> str:
    return f"{max(values) / 60_000:.0f}" if values else "-"


def format_report(r: Report) -> str:
    tp, bots, fp, fp_alerts = r.totals()
    human_days = r.humans * r.days * len(r.seeds)
    lines = [f"seeds {r.seeds}, {r.humans} humans x {r.days:g} days each, {r.events:,} events",
             f"{'archetype':18} {'users':>5} {'flagged':>7} {'rate':>6} {'tmx alerts':>10} "
             f"{'spikes':>6} {'median min':>10} {'slowest min':>11}"]
    for group, names in (("bots", [k for k in BOTS if k in r.rows]),
                         ("humans", [k for k in r.rows if k not in BOTS])):
        lines.append(f"-- {group}")
        for name in names:
            row = r.rows[name]
            lines.append(f"{name:18} {row.users:5} {row.flagged:7} {row.flagged / row.users:6.0%} "
                         f"{row.alerts:10} {row.spikes:6} {_minutes(row.latencies_ms):>10} "
                         f"{_slowest(row.latencies_ms):>11}")
    all_lat = [x for k, row in r.rows.items() if k in BOTS for x in row.latencies_ms]
    precision = tp / (tp + fp) if tp + fp else 1.0
    lines += [
        f"recall {tp}/{bots} = {tp / bots if bots else 0:.3f}   precision {tp}/{tp + fp} = {precision:.3f}",
        f"false positives: {fp} humans flagged, {fp_alerts} alerts = "
        f"{fp_alerts / human_days * 1000:.2f} per 1,000 humans per day",
        f"median detection latency, all bots: {_minutes(all_lat).strip()} min of event time",
        f"bots in top {TOP_N} by tokens: before {r.top_bots_before}, "
        f"after excluding score >= {THRESHOLD}: {r.top_bots_after}",
    ]
    if r.state_bytes:
        lines.append(f"detector cost {r.detector_s / max(r.events, 1) * 1e6:.1f} µs/event; state "
                     f"{statistics.mean(r.state_bytes):.0f} bytes/user mean, {max(r.state_bytes)} max")
    lines += r.notes
    return "\n".join(lines)


def main(seeds: Sequence[int], humans: int, days: float, bots_per_archetype: int, pipeline: bool) -> None:
    """`tokentrail evaluate` (its arguments are in tokentrail/cli.py): print the report."""
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if pipeline:
        from stream_processors.detection.evaluate_pipeline import evaluate_pipeline

        report = evaluate_pipeline(seeds, humans, days, bots_per_archetype, progress)
    else:
        report = evaluate(seeds, humans, days, bots_per_archetype, progress)
    print(format_report(report))


if __name__ == "__main__":
    from tokentrail.cli import main as cli

    sys.exit(cli(["evaluate", *sys.argv[1:]]))
