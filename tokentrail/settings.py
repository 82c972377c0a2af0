"""Every setting in one typed place, read once from TOKENTRAIL_* env vars.

CLI flags override by passing keyword arguments to ``Settings(...)``; child
processes started by ``tokentrail up`` receive their settings through the
same environment variables, so every process of a deployment agrees.
"""

from __future__ import annotations

from pathlib import Path

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

    prices_file: str | None = None
    log_level: str = "INFO"

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
