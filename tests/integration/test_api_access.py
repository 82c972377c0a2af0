"""Access control end to end: the real app around a real chdb store (no broker).

Data: org acme/eng (users e1..e6, e6 a suspected bot), acme/sales (s1, s2) and
globex (g1), over the 30 days before TO. Every user's events carry a distinct
token count, so a number that belongs to someone else is recognisable.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.tokens import TokenRepo
from api.context import ApiContext
from stream_processors.sink import COLUMNS, to_row
from tests.helpers import new_store
from tokentrail.pricing import PriceTable
from tokentrail.publish import Publisher
from tokentrail.settings import Settings
from tokentrail.store import Store

pytestmark = pytest.mark.integration

ROOT = "root-token-for-tests"
TO = datetime(2026, 1, 31, tzinfo=UTC)
WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T00:00:00Z", "granularity": "day"}
# user -> (org, tokens per event, active days (offsets from TO - 30 d), models)
USERS: dict[str, tuple[str, int, range, int]] = {
    "user-e1@acme": ("acme/eng", 101, range(30), 5),
    "user-e2@acme": ("acme/eng", 203, range(30), 1),
    "user-e3@acme": ("acme/eng", 1009, range(20, 30), 1),
    "user-e4@acme": ("acme/eng", 2003, range(20, 30), 1),
    "user-e5@acme": ("acme/eng", 3001, range(20, 30), 1),
    "user-e6@acme": ("acme/eng", 50_021, range(30), 1),  # the bot
    "user-s1@acme": ("acme/sales", 4001, range(25, 30), 1),
    "user-s2@acme": ("acme/sales", 5003, range(25, 30), 1),
    "user-g1@globex": ("globex", 6007, range(25, 30), 1),
}
E1 = "user-e1@acme"
BOT = "user-e6@acme"
HOSTILE = ["a'b", "c\\d", "'; DROP TABLE usage_events; --", "x' OR '1'='1", "line\nbreak\ttab", "ünï 🚀",
           "\\N", "{x:String}", "%(x)s", "' UNION SELECT token_sha256 FROM api_tokens --", "\x00", "a" * 300]


def events() -> list[tuple[Any, ...]]:
    rows = []
    start = TO - timedelta(days=30)
    for user, (org, tokens, days, models) in USERS.items():
        for d in days:
            e = {"event_id": f"{user}-{d}", "ts_ms": int((start + timedelta(days=d, hours=10)).timestamp() * 1000),
                 "user_id": user, "org_id": org, "model": f"model-{d % models}", "client": "cli",
                 "input_tokens": tokens, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
                 "cost_nanos": tokens * 1000, "cost_source": "event"}
            rows.append(to_row(e, TO))
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = new_store(tmp_path_factory.mktemp("access"))
    s.insert("usage_events", COLUMNS, events())
    s.insert("user_risk", ["user_id", "bot_score", "reasons", "updated_at"], [(BOT, 0.93, ["scripted"], TO)])
    yield s
    s.close()


def make_ctx(store: Store, **settings: Any) -> ApiContext:
    s = Settings(**{"admin_token": ROOT, "produce_timeout_s": 0.2, "pseudonym_secret": "p", **settings})
    return ApiContext(settings=s, bootstrap="127.0.0.1:9", store=store, prices=PriceTable.load(None),
                      publisher=Publisher("127.0.0.1:9", s.usage_topic, log_level=0))  # no broker: quiet


@pytest.fixture(scope="module")
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(make_ctx(store))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(client: TestClient, **spec: Any) -> str:
    r = client.post("/v1/admin/tokens", headers=bearer(ROOT), json=spec)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, str]:
    return {
        "admin": ROOT,
        "viewer": new_token(client, role="org_viewer", org_id="acme", name="acme dashboard"),
        "granted": new_token(client, role="org_viewer", org_id="acme/eng", per_person=True),
        "self": new_token(client, role="self", user_id=E1),
        "ingest": new_token(client, role="ingest"),
    }


EVENT = {"event_id": "x1", "timestamp": "2026-01-30T10:00:00Z", "user_id": "u", "org_id": "o", "model": "m",
         "input_tokens": 1, "output_tokens": 1}
# name -> (method, path, request kwargs, roles allowed)
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any], set[str]]] = {
    "post events": ("POST", "/v1/events", {"json": [EVENT]}, {"admin", "ingest"}),
    "pipeline": ("GET", "/v1/pipeline", {}, {"admin", "ingest"}),
    "usage": ("GET", "/v1/usage", {"params": WINDOW}, {"admin", "viewer", "granted", "self"}),
    "usage by user": ("GET", "/v1/usage", {"params": {**WINDOW, "group_by": "user"}}, {"admin", "granted", "self"}),
    "usage of a user": ("GET", "/v1/usage", {"params": {**WINDOW, "user_id": "user-e2@acme"}}, {"admin", "granted"}),
    "usage of globex": ("GET", "/v1/usage", {"params": {**WINDOW, "org_id": "globex"}}, {"admin", "self"}),
    "leaderboard": ("GET", "/v1/leaderboard", {"params": {"window": "30d", "to": "2026-01-31T00:00:00Z"}},
                    {"admin", "viewer", "granted", "self"}),
    "leaderboard globex": ("GET", "/v1/leaderboard", {"params": {"org_id": "globex"}}, {"admin", "self"}),
    "own display name": ("PUT", f"/v1/users/{E1}/display-name", {"json": {"display_name": "E One"}},
                         {"admin", "self"}),
    "other display name": ("PUT", "/v1/users/user-e2@acme/display-name", {"json": {"display_name": None}},
                           {"admin"}),
    "audit": ("GET", "/v1/audit", {}, {"admin"}),
    "list tokens": ("GET", "/v1/admin/tokens", {}, {"admin"}),
    "create token": ("POST", "/v1/admin/tokens", {"json": {"role": "ingest"}}, {"admin"}),
    "revoke token": ("DELETE", "/v1/admin/tokens/0000000000000000", {}, {"admin"}),
}
OPEN = {"healthz": "/healthz", "readyz": "/readyz", "metrics": "/metrics"}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("role", ["admin", "viewer", "granted", "self", "ingest"])
def test_role_endpoint_matrix(client: TestClient, tokens: dict[str, str], role: str, endpoint: str) -> None:
    method, path, kwargs, allowed = ENDPOINTS[endpoint]
    r = client.request(method, path, headers=bearer(tokens[role]), **kwargs)
    if role in allowed:
        # allowed: whatever the answer, it is not an auth failure (events: 503, no broker; revoke: 404)
        assert r.status_code not in (401, 403), r.text
        assert r.status_code < 500 or (endpoint == "post events" and r.status_code == 503), r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json()["detail"]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_no_or_bad_token_is_401(client: TestClient, endpoint: str) -> None:
    method, path, kwargs, _ = ENDPOINTS[endpoint]
    for headers in ({}, bearer("nope"), bearer("tt_0123456789abcdef_" + "A" * 43), {"Authorization": ROOT},
                    bearer(ROOT + "x")):
        r = client.request(method, path, headers=headers, **kwargs)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", list(OPEN.values()))
def test_operations_endpoints_stay_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code in (200, 503)  # readyz: 503, there is no broker


def test_unlisted_route_fails_closed(store: Store, tokens: dict[str, str]) -> None:
    app = create_app(make_ctx(store))
    app.add_api_route("/v1/not-in-the-policy-table", lambda: {"secret": 1})
    c = TestClient(app)
    assert c.get("/v1/not-in-the-policy-table", headers=bearer(ROOT)).status_code == 200
    for role in ("viewer", "granted", "self", "ingest"):
        assert c.get("/v1/not-in-the-policy-table", headers=bearer(tokens[role])).status_code == 403


def test_open_dev_mode_without_admin_token(store: Store) -> None:
    c = TestClient(create_app(make_ctx(store, admin_token=None)))
    assert c.get("/v1/usage", params=WINDOW).status_code == 200
    assert c.get("/v1/admin/tokens").status_code == 200


def _numbers(doc: Any) -> Iterator[float]:
    if isinstance(doc, bool):
        return
    if isinstance(doc, int | float):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _numbers(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _numbers(v)


def _others_numbers() -> set[float]:
    """Every per-day, per-window, tokens and cost total of someone other than e1."""
    mine = {101 * n for n in range(31)} | {101 * n * 1000 / 1e9 for n in range(31)}
    out: set[float] = set()
    for user, (_, tokens, days, _) in USERS.items():
        if user != E1:
            for n in range(1, len(days) + 1):
                out |= {tokens * n, tokens * n * 1000, tokens * n * 1000 / 1e9}
    return out - mine


def test_self_cannot_learn_anyone_elses_numbers(client: TestClient, tokens: dict[str, str]) -> None:
    others = _others_numbers()
    probes: list[tuple[str, dict[str, Any]]] = [
        ("/v1/usage", {**WINDOW, **extra}) for extra in (
            {}, {"group_by": "user"}, {"group_by": ["org", "model", "client"]}, {"org_id": "acme"},
            {"org_id": "globex"}, {"org_id": "acme/eng", "group_by": "user"}, {"model": "model-0"},
            {"granularity": "hour"}, {"user_id": "user-e2@acme"}, {"user_id": ""}, {"user_id": [E1, "user-e2@acme"]},
        )
    ] + [("/v1/leaderboard", {"window": w, "metric": m, "to": "2026-01-31T00:00:00Z", **extra})
         for w in ("7d", "30d") for m in ("tokens", "cost", "active_days", "tokens_per_active_day")
         for extra in ({}, {"org_id": "acme"}, {"org_id": "globex"})]
    for path in ("/v1/pipeline", "/v1/audit", "/v1/admin/tokens", "/v1/users/user-e2@acme/risk",
                 "/v1/alerts", "/metrics"):
        probes.append((path, {}))
    answered = 0
    for path, params in probes:
        r = client.get(path, params=params, headers=bearer(tokens["self"]))
        if r.status_code != 200:
            assert r.status_code in (400, 403, 404), (path, params, r.text)
            continue
        answered += 1
        if path == "/metrics":
            continue  # deployment-wide counters, no person's numbers
        leaked = set(_numbers(r.json())) & others
        assert not leaked, (path, params, leaked)
        text = r.text
        assert not any(u in text for u in USERS if u != E1), (path, params)
    assert answered >= 20
    # and what it sees is exactly its own usage
    r = client.get("/v1/usage", params={**WINDOW, "group_by": "user"}, headers=bearer(tokens["self"]))
    series = r.json()["series"]
    assert [s["key"] for s in series] == [{"user_id": E1}]
    assert sum(p["total_tokens"] for p in series[0]["points"]) == 101 * 30


def test_org_viewer_sees_only_its_subtree_with_k_anonymity(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/v1/usage", params=WINDOW, headers=bearer(tokens["viewer"]))
    body = r.json()
    assert body["privacy"] == {"k": 5, "suppressed_points": 20}  # days 0..19: only e1, e2, e6 active
    points = body["series"][0]["points"]
    assert len(points) == 10  # days 20..29: e1..e5, e6, s1, s2
    day_25 = next(p for p in points if p["t"].startswith("2026-01-26"))
    assert day_25["total_tokens"] == 101 + 203 + 1009 + 2003 + 3001 + 50_021 + 4001 + 5003  # acme, no globex
    sales = client.get("/v1/usage", params={**WINDOW, "org_id": "acme/sales"}, headers=bearer(tokens["viewer"]))
    assert sales.json()["series"] == [] and sales.json()["privacy"]["suppressed_points"] == 5  # 2 users < k
    by_model = client.get("/v1/usage", params={**WINDOW, "group_by": "model"}, headers=bearer(tokens["viewer"]))
    for s in by_model.json()["series"]:
        assert s["key"]["model"] == "model-0"  # models 1..4: only e1 used them
    admin = client.get("/v1/usage", params={**WINDOW, "org_id": "acme/sales"}, headers=bearer(ROOT)).json()
    assert "privacy" not in admin and len(admin["series"][0]["points"]) == 5


def test_granted_viewer_reads_per_person_rows_in_its_subtree(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/v1/usage", params={**WINDOW, "group_by": "user"}, headers=bearer(tokens["granted"]))
    users = {s["key"]["user_id"] for s in r.json()["series"]}
    assert users == {u for u, spec in USERS.items() if spec[0] == "acme/eng"}
    r = client.get("/v1/usage", params={**WINDOW, "user_id": "user-s1@acme"}, headers=bearer(tokens["granted"]))
    assert r.json()["series"] == []  # s1 is in acme/sales, outside acme/eng


def test_leaderboard_privacy_badges_and_bots(client: TestClient, tokens: dict[str, str]) -> None:
    params = {"window": "30d", "to": "2026-01-31T00:00:00Z"}
    admin = client.get("/v1/leaderboard", params=params, headers=bearer(ROOT)).json()
    ranked = [e["user_id"] for e in admin["entries"]]
    assert BOT not in ranked and len(ranked) == 8
    assert ranked[0] == "user-g1@globex" and admin["entries"][0]["tokens"] == 6007 * 5
    badges = {e["user_id"]: e["badges"] for e in admin["entries"]}
    assert badges["user-g1@globex"] == ["Token Legend"]
    assert badges[E1] == ["Model Connoisseur", "Steady"] and badges["user-e2@acme"] == ["Steady"]
    viewer = client.get("/v1/leaderboard", params=params, headers=bearer(tokens["viewer"])).json()
    assert viewer["org_id"] == "acme" and viewer["ranked_users"] == 7
    assert viewer["entries"][0]["badges"] == ["Token Legend"]  # e5 leads acme once g1 and the bot are out
    for e in viewer["entries"]:
        assert set(e) == {"rank", "name", "pseudonymous", "band", "badges"}
    mine = client.get("/v1/leaderboard", params=params, headers=bearer(tokens["self"])).json()
    assert mine["you"]["ranked"] and mine["you"]["user_id"] == E1 and mine["you"]["tokens"] == 3030
    assert mine["you"]["rank"] == 8 and mine["you"]["band"] == "bottom 50%" and mine["you"]["of"] == 8
    small = client.get("/v1/leaderboard", params={**params, "org_id": "acme/sales"},
                       headers=bearer(tokens["viewer"])).json()
    assert small["entries"] == [] and small["privacy"]["suppressed"]


def test_display_name_opt_in_and_stable_pseudonyms(client: TestClient, tokens: dict[str, str]) -> None:
    params = {"window": "30d", "to": "2026-01-31T00:00:00Z"}
    first = client.get("/v1/leaderboard", params=params, headers=bearer(tokens["viewer"])).json()["entries"]
    again = client.get("/v1/leaderboard", params=params, headers=bearer(tokens["viewer"])).json()["entries"]
    assert [e["name"] for e in first] == [e["name"] for e in again]
    r = client.put(f"/v1/users/{E1}/display-name", json={"display_name": "Eve One"}, headers=bearer(tokens["self"]))
    assert r.status_code == 200 and r.json() == {"user_id": E1, "display_name": "Eve One"}
    names = [e["name"] for e in client.get("/v1/leaderboard", params=params,
                                           headers=bearer(tokens["viewer"])).json()["entries"]]
    assert "Eve One" in names
    client.put(f"/v1/users/{E1}/display-name", json={"display_name": None}, headers=bearer(tokens["self"]))
    names = [e["name"] for e in client.get("/v1/leaderboard", params=params,
                                           headers=bearer(tokens["viewer"])).json()["entries"]]
    assert "Eve One" not in names and all(n.startswith("anon-") for n in names)
    for bad in ({"display_name": ""}, {"display_name": "x" * 65}, {"display_name": "\x07"}, {"other": 1}):
        assert client.put(f"/v1/users/{E1}/display-name", json=bad, headers=bearer(ROOT)).status_code == 422


def test_revocation_is_immediate(client: TestClient, store: Store) -> None:
    token = new_token(client, role="self", user_id=E1)
    token_id = token.split("_")[1]
    assert client.get("/v1/usage", params=WINDOW, headers=bearer(token)).status_code == 200
    other_server = TokenRepo(store, cache_s=1.0)  # another API process with its own cache
    assert other_server.authenticate(token) is not None
    assert client.delete(f"/v1/admin/tokens/{token_id}", headers=bearer(ROOT)).status_code == 200
    assert client.get("/v1/usage", params=WINDOW, headers=bearer(token)).status_code == 401
    time.sleep(1.05)
    assert other_server.authenticate(token) is None
    listed = {t["token_id"]: t for t in client.get("/v1/admin/tokens", headers=bearer(ROOT)).json()["tokens"]}
    assert listed[token_id]["revoked_at"] is not None
    assert all("token" not in t and "token_sha256" not in t for t in listed.values())


def test_tokens_are_stored_hashed(client: TestClient, store: Store) -> None:
    token = new_token(client, role="ingest")
    stored = store.query("SELECT * FROM api_tokens")
    assert token not in repr(stored) and token.split("_", 2)[2] not in repr(stored)


def test_per_person_reads_are_audited(client: TestClient, tokens: dict[str, str]) -> None:
    client.get("/v1/usage", params={**WINDOW, "group_by": "user"}, headers=bearer(tokens["granted"]))
    client.get("/v1/usage", params={**WINDOW, "group_by": "model"}, headers=bearer(tokens["viewer"]))
    entries = client.get("/v1/audit", headers=bearer(ROOT)).json()["entries"]
    granted_id = tokens["granted"].split("_")[1]
    mine = [e for e in entries if e["token_id"] == granted_id and e["endpoint"] == "/v1/usage"]
    assert mine and mine[0]["filters"]["group_by"] == "user" and mine[0]["filters"]["org_id"] == "acme/eng"
    assert mine[0]["result_size"] == 6 and mine[0]["status"] == 200 and mine[0]["role"] == "org_viewer"
    viewer_id = tokens["viewer"].split("_")[1]
    assert not [e for e in entries if e["token_id"] == viewer_id and e["filters"].get("group_by") == "model"]
    by_token = client.get("/v1/audit", params={"token_id": granted_id}, headers=bearer(ROOT)).json()["entries"]
    assert by_token and {e["token_id"] for e in by_token} == {granted_id}


@pytest.mark.parametrize("value", HOSTILE)
def test_sql_injection_strings_are_only_data(client: TestClient, store: Store, value: str) -> None:
    before = store.query("SELECT count() FROM usage_events")
    h = bearer(ROOT)
    for params in ({"user_id": value}, {"org_id": value}, {"model": value}, {"group_by": value},
                   {"granularity": value}, {"from": value}):
        r = client.get("/v1/usage", params={**WINDOW, **params}, headers=h)
        assert r.status_code in (200, 400, 422), r.text
        if r.status_code == 200:
            assert r.json()["series"] == []
    for params in ({"org_id": value}, {"window": value}, {"metric": value}, {"to": value}):
        assert client.get("/v1/leaderboard", params=params, headers=h).status_code in (200, 400, 422)
    assert client.get("/v1/audit", params={"token_id": value}, headers=h).status_code in (200, 422)
    segment = quote(value, safe="")
    assert client.delete(f"/v1/admin/tokens/{segment}", headers=h).status_code in (404, 422)
    assert client.put(f"/v1/users/{segment}/display-name", json={"display_name": value[:64]},
                      headers=h).status_code in (200, 422)
    if value.isprintable() and value.isascii():  # else not a valid header value at all
        assert client.get("/v1/usage", params=WINDOW, headers=bearer(value)).status_code == 401
    assert store.query("SELECT count() FROM usage_events") == before


def test_bad_input_gets_clear_4xx(client: TestClient) -> None:
    h = bearer(ROOT)
    cases = [
        ("GET", "/v1/leaderboard", {"params": {"limit": 10**12}}, 422),
        ("GET", "/v1/audit", {"params": {"limit": 10**6}}, 422),
        ("GET", "/v1/usage", {"params": {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}}, 400),
        ("GET", "/v1/usage", {"params": {"from": "yesterday"}}, 400),
        ("GET", "/v1/usage", {"params": {"from": "2026-01-01T00:00:00"}}, 400),
        ("GET", "/v1/audit", {"params": {"since": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}}, 400),
        ("GET", "/v1/usage", {"params": {"limit": 5}}, 400),
        ("GET", "/v1/leaderboard", {"params": {"user_id": E1}}, 400),
        ("POST", "/v1/events", {"content": b"x" * (5 * 1024 * 1024 + 1)}, 413),
        ("POST", "/v1/admin/tokens", {"content": b"{" + b" " * 100_000 + b"}"}, 413),
        ("POST", "/v1/admin/tokens", {"content": iter([b"{" + b" " * 50_000] * 3)}, 413),  # chunked, no length
        ("POST", "/v1/admin/tokens", {"json": {"role": "self"}}, 400),
        ("POST", "/v1/admin/tokens", {"json": {"role": "root"}}, 422),
        ("POST", "/v1/admin/tokens", {"json": {"role": "ingest", "extra": 1}}, 422),
    ]
    for method, path, kwargs, status in cases:
        r = client.request(method, path, headers=h, **kwargs)
        assert r.status_code == status, (path, kwargs.get("params"), r.text)
        assert r.json()["detail"]
    unknown = client.get("/v1/usage", params={"limit": 5}, headers=h).json()["detail"]
    assert "unknown query parameter(s): limit" in unknown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_tokens_via_the_admin_api(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from tokentrail.cli import main

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(make_ctx(store)), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        base = ["tokens", "--url", f"http://127.0.0.1:{port}", "--token", ROOT]
        assert main([*base, "create", "--role", "org_viewer", "--org-id", "acme", "--name", "cli"]) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["token"].startswith("tt_") and created["role"] == "org_viewer"
        assert main([*base, "list"]) == 0
        assert created["token_id"] in capsys.readouterr().out
        assert main([*base, "revoke", created["token_id"]]) == 0
        assert json.loads(capsys.readouterr().out)["revoked_at"]
        assert main(["tokens", "--url", f"http://127.0.0.1:{port}", "--token", "wrong", "list"]) == 2
    finally:
        server.should_exit = True
        thread.join(10)


def test_cli_tokens_direct_on_the_store(tmp_path: Path) -> None:
    """Direct mode runs in its own process: chdb allows one data dir per process."""
    cmd = [sys.executable, "-m", "tokentrail.cli", "tokens", "--data-dir", str(tmp_path)]
    out = subprocess.run([*cmd, "create", "--role", "self", "--user-id", "u1"], capture_output=True, text=True,
                         timeout=120, check=True)
    token_id = json.loads(out.stdout)["token_id"]
    listed = subprocess.run([*cmd, "list"], capture_output=True, text=True, timeout=120, check=True)
    assert token_id in listed.stdout and "tt_" not in listed.stdout


def test_user_ids_with_a_slash_reach_the_per_user_routes(client: TestClient, tokens: dict[str, str]) -> None:
    """CONTRACT §1 allows any 1-256 characters in a user_id, '/' included."""
    user = "contractors/jane"
    risk = client.get(f"/v1/users/{quote(user, safe='')}/risk", headers=bearer(ROOT))
    assert risk.status_code == 200 and risk.json()["user_id"] == user
    assert client.get("/v1/users/contractors/jane/risk", headers=bearer(ROOT)).json()["user_id"] == user
    named = client.put(f"/v1/users/{quote(user, safe='')}/display-name", json={"display_name": "Jane"},
                       headers=bearer(ROOT))
    assert named.status_code == 200, named.text
