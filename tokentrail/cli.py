"""The `tokentrail` command (CONTRACT.md §2).

Settings come from TOKENTRAIL_* environment variables; flags override them.
Commands that run a component import it lazily, so `tokentrail --help` is
fast and the kernel does not depend on the components at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from tokentrail.errors import TokenTrailError
from tokentrail.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("port", "data_dir", "host", "partitions"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "bootstrap", None):
        overrides["kafka_bootstrap"] = args.bootstrap
    return Settings(**overrides)


def _bootstrap(settings: Settings) -> str:
    """The broker to use: configured, else the one a running `tokentrail up` uses."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from tokentrail.runtime.up import runtime_file

    path = runtime_file(settings)
    if path.exists():
        import orjson

        return str(orjson.loads(path.read_bytes())["bootstrap"])
    raise TokenTrailError(
        "no broker: set TOKENTRAIL_KAFKA_BOOTSTRAP (or --bootstrap), or start `tokentrail up` "
        f"with the same --data-dir (looked for {path})"
    )


def cmd_up(args: argparse.Namespace) -> int:
    from tokentrail.runtime import up

    return up.run(_settings(args), demo=args.demo)


def cmd_serve(args: argparse.Namespace) -> int:
    from tokentrail.runtime import serve

    settings = _settings(args)
    serve.run(settings, _bootstrap(settings), with_sink=not args.no_sink)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from tokentrail.runtime import serve

    settings = _settings(args)
    serve.run(settings, _bootstrap(settings), with_sink=False)
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    from tokentrail.runtime import serve

    settings = _settings(args)
    serve.run_sink(settings, _bootstrap(settings))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_processors import worker

    settings = _settings(args)
    worker.run(settings, _bootstrap(settings))
    return 0


def cmd_detector(args: argparse.Namespace) -> int:
    from stream_processors.detection import agent

    settings = _settings(args)
    agent.run(settings, _bootstrap(settings))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from producers import replay

    settings = _settings(args)
    return replay.run(Path(args.file), _bootstrap(settings), settings)


def cmd_simulate(args: argparse.Namespace) -> int:
    from producers import simulate_cli

    return simulate_cli.run(args, _settings(args))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stream_processors.detection import evaluate

    evaluate.main(args.seeds, args.humans, args.days, args.bots_per_archetype, args.pipeline)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from api.auth import cli as tokens_cli

    return tokens_cli.run(args, _settings(args))


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokentrail", description="Honest measurement of AI token usage.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env TOKENTRAIL_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole pipeline locally (embedded broker and store)")
    up.add_argument("--port", type=int, help="API port (default 8000)")
    up.add_argument("--data-dir", type=Path, help="embedded store directory (default ./tokentrail-data)")
    up.add_argument("--partitions", type=int, help="usage topic partitions (default 4)")
    up.add_argument("--demo", action="store_true", help="also run the simulator against the API")
    up.set_defaults(func=cmd_up)

    for name, func, text in (("serve", cmd_serve, "API + history sink in one process (owns an embedded store)"),
                             ("api", cmd_api, "API only (production, with a ClickHouse server)"),
                             ("sink", cmd_sink, "history sink only (production, with a ClickHouse server)"),
                             ("worker", cmd_worker, "stream processors (Faust)"),
                             ("detector", cmd_detector, "bot detection: usage -> alerts and risk topics (Faust)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (env TOKENTRAIL_KAFKA_BOOTSTRAP)")
        p.add_argument("--port", type=int)
        p.add_argument("--data-dir", type=Path)
        if name == "serve":
            p.add_argument("--no-sink", action="store_true", help="API only (with a ClickHouse server)")
        p.set_defaults(func=func)

    replay = sub.add_parser("replay", help="send NDJSON usage events from a file, in order")
    replay.add_argument("file")
    replay.add_argument("--bootstrap")
    replay.add_argument("--data-dir", type=Path, help="find the broker of a running `tokentrail up`")
    replay.set_defaults(func=cmd_replay)

    sim = sub.add_parser("simulate", help="synthetic organisation traffic (humans and bots)")
    sim.add_argument("--url", default=None, help="API to POST to (default: the running `up`)")
    sim.add_argument("--data-dir", type=Path)
    sim.add_argument("--humans", type=int, default=50)
    sim.add_argument("--days", type=float, default=1.0)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--bots-per-archetype", type=int, default=1)
    sim.add_argument("--start", default=None, help="RFC 3339 start of event time (default: now - days)")
    sim.add_argument("--realtime", action="store_true", help="pace events at event-time speed, starting now")
    sim.add_argument("--backfill", action="store_true", help="with --realtime: first send the past --days at once")
    sim.add_argument("--out", default=None, help="write NDJSON to this file instead of posting")
    sim.add_argument("--token", default=None, help="bearer token (env TOKENTRAIL_ADMIN_TOKEN)")
    sim.set_defaults(func=cmd_simulate)

    ev = sub.add_parser("evaluate", help="score the bot detector on simulated scenarios")
    ev.add_argument("--seeds", type=_seed_list, default="101,102,103",
                    help="comma-separated scenario seeds (1-3 were used for tuning)")
    ev.add_argument("--humans", type=int, default=250, help="humans per scenario")
    ev.add_argument("--days", type=float, default=7, help="days of event time per scenario")
    ev.add_argument("--bots-per-archetype", type=int, default=2, help="bots of each archetype per scenario")
    ev.add_argument("--pipeline", action="store_true",
                    help="through the real pipeline (a fresh `tokentrail up` per seed) instead of the detector "
                         "library alone")
    ev.set_defaults(func=cmd_evaluate)

    tokens = sub.add_parser("tokens", help="API tokens: create, list, revoke (docs/access.md)")
    tokens.add_argument("--url", default=None, help="admin API of a running server (default: the running `up`, "
                                                    "else the store directly, which needs no `serve` running)")
    tokens.add_argument("--token", default=None, help="admin bearer token (env TOKENTRAIL_ADMIN_TOKEN)")
    tokens.add_argument("--data-dir", type=Path, help="embedded store directory (default ./tokentrail-data)")
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token; its secret is printed once")
    create.add_argument("--role", required=True, choices=["admin", "org_viewer", "self", "ingest"])
    create.add_argument("--org-id", default=None, help="org_viewer: the org subtree it may read")
    create.add_argument("--user-id", default=None, help="self: the user whose data it may read")
    create.add_argument("--per-person", action="store_true", help="org_viewer: may also read per-person rows")
    create.add_argument("--name", default="", help="a label, e.g. 'finance dashboard'")
    actions.add_parser("list", help="list tokens (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token, effective at once")
    revoke.add_argument("token_id")
    tokens.set_defaults(func=cmd_tokens)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or Settings().log_level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except TokenTrailError as exc:
        print(f"tokentrail: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
