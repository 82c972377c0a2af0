"""Versioned DDL: `infra/clickhouse/NNN_name.sql`, applied in order, each once.

The ledger is the `schema_migrations` table. A file is recorded only after all
its statements succeed; since every statement is `IF NOT EXISTS`, a file that
failed halfway is simply re-run next time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tokentrail.store.base import StoreError

if TYPE_CHECKING:
    from tokentrail.store.base import Store

DDL_DIR_ENV = "TOKENTRAIL_DDL_DIR"
_FILE_RE = re.compile(r"^(\d{3})_\w+\.sql$")
_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


def ddl_dir() -> Path:
    """`$TOKENTRAIL_DDL_DIR`, else `<repo root>/infra/clickhouse`."""
    override = os.environ.get(DDL_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "infra" / "clickhouse"


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """Every `.sql` file as (version, path), sorted; misnamed or duplicate versions fail."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise StoreError(f"migration {path} is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"migrations {found[version].name} and {path.name} share a version")
        found[version] = path
    return sorted(found.items())


def apply_migrations(store: Store, directory: Path | None = None) -> list[str]:
    """Apply pending files in version order; return the names applied now."""
    store.command(_LEDGER_DDL)
    done = {row[0] for row in store.query("SELECT version FROM schema_migrations")}
    applied: list[str] = []
    for version, path in migration_files(directory or ddl_dir()):
        if version in done:
            continue
        for statement in split_statements(path.read_text(encoding="utf-8")):
            store.command(statement)
        store.insert("schema_migrations", ["version", "name"], [[version, path.name]])
        applied.append(path.name)
    return applied


def split_statements(text: str) -> list[str]:
    """Split SQL on top-level `;`, ignoring ones inside quotes or comments.

    Comments are dropped: they are for readers of the file, not the server.
    """
    statements: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        elif text[i] in "'\"`":
            end = _quoted_end(text, i)
            current.append(text[i:end])
            i = end
        elif text[i] == ";":
            statements.append("".join(current))
            current, i = [], i + 1
        else:
            current.append(text[i])
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted token opening at `start` (handles \\x and doubled quotes)."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" or text.startswith(quote * 2, i):
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    return len(text)
