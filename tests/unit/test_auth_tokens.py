"""Token format, spec rules, pseudonyms, k-anonymity and ranking (no I/O)."""

from __future__ import annotations

import pytest

from api.auth import ranking
from api.auth.privacy import pseudonym, pseudonym_key, suppress_small_groups
from api.auth.tokens import TokenSpecError, check_spec, digest, parse
from tokentrail.settings import Settings


def test_token_format() -> None:
    token = "tt_0123456789abcdef_" + "A" * 43
    assert parse(token) == "0123456789abcdef"
    for bad in ("", "tt_", token + "x", token.replace("tt_", "xx_"), "tt_0123_" + "A" * 43, "Bearer " + token):
        assert parse(bad) is None
    assert digest(token) != digest(token + " ") and len(digest(token)) == 64


@pytest.mark.parametrize(("role", "org", "user", "grant"), [
    ("root", None, None, False), ("org_viewer", None, None, False), ("self", None, None, False),
    ("admin", "acme", None, False), ("ingest", None, "bob", False), ("self", None, "bob", True),
    ("org_viewer", "acme", "bob", False),
])
def test_bad_specs(role: str, org: str | None, user: str | None, grant: bool) -> None:
    with pytest.raises(TokenSpecError):
        check_spec(role, org, user, grant)


def test_good_specs() -> None:
    assert check_spec("org_viewer", "acme", None, True).value == "org_viewer"
    assert check_spec("self", None, "bob", False).value == "self"
    assert check_spec("self", "acme", "bob", False).value == "self"


def test_pseudonyms_are_stable_and_keyed() -> None:
    a = pseudonym_key(Settings(pseudonym_secret="s1"))
    b = pseudonym_key(Settings(pseudonym_secret="s2"))
    assert pseudonym(a, "bob") == pseudonym(a, "bob") != pseudonym(b, "bob")
    assert pseudonym(a, "bob") != pseudonym(a, "bob2") and "bob" not in pseudonym(a, "bob")
    assert pseudonym_key(Settings(admin_token="x")) != pseudonym_key(Settings(admin_token="y"))


def test_k_anonymity_drops_small_points() -> None:
    rows = [("t1", "m", 1, 4), ("t2", "m", 2, 5), ("t3", "m", 3, 6)]
    kept, hidden = suppress_small_groups(rows, 5)
    assert kept == [("t2", "m", 2), ("t3", "m", 3)] and hidden == 1


def test_ranking_bands_and_badges() -> None:
    # user, tokens, cost, active days (window), models, active days (30 d)
    rows = [(f"u{i}", 100 * i, i, i % 7 + 1, 1, 10) for i in range(1, 201)]
    rows.append(("steady", 5, 5, 25, 6, 25))
    ranked = ranking.rank(rows, "tokens")
    assert [r.user_id for _, r in ranked[:2]] == ["u200", "u199"]
    legends = [r.user_id for _, r in ranked if "Token Legend" in r.badges]
    assert legends == ["u200", "u199", "u198"]  # ceil(1% of 201) = 3
    steady = next(r for _, r in ranked if r.user_id == "steady")
    assert steady.badges == ["Model Connoisseur", "Steady"]
    assert ranking.band(1, 201) == "top 1%" and ranking.band(201, 201) == "bottom 50%"
    assert ranking.band(50, 201) == "top 25%"


def test_ties_share_a_rank() -> None:
    ranked = ranking.rank([("a", 10, 0, 1, 1, 1), ("b", 10, 0, 1, 1, 1), ("c", 5, 0, 1, 1, 1)], "tokens")
    assert [pos for pos, _ in ranked] == [1, 1, 3]
