-- 002_access: API tokens, leaderboard display names, bot scores and the audit
-- log (docs/access.md). Every statement is IF NOT EXISTS (see 001_usage.sql).

-- API tokens. A token is `tt_<token_id>_<secret>`; only sha256(token) is kept.
-- Revoking writes a newer version of the row with revoked_at set, so readers
-- use FINAL (the table is tiny: one row per token and version).
CREATE TABLE IF NOT EXISTS api_tokens
(
    token_id     String,
    token_sha256 String,
    -- 'admin' | 'org_viewer' | 'self' | 'ingest'
    role         LowCardinality(String),
    -- scope: the org subtree of an org_viewer, the user of a self token ('' = none)
    org_id       String,
    user_id      String,
    -- org_viewer only: may read per-person rows inside its subtree
    per_person   UInt8,
    name         String,
    created_at   DateTime64(3, 'UTC'),
    revoked_at   Nullable(DateTime64(3, 'UTC')),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
-- Point lookups by token id are the only hot access path.
ORDER BY token_id;

-- Leaderboard display names: a user opts in by setting one, out by clearing it.
CREATE TABLE IF NOT EXISTS user_display_names
(
    user_id      String,
    display_name String,
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
-- The latest row per user wins (readers use FINAL).
ORDER BY user_id;

-- Suspected bots, filled by detection; leaderboards exclude bot_score >= 0.5.
CREATE TABLE IF NOT EXISTS user_risk
(
    user_id    String,
    bot_score  Float64,
    reasons    Array(String),
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
-- One current score per user (readers use FINAL).
ORDER BY user_id;

-- Who read per-person data: written in batches by api/auth/audit.py.
CREATE TABLE IF NOT EXISTS audit_log
(
    at          DateTime64(3, 'UTC'),
    token_id    String,
    role        LowCardinality(String),
    method      LowCardinality(String),
    endpoint    String,
    -- the effective filters (after scope enforcement) as JSON text
    filters     String,
    status      UInt16,
    result_size UInt32
)
ENGINE = MergeTree
-- Monthly partitions: retention drops whole months.
PARTITION BY toYYYYMM(at)
-- Reviews ask "what happened in this window", then "what did this token do".
ORDER BY (at, token_id);
