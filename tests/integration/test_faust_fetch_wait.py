"""Faust stages fetch with TOKENTRAIL_FETCH_MAX_WAIT_MS, not Faust's fixed 1,500 ms.

The setting reaches aiokafka through a private attribute (Faust has no option
for it), so this checks it where aiokafka uses it: the started consumer's
fetcher, against the real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stream_processors.app import faust_app
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.settings import Settings


async def _started_fetch_wait(bootstrap: str, wait_ms: int) -> tuple[str, int]:
    app = faust_app("tt-fetch-wait-test", Settings(fetch_max_wait_ms=wait_ms), bootstrap, batch_messages=10)
    assert app.conf.stream_buffer_maxsize == 20  # twice a stage's batch (see faust_app)

    async def noop(*_args: Any) -> None:
        return None

    consumer = app.transport.create_consumer(callback=noop, on_partitions_revoked=noop, on_partitions_assigned=noop)
    aiokafka_consumer = consumer._thread._create_worker_consumer(app.transport)
    await aiokafka_consumer.start()
    try:
        return type(aiokafka_consumer).__name__, aiokafka_consumer._fetcher._fetch_max_wait_ms
    finally:
        await aiokafka_consumer.stop()


def test_stage_consumers_fetch_with_the_configured_wait(broker: EmbeddedBroker) -> None:
    name, wait = asyncio.run(_started_fetch_wait(broker.bootstrap, 123))
    assert (name, wait) == ("AIOKafkaConsumer", 123)

