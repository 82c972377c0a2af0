"""The server backend against a real ClickHouse in Docker (testcontainers).

Runs the same checks as the chdb tests, each in a fresh database. Skips when
no Docker daemon is reachable, so it costs nothing on machines without one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import require_docker
from tokentrail.store import ClickHouseStore, Store, StoreUnavailable, open_store

pytestmark = [pytest.mark.integration, pytest.mark.docker]

IMAGE = "clickhouse/clickhouse-server:24.8"


def _load_checks() -> ModuleType:
    # Loaded by path: a plain import of a sibling test module breaks as soon
    # as tests/ gains (or loses) __init__.py files.
    path = Path(__file__).with_name("test_store_chdb.py")
    spec = importlib.util.spec_from_file_location("_tokentrail_store_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECKS: list[Callable[[Store], None]] = _load_checks().CHECKS


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    require_docker()
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(IMAGE) as ch:
        host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
        yield f"http://{ch.username}:{ch.password}@{host}:{port}"


@pytest.fixture
def store(server_url: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    database = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)
    with ClickHouseStore.from_url(f"{server_url}/default") as admin:
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        admin.command(f"CREATE DATABASE {database}")
    opened = open_store(None, f"{server_url}/{database}")
    assert opened.apply_migrations() == ["001_usage.sql"]
    yield opened
    opened.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_server_store(store: Store, check: Any) -> None:
    check(store)


@pytest.mark.parametrize("url", ["http://default:@127.0.0.1:9/default"])
def test_unreachable_server_is_unavailable(url: str) -> None:
    # Needs no Docker: nothing listens on the discard port.
    with pytest.raises(StoreUnavailable):
        open_store(None, url)
