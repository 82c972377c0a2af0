-- 003_alerts: alerts raised by the detector stage (README "Detection and alerts").
-- Bot scores go to user_risk (002_access.sql). Every statement is IF NOT EXISTS.

-- One row per alert. Alert ids are a hash of (user, kind, event-time window
-- start): a replay of the same events re-sends the same ids, and a later alert
-- of the same window (it grew: a later window_end, a new score) is an update
-- of the same alert. Versions are ordered by window_end (event time, so a
-- replay converges on the same row); the sink keeps detected_at of the first
-- detection on every version, and readers GROUP BY alert_id taking the latest
-- version, so copies not merged yet never show twice.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id     String,
    user_id      String,
    org_id       String,
    -- 'tokenmaxxing' | 'spike' | 'budget' (CONTRACT.md §3; more may be added)
    kind         LowCardinality(String),
    -- 'low' | 'medium' | 'high'
    severity     LowCardinality(String),
    score        Float64,
    -- event time: the behaviour the alert is about
    window_start DateTime64(3, 'UTC'),
    window_end   DateTime64(3, 'UTC'),
    -- wall time: when the detector raised it
    detected_at  DateTime64(3, 'UTC'),
    reasons      Array(String)
)
ENGINE = ReplacingMergeTree(window_end)
-- The key is the identity: copies of a replayed alert collapse into one.
-- Alerts are few (at most one per user and kind per six hours of event
-- time), so reads that filter by user or org scan the table cheaply.
ORDER BY alert_id;
