"""`tokentrail up`: the whole pipeline on one machine, one command.

Starts the embedded broker (unless TOKENTRAIL_KAFKA_BOOTSTRAP points at a
Kafka), then supervises the stages: `serve` (API + history and alert sinks,
owner of the store), `worker` (stream processors) and `detector` (bot
detection; off with TOKENTRAIL_DETECTION=0). Ctrl-C stops ingest first, lets
the sinks store what was accepted, stops the processors, then the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import orjson

from tokentrail.errors import TokenTrailError
from tokentrail.publish import Publisher
from tokentrail.runtime.broker import EmbeddedBroker
from tokentrail.runtime.supervisor import Stage, Supervisor, cli_argv
from tokentrail.settings import Settings

log = logging.getLogger(__name__)


def runtime_file(settings: Settings) -> Path:
    """Where a running `up` tells other commands (replay, simulate) where it is."""
    return settings.data_dir / "runtime.json"


def wait_ready(url: str, timeout_s: float, supervisor: Supervisor) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise TokenTrailError(
                f"port {port} on {host} is in use (another `tokentrail up`?); choose another with --port"
            ) from None


def run(settings: Settings, demo: bool = False) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <pid>` stops as gracefully as Ctrl-C
    _check_port_free(settings.host, settings.port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    broker = None
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        broker = EmbeddedBroker(settings.broker_port, log_path=logs / "broker.log").start()
        bootstrap = broker.bootstrap
    env = {**os.environ, **settings.env(), "TOKENTRAIL_KAFKA_BOOTSTRAP": bootstrap}
    url = f"http://{settings.host}:{settings.port}"
    stages = [
        Stage("serve", cli_argv("serve"), env, logs / "serve.log"),
        Stage("worker", cli_argv("worker"), env, logs / "worker.log"),
    ]
    if settings.detection:  # TOKENTRAIL_DETECTION=0 runs without it
        stages.append(Stage("detector", cli_argv("detector"), env, logs / "detector.log"))
    stats = Publisher(bootstrap, settings.stats_topic)

    def publish_restarts(restarts: dict[str, int]) -> None:
        stats.send_raw(settings.stats_topic, orjson.dumps({"restarts": restarts}), key=b"supervisor")

    supervisor = Supervisor(stages, on_restart=publish_restarts)
    try:
        supervisor.start()
        if not wait_ready(url, 120, supervisor):
            raise TokenTrailError(f"the API did not become ready at {url}; see {logs}/serve.log")
        runtime_file(settings).write_bytes(orjson.dumps({"bootstrap": bootstrap, "url": url, "pid": os.getpid()}))
        _print_banner(settings, url, bootstrap, broker, stages, logs)
        demo_stage = _start_demo(settings, env, logs, url) if demo else None
        while True:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping: ingest first, then draining to the store, then processors and broker ...", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the orderly stop short and leave stages running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if demo and "demo_stage" in locals() and demo_stage is not None:
            Supervisor([demo_stage]).stop(10)
        supervisor.stop()
        stats.close(2)
        if broker is not None:
            broker.stop()
        runtime_file(settings).unlink(missing_ok=True)
        print("stopped.", flush=True)


def _start_demo(settings: Settings, env: dict[str, str], logs: Path, url: str) -> Stage:
    stage = Stage("demo", cli_argv("simulate", "--url", url, "--humans", "40", "--days", "1", "--realtime",
                           "--backfill"),
                  env, logs / "demo.log")
    stage.start()
    print(f"  demo       simulator posting to {url} (log: {logs / 'demo.log'})", flush=True)
    return stage


def _print_banner(settings: Settings, url: str, bootstrap: str, broker: EmbeddedBroker | None,
                  stages: list[Stage], logs: Path) -> None:
    where = "embedded Tansu, in memory" if broker else "external Kafka"
    store = settings.clickhouse_url or f"{settings.data_dir / 'chdb'} (embedded chdb)"
    print(f"""TokenTrail is up.
  API        {url}   (OpenAPI docs: {url}/docs)
  broker     {bootstrap}   ({where})
  store      {store}
  stages     {', '.join(f'{s.name} pid {s.pid}' for s in stages)}
  logs       {logs}
Press Ctrl-C to stop.""", flush=True)
    if not settings.admin_token:
        print("  warning: TOKENTRAIL_ADMIN_TOKEN is not set; the API accepts requests without a token.", flush=True)
