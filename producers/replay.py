"""`tokentrail replay FILE`: send NDJSON usage events from a file, in order.

Valid events go through the producer SDK; an invalid line is reported with
its line number and sent to the dead-letter topic with the reason, and the
replay goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from producers.progress import Progress
from producers.sdk import UsageProducer
from tokentrail.envelope import dead_letter
from tokentrail.errors import EventError, TokenTrailError
from tokentrail.publish import Publisher
from tokentrail.settings import Settings


def run(path: Path, bootstrap: str, settings: Settings) -> int:
    if not path.is_file():
        raise TokenTrailError(f"no such file: {path}")
    progress = Progress(f"replay {path.name}")
    invalid = 0
    dead_letters = Publisher(bootstrap, settings.dead_letter_topic)
    # Partitions as the topic has them (UsageProducer asks the broker), whatever the environment says.
    with UsageProducer(bootstrap, settings.usage_topic) as producer, path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                producer.send(orjson.loads(line))
            except (orjson.JSONDecodeError, EventError) as exc:
                invalid += 1
                reason = f"line {lineno}: {exc}"
                print(f"\n{path}:{reason}", file=sys.stderr)
                dead_letters.send_raw(settings.dead_letter_topic, dead_letter(line, reason, "replay"))
            progress.update(producer.sent + len(producer._buffer), f"invalid {invalid:,}")
        left = producer.flush()
        undelivered = left + producer.failed_count
        progress.finish(producer.delivered, f"delivered, invalid {invalid:,}, undelivered {undelivered:,}")
    dead_letters.close(10)
    return 0 if producer.failed_count == 0 and left == 0 else 1
