"""GET /v1/alerts and GET /v1/users/{user_id}/risk: the real app around a real chdb store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.context import ApiContext
from stream_processors.alert_sink import ALERT_COLUMNS, RISK_COLUMNS
from tests.helpers import new_store
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.settings import Settings
from tokentrail.store import Store

pytestmark = pytest.mark.integration
ROOT = "root-token-for-alert-tests"
D0 = datetime(2026, 11, 23, tzinfo=UTC)
# alert id -> (user, org, kind, detected minutes after D0)
ALERTS: dict[str, tuple[str, str, str, int]] = {
    "a01": ("alice", "acme/eng", "tokenmaxxing", 1),
    "a02": ("alice", "acme/eng", "spike", 2),
    "a03": ("bob", "acme/eng/infra", "tokenmaxxing", 3),
    "a04": ("carol", "acme/engx", "tokenmaxxing", 4),
    "a05": ("dave", "acme/sales", "spike", 5),
    "a06": ("erin", "globex", "tokenmaxxing", 6),
    "a07": ("bob", "acme/eng/infra", "spike", 6),  # same detected_at as a06: the id breaks the tie
}


def row(alert_id: str, user: str, org: str, kind: str, minute: int, version: int = 0) -> tuple[Any, ...]:
    detected = D0 + timedelta(minutes=minute)
    return (alert_id, user, org, kind, "medium", round(0.6 + version / 10, 4), D0 - timedelta(hours=2),
            D0 - timedelta(hours=1) + timedelta(minutes=version), detected, [f"v{version}"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = new_store(tmp_path_factory.mktemp("api-alerts"))
    s.insert("alerts", ALERT_COLUMNS, [row(a, *spec) for a, spec in ALERTS.items()])
    # a01 again: a replayed copy and a later version (separate inserts: separate parts, not merged yet)
    s.insert("alerts", ALERT_COLUMNS, [row("a01", "alice", "acme/eng", "tokenmaxxing", 1)])
    s.insert("alerts", ALERT_COLUMNS, [row("a01", "alice", "acme/eng", "tokenmaxxing", 1, version=3)])
    s.insert("user_risk", RISK_COLUMNS, [("alice", 0.4, ["old"], D0), ("alice", 0.93, ["scripted"], D0 + timedelta(1))])
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(admin_token=ROOT)
    ctx = ApiContext(settings=settings, bootstrap="127.0.0.1:9", store=store, prices=PriceTable.load(None),
                     publisher=Publisher("127.0.0.1:9", settings.usage_topic, log_level=0))  # no broker: quiet
    with TestClient(create_app(ctx)) as c:
        yield c


def auth(token: str = ROOT) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ids(client: TestClient, token: str = ROOT, **params: Any) -> list[str]:
    r = client.get("/v1/alerts", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return [a["alert_id"] for a in r.json()["alerts"]]


def test_newest_first_one_row_per_alert_latest_version(client: TestClient) -> None:
    assert ids(client) == ["a07", "a06", "a05", "a04", "a03", "a02", "a01"]
    a01 = client.get("/v1/alerts", params={"user_id": "alice", "kind": "tokenmaxxing"}, headers=auth()).json()
    assert a01["alerts"] == [{
        "alert_id": "a01", "user_id": "alice", "org_id": "acme/eng", "kind": "tokenmaxxing", "severity": "medium",
        "score": 0.9, "window_start": "2026-11-22T22:00:00.000Z", "window_end": "2026-11-22T23:03:00.000Z",
        "detected_at": "2026-11-23T00:01:00.000Z", "reasons": ["v3"]}]
    assert a01["next_cursor"] is None


def test_filters(client: TestClient) -> None:
    assert ids(client, org_id="acme/eng") == ["a07", "a03", "a02", "a01"]  # the subtree, not acme/engx
    assert ids(client, org_id="acme") == ["a07", "a05", "a04", "a03", "a02", "a01"]
    assert ids(client, kind="spike") == ["a07", "a05", "a02"]
    assert ids(client, user_id="bob", kind="spike") == ["a07"]
    assert ids(client, since="2026-11-23T00:05:00Z") == ["a07", "a06", "a05"]
    assert ids(client, kind="budget") == []


def test_pagination_is_stable_under_inserts(client: TestClient, store: Store) -> None:
    first = client.get("/v1/alerts", params={"limit": 3, "org_id": "acme"}, headers=auth()).json()
    assert [a["alert_id"] for a in first["alerts"]] == ["a07", "a05", "a04"]
    # a new alert, and a new version of one already paged: neither shifts the next page
    store.insert("alerts", ALERT_COLUMNS, [row("a99", "zed", "acme/eng", "spike", 60),
                                           row("a05", "dave", "acme/sales", "spike", 90, version=2)])
    seen = [a["alert_id"] for a in first["alerts"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/alerts", params={"limit": 3, "org_id": "acme", "cursor": cursor},
                          headers=auth()).json()
        seen += [a["alert_id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
    assert seen == ["a07", "a05", "a04", "a03", "a02", "a01"]
    assert ids(client, org_id="acme", limit=1) == ["a99"]  # a fresh first page sees it


@pytest.mark.parametrize("params, status", [
    ({"limit": 0}, 422), ({"limit": 1001}, 422), ({"cursor": "garbage"}, 400), ({"since": "yesterday"}, 400),
    ({"nope": "1"}, 400),
])
def test_bad_requests(client: TestClient, params: dict[str, Any], status: int) -> None:
    assert client.get("/v1/alerts", params=params, headers=auth()).status_code == status


def test_scopes(client: TestClient) -> None:
    repo = client.app.state.ctx.tokens  # type: ignore[attr-defined]
    alice = repo.create("self", user_id="alice")[0]
    viewer = repo.create("org_viewer", org_id="acme/eng")[0]
    granted = repo.create("org_viewer", org_id="acme/eng", per_person=True)[0]
    assert ids(client, alice) == ["a02", "a01"]
    assert client.get("/v1/alerts", params={"user_id": "bob"}, headers=auth(alice)).status_code == 403
    assert client.get("/v1/alerts", headers=auth(viewer)).status_code == 403  # per-person data needs the grant
    assert ids(client, granted) == ["a99", "a07", "a03", "a02", "a01"]
    assert client.get("/v1/alerts", params={"org_id": "acme"}, headers=auth(granted)).status_code == 403
    assert client.get("/v1/users/alice/risk", headers=auth(alice)).status_code == 200
    assert client.get("/v1/users/bob/risk", headers=auth(alice)).status_code == 403
    assert client.get("/v1/users/alice/risk", headers=auth(granted)).status_code == 403


def test_risk(client: TestClient) -> None:
    r = client.get("/v1/users/alice/risk", headers=auth())
    assert r.json() == {"user_id": "alice", "bot_score": 0.93, "reasons": ["scripted"],
                        "updated_at": "2026-11-24T00:00:00.000Z"}
    r = client.get("/v1/users/nobody/risk", headers=auth())
    assert r.status_code == 200
    assert r.json() == {"user_id": "nobody", "bot_score": 0.0, "reasons": [], "updated_at": None}
