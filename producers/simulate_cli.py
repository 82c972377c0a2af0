"""`tokentrail simulate`: synthetic organisation traffic into the pipeline.

Posts NDJSON batches to the API (so it exercises ingest exactly like real
clients), or writes them to a file with --out (then `tokentrail replay`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from producers.progress import Progress
from producers.simulator import simulate
from tokentrail.errors import TokenTrailError
from tokentrail.events import parse_timestamp_ms
from tokentrail.settings import Settings

BATCH = 5000


def run(args: argparse.Namespace, settings: Settings) -> int:
    now_ms = int(time.time() * 1000)
    span_ms = int(args.days * 86_400_000)
    default_start = now_ms if args.realtime else now_ms - span_ms
    start_ms = parse_timestamp_ms(args.start) if args.start else default_start
    events = simulate(args.seed, args.humans, args.days, start_ms, bots_per_archetype=args.bots_per_archetype)
    if args.realtime:
        events = _paced(events)
        if getattr(args, "backfill", False):
            # History first (fast), so dashboards have data at once; then live.
            past = simulate(args.seed, args.humans, args.days, now_ms - span_ms,
                            bots_per_archetype=args.bots_per_archetype)
            events = itertools.chain(({**e, "event_id": f"h-{e['event_id']}"} for e in past), events)
    if args.out:
        return _write(Path(args.out), events)
    url = args.url or _running_url(settings)
    token = args.token or settings.admin_token or os.environ.get("TOKENTRAIL_ADMIN_TOKEN")
    return _post_all(url, events, token)


def _paced(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for event in events:
        delay = parse_timestamp_ms(event["timestamp"]) / 1000 - time.time()
        if delay > 0:
            time.sleep(delay)
        yield event


def _running_url(settings: Settings) -> str:
    from tokentrail.runtime.up import runtime_file

    path = runtime_file(settings)
    if path.exists():
        return str(orjson.loads(path.read_bytes())["url"])
    return f"http://{settings.host}:{settings.port}"


def _write(path: Path, events: Iterator[dict[str, Any]]) -> int:
    progress = Progress(f"simulate -> {path}")
    n = 0
    with path.open("wb") as f:
        for event in events:
            f.write(orjson.dumps(event) + b"\n")
            n += 1
            progress.update(n)
    progress.finish(n)
    return 0


def _post_all(url: str, events: Iterator[dict[str, Any]], token: str | None) -> int:
    progress = Progress(f"simulate -> {url}")
    batch: list[bytes] = []
    sent = 0
    last_post = time.monotonic()
    for event in events:
        batch.append(orjson.dumps(event))
        # In real time, flush at least every 2 s so the dashboards stay live.
        if len(batch) >= BATCH or (batch and time.monotonic() - last_post > 2):
            sent += post_ndjson(url, b"\n".join(batch), token)
            batch, last_post = [], time.monotonic()
            progress.update(sent)
    if batch:
        sent += post_ndjson(url, b"\n".join(batch), token)
    progress.finish(sent)
    return 0


def post_ndjson(url: str, body: bytes, token: str | None, attempts: int = 20) -> int:
    """POST one NDJSON body, retrying on 503/connection errors; returns accepted."""
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for attempt in range(attempts):
        request = urllib.request.Request(f"{url}/v1/events", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return int(orjson.loads(resp.read())["accepted"])
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise TokenTrailError(f"POST {url}/v1/events answered {exc.code}: {exc.read()[:300]!r}") from None
        except OSError:
            pass
        time.sleep(min(2**attempt * 0.2, 5))
    raise TokenTrailError(f"POST {url}/v1/events kept failing after {attempts} attempts")


