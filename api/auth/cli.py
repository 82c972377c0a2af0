"""`tokentrail tokens create|list|revoke`.

With a server (`--url`, or the one a running `tokentrail up` advertises) the
command calls the admin API with the admin token. Without one it opens the
store directly, which for embedded chdb only works while no `serve` process
owns the data dir (the store says so clearly when one does).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tokentrail.errors import TokenTrailError
from tokentrail.settings import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or _running_url(settings)
    result = _via_http(args, url, args.token or settings.admin_token) if url else _direct(args, settings)
    print(json.dumps(result, indent=2))
    if args.action == "create":
        print("the token is shown only now; store it safely", file=sys.stderr)
    return 0


def _running_url(settings: Settings) -> str | None:
    from tokentrail.runtime.up import runtime_file

    path = runtime_file(settings)
    return str(json.loads(path.read_bytes())["url"]) if path.exists() else None


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    return {"role": args.role, "org_id": args.org_id, "user_id": args.user_id, "per_person": args.per_person,
            "name": args.name}


def _via_http(args: argparse.Namespace, url: str, token: str | None) -> Any:
    base = url.rstrip("/") + "/v1/admin/tokens"
    if args.action == "create":
        return _call("POST", base, token, _spec(args))
    if args.action == "revoke":
        return _call("DELETE", f"{base}/{urllib.parse.quote(args.token_id, safe='')}", token, None)
    return _call("GET", base, token, None)


def _call(method: str, url: str, token: str | None, body: dict[str, Any] | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise TokenTrailError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise TokenTrailError(f"{method} {url}: {exc.reason}") from None


def _direct(args: argparse.Namespace, settings: Settings) -> Any:
    from api.auth.tokens import TokenRepo, TokenSpecError
    from tokentrail.store import open_store

    with open_store(str(settings.data_dir / "chdb"), settings.clickhouse_url) as store:
        store.apply_migrations()
        repo = TokenRepo(store, cache_s=0)
        if args.action == "create":
            try:
                token, record = repo.create(**_spec(args))
            except TokenSpecError as exc:
                raise TokenTrailError(str(exc)) from None
            return {"token": token, **record.public()}
        if args.action == "revoke":
            revoked = repo.revoke(args.token_id)
            if revoked is None:
                raise TokenTrailError(f"no token {args.token_id!r}")
            return revoked.public()
        return {"tokens": [r.public() for r in repo.list()]}
