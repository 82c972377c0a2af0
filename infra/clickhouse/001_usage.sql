-- 001_usage: raw usage history, the dedup index and the per-org roll-ups.
-- Applied once by tokentrail/store/migrations.py; every statement is
-- IF NOT EXISTS so a half-applied file can simply be re-run.

-- Raw history: one row per distinct event (the sink drops re-sent ids).
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id           String,
    ts                 DateTime64(3, 'UTC'),
    user_id            String,
    org_id             String,
    model              LowCardinality(String),
    provider           LowCardinality(String),
    client             LowCardinality(String),
    session_id         String,
    input_tokens       UInt32,
    output_tokens      UInt32,
    cache_read_tokens  UInt32,
    cache_write_tokens UInt32,
    total_tokens       UInt64,
    -- nano-USD as an integer so sums over millions of events stay exact
    cost_nanos         UInt64,
    -- 'event' | 'price_table' | 'unpriced'
    cost_source        LowCardinality(String),
    price_version      LowCardinality(String),
    latency_ms         Nullable(UInt32),
    prompt_hash        String,
    -- free-form JSON text; never filtered on in SQL
    metadata           String,
    ingested_at        DateTime64(3, 'UTC')
)
ENGINE = MergeTree
-- Monthly partitions: retention drops whole months, and a time-range query
-- prunes every month outside its window without reading an index.
PARTITION BY toYYYYMM(ts)
-- Drill-downs always name an org, then usually a user, then a time window,
-- so this order lets the primary index skip everything else.
ORDER BY (org_id, user_id, ts);

-- Dedup index: the sink asks "which of these ids do we already have?".
CREATE TABLE IF NOT EXISTS event_ids
(
    event_id String,
    ts       DateTime64(3, 'UTC')
)
ENGINE = MergeTree
-- Point lookups by id (event_id IN [...]) are the only access path.
ORDER BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS
SELECT event_id, ts FROM usage_events;

-- Roll-ups. Each event is counted once under every prefix of its org path
-- ('a/b/c' -> 'a', 'a/b', 'a/b/c'), so org_prefix = 'a' reads a's whole
-- subtree and org_depth = 1 counts every event exactly once.
-- The explicit column list tells SummingMergeTree what to add up: without it
-- org_depth (numeric, not in the key) would be summed too.
CREATE TABLE IF NOT EXISTS usage_minute
(
    org_prefix         String,
    org_depth          UInt8,
    org_id             String,
    user_id            String,
    model              LowCardinality(String),
    client             LowCardinality(String),
    t                  DateTime('UTC'),
    requests           UInt64,
    input_tokens       UInt64,
    output_tokens      UInt64,
    cache_read_tokens  UInt64,
    cache_write_tokens UInt64,
    total_tokens       UInt64,
    cost_nanos         UInt64
)
ENGINE = SummingMergeTree((requests, input_tokens, output_tokens, cache_read_tokens,
                           cache_write_tokens, total_tokens, cost_nanos))
-- Monthly partitions so retention of minute data can drop months cheaply.
PARTITION BY toYYYYMM(t)
-- Dashboards filter by org prefix then a time window; the remaining columns
-- complete the key SummingMergeTree collapses rows on.
ORDER BY (org_prefix, t, user_id, model, client, org_id);

CREATE TABLE IF NOT EXISTS usage_hour
(
    org_prefix         String,
    org_depth          UInt8,
    org_id             String,
    user_id            String,
    model              LowCardinality(String),
    client             LowCardinality(String),
    t                  DateTime('UTC'),
    requests           UInt64,
    input_tokens       UInt64,
    output_tokens      UInt64,
    cache_read_tokens  UInt64,
    cache_write_tokens UInt64,
    total_tokens       UInt64,
    cost_nanos         UInt64
)
ENGINE = SummingMergeTree((requests, input_tokens, output_tokens, cache_read_tokens,
                           cache_write_tokens, total_tokens, cost_nanos))
-- Same reasoning as usage_minute: month pruning and cheap retention.
PARTITION BY toYYYYMM(t)
-- Same key as usage_minute so both roll-ups answer the same queries.
ORDER BY (org_prefix, t, user_id, model, client, org_id);

-- The MVs pre-aggregate each insert block (GROUP BY) so a batch of N events
-- writes far fewer than N * depth roll-up rows; merges finish the job later,
-- which is why readers must always sum(...) GROUP BY.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS
SELECT
    arrayStringConcat(arraySlice(splitByChar('/', org_id), 1, depth), '/') AS org_prefix,
    toUInt8(depth) AS org_depth,
    org_id,
    user_id,
    model,
    client,
    toStartOfMinute(toDateTime(ts, 'UTC')) AS t,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(total_tokens) AS total_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
ARRAY JOIN arrayEnumerate(splitByChar('/', org_id)) AS depth
GROUP BY org_prefix, org_depth, org_id, user_id, model, client, t;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hour_mv TO usage_hour AS
SELECT
    arrayStringConcat(arraySlice(splitByChar('/', org_id), 1, depth), '/') AS org_prefix,
    toUInt8(depth) AS org_depth,
    org_id,
    user_id,
    model,
    client,
    toStartOfHour(toDateTime(ts, 'UTC')) AS t,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(total_tokens) AS total_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
ARRAY JOIN arrayEnumerate(splitByChar('/', org_id)) AS depth
GROUP BY org_prefix, org_depth, org_id, user_id, model, client, t;
