"""`tokentrail evaluate --pipeline`: the same scenarios through the real pipeline.

Per seed: a fresh `tokentrail up` (embedded broker, processors, detector, sinks,
API) in a temporary data dir; the scenario's events sent with the producer SDK
(validated and priced at the edge, like any client's); then, once the detector
has fed every event and the alert sink has stored every alert:
- every alert version from the alerts topic (the first version of an alert
  dates its detection: stored rows keep only the latest version of a window);
- the alerts served by ``GET /v1/alerts`` (must be the same ids);
- bot scores of the top users by tokens from ``GET /v1/users/{id}/risk``.
Outcomes are tallied exactly as the offline evaluation does.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from producers.sdk import UsageProducer
from producers.simulator import build
from stream_processors.detection.alerts import THRESHOLD, TOKENMAXXING
from stream_processors.detection.evaluate import START_MS, Progress, Report, tally
from tokentrail.alerts import MessageError, decode_alert
from tokentrail.errors import TokenTrailError
from tokentrail.runtime.child import ChildStack
from tokentrail.settings import Settings


def evaluate_pipeline(seeds: Sequence[int], humans: int, days: float, bots_per_archetype: int = 2,
                      progress: Progress | None = None, workdir: Path | None = None) -> Report:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    report = Report(list(seeds), humans, days)
    with tempfile.TemporaryDirectory(prefix="tokentrail-evaluate-", dir=workdir) as tmp:
        for seed in seeds:
            run_seed(report, seed, bots_per_archetype, Path(tmp) / f"seed-{seed}", progress or (lambda _: None))
    return report


def run_seed(report: Report, seed: int, bots_per_archetype: int, data_dir: Path, progress: Progress) -> None:
    scenario = build(seed, report.humans, report.days, START_MS, bots_per_archetype)
    labels, starts = scenario.labels, scenario.bot_starts
    settings = Settings()
    token = secrets.token_urlsafe(24)
    stack = ChildStack(data_dir, {"TOKENTRAIL_ADMIN_TOKEN": token})
    progress(f"seed {seed}: starting the pipeline in {data_dir}")
    stack.start()
    try:
        t0 = time.monotonic()
        tokens: dict[str, int] = defaultdict(int)
        producer = UsageProducer(stack.bootstrap)
        n = 0
        for event in scenario.events():
            producer.send(event)
            tokens[event["user_id"]] += (event["input_tokens"] + event["output_tokens"]
                                         + event.get("cache_read_tokens", 0) + event.get("cache_write_tokens", 0))
            n += 1
            if n % 250_000 == 0:
                progress(f"seed {seed}: {n:,} events sent")
        failed = producer.close(120)
        if failed:
            raise TokenTrailError(f"seed {seed}: {failed} events were not delivered to the broker")
        sent_s = time.monotonic() - t0
        progress(f"seed {seed}: {n:,} events sent in {sent_s:.0f} s; waiting for the detector")
        stages = _wait_detected(stack, n, progress, seed)
        detect_s = time.monotonic() - t0
        versions = _alert_versions(stack.bootstrap, settings.alerts_topic, stages["detector"]["alerts"])
        carried = {a["alert_id"] for a in versions}
        served = _served_once_stored(stack, carried)
        if served != carried:
            raise TokenTrailError(f"seed {seed}: /v1/alerts serves {len(served)} alert ids, the alerts topic "
                                  f"carries {len(carried)}")
        # The versions of one alert id are one alert, dated by its first version.
        first_versions: dict[str, tuple[str, str, int]] = {}
        for a in versions:
            seen = first_versions.get(a["alert_id"])
            if seen is None or a["window_end_ms"] < seen[2]:
                first_versions[a["alert_id"]] = (a["user_id"], a["kind"], a["window_end_ms"])
        alerts_by_user: dict[str, list[tuple[str, int]]] = defaultdict(list)
        first_alert: dict[str, int] = {}
        for user, kind, end_ms in sorted(first_versions.values(), key=lambda v: v[2]):
            alerts_by_user[user].append((kind, end_ms))
            start = starts.get(user)
            if kind == TOKENMAXXING and start is not None and end_ms >= start:
                first_alert.setdefault(user, end_ms)

        def suspected(users: list[str]) -> set[str]:
            return {u for u in users if _risk(stack, u) >= THRESHOLD}

        tally(report, labels, starts, alerts_by_user, first_alert, tokens, suspected)
        report.events += n
        det = stages["detector"]
        report.notes.append(
            f"seed {seed} through the pipeline: {n:,} events sent in {sent_s:.0f} s, all fed to the detector "
            f"after {detect_s:.0f} s ({n / detect_s:,.0f} events/s end to end); detector fed {det['fed']:,}, "
            f"duplicates {det['duplicates']}; {len(served)} alerts served by /v1/alerts")
    finally:
        stack.stop()


def _wait_detected(stack: ChildStack, n: int, progress: Progress, seed: int,
                   timeout_s: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    stages: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            snap = stack.pipeline()
        except (httpx.HTTPError, ValueError):
            time.sleep(1)
            continue
        stages = snap["stages"]
        det, sink = stages.get("detector", {}), stages.get("alert_sink", {})
        fed = det.get("fed", 0) + det.get("duplicates", 0)
        if fed >= n and snap["stored"] >= n and sink.get("alert_messages", 0) >= det.get("alerts", 0):
            return stages
        if time.monotonic() - last_report > 15:
            progress(f"seed {seed}: detector {fed:,}/{n:,}, stored {snap['stored']:,}")
            last_report = time.monotonic()
        time.sleep(1)
    raise TokenTrailError(f"seed {seed}: detection did not finish in {timeout_s:.0f} s: {stages}")


def _alert_versions(bootstrap: str, topic: str, at_least: int, quiet_s: float = 3.0) -> list[dict[str, Any]]:
    """Every message of the alerts topic. Read until quiet, and at least as many as the
    detector reports (the embedded broker's end offsets can trail the real end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"evaluate-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[dict[str, Any]] = []
    last = time.monotonic()
    while len(out) < at_least or time.monotonic() - last < quiet_s:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            if time.monotonic() - last > 60:
                break
            continue
        last = time.monotonic()
        try:
            out.append(decode_alert(msg.value()))
        except MessageError:
            continue
    consumer.close()
    return out


def _served_once_stored(stack: ChildStack, ids: set[str], timeout_s: float = 60) -> set[str]:
    """``_served_alert_ids``, read again until it includes ``ids`` (or ``timeout_s``
    passed). The alert sink's message count can reach the detector's alert count
    while its last batch is still being stored: alerts a detector re-sends after
    a crash are messages too."""
    deadline = time.monotonic() + timeout_s
    while True:
        served = _served_alert_ids(stack)
        if ids <= served or time.monotonic() > deadline:
            return served
        time.sleep(0.5)


def _served_alert_ids(stack: ChildStack) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        resp = stack.client.get("/v1/alerts", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
        resp.raise_for_status()
        page = resp.json()
        ids |= {a["alert_id"] for a in page["alerts"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def _risk(stack: ChildStack, user_id: str) -> float:
    resp = stack.client.get(f"/v1/users/{user_id}/risk")
    if resp.status_code == 404:
        return 0.0
    resp.raise_for_status()
    return float(resp.json()["bot_score"])

