"""One root exception for TokenTrail; each failure kind is a subclass."""


class TokenTrailError(Exception):
    """Root of every error TokenTrail raises on purpose."""


class EventError(TokenTrailError, ValueError):
    """A usage event breaks a rule of the v1 schema (CONTRACT.md §1)."""

    def __init__(self, field: str | None, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"field '{field}': {rule}" if field else rule)


class ConfigError(TokenTrailError):
    """A setting is missing or invalid."""


class BrokerUnavailable(TokenTrailError):
    """The Kafka broker did not answer or did not acknowledge in time."""
