"""Every setting in one typed place, read once from TOKENTRAIL_* env vars.

CLI flags override by passing keyword arguments to ``Settings(...)``; child
processes started by ``tokentrail up`` receive their settings through the
same environment variables, so every process of a deployment agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENTRAIL_", extra="ignore")

    # Where things are. Unset bootstrap/url mean "use the embedded parts".
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset = embedded Tansu")
    clickhouse_url: str | None = Field(None, description="ClickHouse server URL; unset = embedded chdb")
    data_dir: Path = Field(Path("tokentrail-data"), description="embedded store data (chdb) directory")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    broker_port: int = Field(0, ge=0, le=65535, description="embedded broker port; 0 = pick a free one")
    admin_token: str | None = None

    # Topics.
    usage_topic: str = "tokentrail.usage"
    dead_letter_topic: str = "tokentrail.dead-letter"
    stats_topic: str = "tokentrail.stats"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)

    # Stream processing (event time).
    app_id: str = "tokentrail"
    window_retention_hours: int = Field(26, ge=1, description="live minute windows kept, event time")
    session_timeout_ms: int = Field(10_000, ge=1000)
    stats_interval_s: float = Field(2.0, gt=0)
    processor_batch_messages: int = Field(200, ge=1, description="envelopes taken per processor batch")
    processor_batch_s: float = Field(0.5, gt=0, description="longest wait to fill a processor batch")
    org_batch_s: float = Field(0.02, gt=0, description="longest wait to fill an org-windows batch")
    fetch_max_wait_ms: int = Field(100, ge=1, le=1500,
                                   description="longest a Faust stage's fetch waits for data on the broker")
    gil_switch_interval_ms: float = Field(0.5, gt=0, le=100,
                                          description="a Faust stage's thread switch interval (sys.setswitchinterval)")

    # Sink.
    sink_group: str = "tokentrail-sink"
    sink_batch_events: int = Field(50_000, ge=1)
    sink_flush_s: float = Field(0.5, gt=0)

    # Ingest.
    max_body_bytes: int = 5 * 1024 * 1024
    max_events_per_request: int = 10_000
    produce_timeout_s: float = Field(10.0, gt=0)

    # Access control and privacy (docs/access.md).
    k_anonymity: int = Field(5, ge=1, description="non-admin aggregates cover at least this many distinct users")
    pseudonym_secret: str | None = Field(None, description="HMAC key of leaderboard pseudonyms; "
                                                           "unset = derived from admin_token")
    token_cache_s: float = Field(1.0, ge=0, le=1.0, description="how long a token lookup is cached (revocation lag)")
    audit_flush_s: float = Field(1.0, gt=0, description="audit log buffer flush interval")
    audit_flush_rows: int = Field(1000, ge=1, description="audit log buffer flushes at this many rows")

    # Detection and alerts (README "Detection and alerts").
    detection: bool = Field(True, description="run the detector stage in `tokentrail up` (0 = off)")
    alerts_topic: str = "tokentrail.alerts"
    risk_topic: str = "tokentrail.risk"
    detector_recent_ids: int = Field(256, ge=0, le=65_535, description="event-id hashes kept per user to skip "
                                                                        "re-sent events")
    detector_batch_messages: int = Field(1000, ge=1, description="envelopes taken per detector batch")
    detector_batch_s: float = Field(2.0, gt=0, description="longest wait to fill a detector batch; each "
                                                           "touched user's state is written once per batch")
    detector_nice: int = Field(10, ge=0, le=19, description="CPU niceness of the detector: under contention, "
                                                            "usage stays fresh and detection lags")
    risk_min_change: float = Field(0.05, gt=0, le=1, description="bot_score change that publishes a risk update")
    alert_sink_group: str = "tokentrail-alert-sink"
    webhook_urls: str = Field("", description="comma-separated URLs that receive every alert (POST)")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key of X-TokenTrail-Signature")
    webhook_format: Literal["json", "slack"] = "json"
    webhook_group: str = "tokentrail-webhooks"
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(6, ge=1, le=20, description="tries per alert and URL (back-off doubles)")
    webhook_backoff_s: float = Field(0.5, gt=0, description="first retry delay")

    # Budget alerts (README "Budgets"): checked against the history store.
    budgets_file: str | None = Field(None, description="JSON file of budgets (org/user, day/month, limit_usd)")
    budget_check_s: float = Field(30.0, gt=0, description="seconds between budget checks")
    budget_lookback_days: int = Field(62, ge=1, le=3660, description="periods this far back are checked")

    prices_file: str | None = None
    log_level: str = "INFO"

    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def env(self) -> dict[str, str]:
        """These settings as TOKENTRAIL_* variables, for child processes."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                out[f"TOKENTRAIL_{name.upper()}"] = str(value)
        return out
