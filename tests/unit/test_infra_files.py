"""The production files (infra/compose.yaml, infra/Dockerfile) against the code they run.

No Docker engine runs here, so these files are never started in this suite; what
can drift without one is checked instead: every stage command exists in the CLI,
every TOKENTRAIL_* variable is a setting and the environment validates, every path
the Dockerfile copies exists, the broker accepts the largest message we produce,
and nothing but the API publishes a port, on 127.0.0.1 only.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokentrail.cli import build_parser
from tokentrail.envelope import MAX_BYTES_PER_MESSAGE
from tokentrail.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def _resolve(value: object) -> str:
    """${NAME:-default} -> default; ${NAME:?message} -> a stand-in value, as compose would need it set."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "set-by-operator", text)


def _stages() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items() if "command" in svc}


def test_every_stage_runs_a_tokentrail_command_that_exists() -> None:
    stages = _stages()
    assert {"api", "sink", "worker", "detector"} <= set(stages)
    parser = build_parser()
    for name, svc in stages.items():
        args = parser.parse_args([str(a) for a in svc["command"]])
        assert args.command == svc["command"][0], name


def test_the_stage_environment_is_valid_settings() -> None:
    fields = {f"TOKENTRAIL_{name.upper()}" for name in Settings.model_fields}
    for name, svc in _stages().items():
        env = {k: _resolve(v) for k, v in svc["environment"].items()}
        unknown = [k for k in env if k.startswith("TOKENTRAIL_") and k not in fields]
        assert not unknown, f"{name}: not settings: {unknown}"
        settings = Settings.model_validate({k.removeprefix("TOKENTRAIL_").lower(): v for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:9092"
        assert settings.clickhouse_url and "@clickhouse:8123" in settings.clickhouse_url
        assert settings.partitions >= 2  # room for replicas to share the load


def test_the_broker_takes_the_largest_message_the_pipeline_produces() -> None:
    kafka = _compose()["services"]["kafka"]["environment"]
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= 4 * MAX_BYTES_PER_MESSAGE


def test_only_the_api_publishes_a_port_and_only_on_loopback() -> None:
    services = _compose()["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"api"}
    assert all(str(p).startswith("127.0.0.1:") for p in published["api"])


def test_the_dockerfile_copies_what_exists_and_runs_the_cli() -> None:
    text = (INFRA / "Dockerfile").read_text()
    context = ROOT  # build: { context: .. } from infra/
    assert _compose()["x-tokentrail"]["build"]["context"] == ".."
    sources = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert sources
    for group in sources:
        for src in group:
            assert (context / src).exists(), src
    for package in ("tokentrail", "producers", "stream_processors", "api", "setup.py"):
        assert any(package in group for group in sources), package
    assert "import stream_processors._fold" in text  # the image has the C fold, or does not build
    ddl = re.search(r"TOKENTRAIL_DDL_DIR=(\S+)", text)
    assert ddl and ddl.group(1).removeprefix("/app/") == "infra/clickhouse"
    assert any((INFRA / "clickhouse").glob("*.sql"))
    assert 'ENTRYPOINT ["tokentrail"]' in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tokentrail"] == "tokentrail.cli:main"


@pytest.mark.parametrize("service", ["kafka", "clickhouse"])
def test_backing_services_have_health_checks_the_stages_wait_for(service: str) -> None:
    compose = _compose()
    assert compose["services"][service]["healthcheck"]["test"]
    for name, svc in _stages().items():
        assert svc["depends_on"][service]["condition"] == "service_healthy", name
