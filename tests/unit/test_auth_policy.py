"""The access policy as a pure function: roles, scopes and forced filters."""

from __future__ import annotations

import pytest

from api.auth.policy import POLICIES, Access, Denied, decide, policy_for
from api.auth.principal import Principal, Role, in_subtree

ADMIN = Principal("a", Role.ADMIN)
VIEWER = Principal("v", Role.ORG_VIEWER, org_id="acme")
GRANTED = Principal("g", Role.ORG_VIEWER, org_id="acme/eng", per_person=True)
ALICE = Principal("s", Role.SELF, user_id="alice")
INGEST = Principal("i", Role.INGEST)
USAGE = policy_for("GET", "/v1/usage")


def usage(p: Principal, **query: str | list[str]) -> tuple[Access, dict[str, list[str]]]:
    pairs = [(k, v) for k, vs in query.items() for v in ([vs] if isinstance(vs, str) else vs)]
    access, effective = decide(p, USAGE, pairs, {})
    out: dict[str, list[str]] = {}
    for k, v in effective:
        out.setdefault(k, []).append(v)
    return access, out


def test_unlisted_route_is_admin_only() -> None:
    policy = policy_for("GET", "/v1/something-new")
    decide(ADMIN, policy, [], {})
    for p in (VIEWER, GRANTED, ALICE, INGEST):
        with pytest.raises(Denied) as err:
            decide(p, policy, [], {})
        assert err.value.status == 403


def test_open_routes_are_listed_explicitly() -> None:
    assert {path for (_, path), pol in POLICIES.items() if pol.open} == {"/healthz", "/readyz", "/metrics"}


def test_self_is_forced_to_its_own_user() -> None:
    access, q = usage(ALICE)
    assert q["user_id"] == ["alice"] and access.user_id == "alice" and access.audited
    access, q = usage(ALICE, user_id="alice", group_by="user")
    assert q["user_id"] == ["alice"]
    for other in ("bob", "", "alice ", "ALICE"):
        with pytest.raises(Denied):
            usage(ALICE, user_id=other)


def test_repeated_filters_are_refused() -> None:
    with pytest.raises(Denied) as err:
        usage(ALICE, user_id=["alice", "bob"])
    assert err.value.status == 400
    with pytest.raises(Denied):
        usage(VIEWER, org_id=["acme", "globex"])


def test_org_viewer_is_forced_into_its_subtree() -> None:
    access, q = usage(VIEWER)
    assert q["org_id"] == ["acme"] and access.private and not access.per_person
    _, q = usage(VIEWER, org_id="acme/eng")
    assert q["org_id"] == ["acme/eng"]
    for outside in ("globex", "acmeX", "acm", "", "acme/../globex/x".replace("acme/", "x/")):
        with pytest.raises(Denied):
            usage(VIEWER, org_id=outside)


def test_org_viewer_needs_the_grant_for_per_person_rows() -> None:
    for query in ({"group_by": "user"}, {"user_id": "bob"}, {"group_by": ["model", "user"]}):
        with pytest.raises(Denied, match="per_person grant"):
            usage(VIEWER, **query)  # type: ignore[arg-type]
        access, _ = usage(GRANTED, **query)  # type: ignore[arg-type]
        assert access.per_person and not access.private and access.audited
    access, _ = usage(VIEWER, group_by="model")
    assert not access.audited


def test_org_viewer_never_reaches_per_user_endpoints() -> None:
    risk = policy_for("GET", "/v1/users/{user_id}/risk")
    with pytest.raises(Denied):
        decide(GRANTED, risk, [], {"user_id": "bob"})
    decide(ALICE, risk, [], {"user_id": "alice"})
    with pytest.raises(Denied):
        decide(ALICE, risk, [], {"user_id": "bob"})


def test_alerts_are_per_person_data() -> None:
    alerts = policy_for("GET", "/v1/alerts")
    with pytest.raises(Denied):
        decide(VIEWER, alerts, [], {})
    access, q = decide(GRANTED, alerts, [], {})
    assert ("org_id", "acme/eng") in q and access.audited


def test_ingest_may_only_post_events_and_read_pipeline_progress() -> None:
    decide(INGEST, policy_for("POST", "/v1/events"), [], {})
    decide(INGEST, policy_for("GET", "/v1/pipeline"), [], {})  # counts and lag: to wait until queryable
    allowed = {("POST", "/v1/events"), ("GET", "/v1/pipeline")}
    for method, path in POLICIES:
        if (method, path) not in allowed and not POLICIES[(method, path)].open:
            with pytest.raises(Denied):
                decide(INGEST, POLICIES[(method, path)], [], {"user_id": "x"})


def test_admin_is_not_narrowed() -> None:
    access, q = usage(ADMIN, user_id="bob", org_id="globex")
    assert q == {"user_id": ["bob"], "org_id": ["globex"]} and not access.private


def test_in_subtree() -> None:
    assert in_subtree("a", "a") and in_subtree("a/b/c", "a/b")
    assert not in_subtree("ab", "a") and not in_subtree("a", "a/b")
