"""Cost of a request from a versioned price table, in integer nano-USD.

Prices are kept as integer nano-USD per token (USD per million tokens x 1000),
so a cost is an exact integer and sums over billions of events stay exact.
The table ships in ``tokentrail/prices/<version>.json``; a deployment may
override or add models with a JSON file of the same shape (TOKENTRAIL_PRICES_FILE).
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson

from tokentrail.errors import ConfigError

DEFAULT_VERSION: Final = "2026-11"
_KINDS: Final = ("input", "output", "cache_read", "cache_write")


class ModelPrice(NamedTuple):
    """Nano-USD per token for each kind of token."""

    input: int
    output: int
    cache_read: int
    cache_write: int


def _nanos_per_token(usd_per_million: object, where: str) -> int:
    value = Decimal(str(usd_per_million)) * 1000
    if value < 0 or value != value.to_integral_value():
        raise ConfigError(f"{where}: price must be >= 0 with at most 3 decimals of USD per million")
    return int(value)


def _parse(doc: dict[str, Any], source: str) -> tuple[str, dict[str, ModelPrice]]:
    try:
        version = str(doc["version"])
        models = doc["models"]
        table = {
            model: ModelPrice(*(_nanos_per_token(p[k], f"{source}: {model}.{k}") for k in _KINDS))
            for model, p in models.items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{source}: not a price table ({exc!r})") from None
    return version, table


class PriceTable:
    """Model -> price, plus the version string recorded with every priced event."""

    def __init__(self, version: str, prices: dict[str, ModelPrice]) -> None:
        self.version = version
        self.prices = prices

    @classmethod
    def load(cls, override_file: str | None = None) -> PriceTable:
        text = resources.files("tokentrail.prices").joinpath(f"{DEFAULT_VERSION}.json").read_bytes()
        version, prices = _parse(orjson.loads(text), f"built-in {DEFAULT_VERSION}")
        if override_file:
            path = Path(override_file)
            try:
                extra_version, extra = _parse(orjson.loads(path.read_bytes()), str(path))
            except (OSError, orjson.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read price file {path}: {exc}") from None
            prices = {**prices, **extra}
            version = f"{version}+{extra_version}"
        return cls(version, prices)

    def cost_nanos(self, model: str, inp: int, out: int, cache_read: int, cache_write: int) -> int | None:
        """Exact cost in nano-USD, or None for a model the table does not know."""
        p = self.prices.get(model)
        if p is None:
            return None
        return inp * p.input + out * p.output + cache_read * p.cache_read + cache_write * p.cache_write


def apply_cost(event: dict[str, Any], table: PriceTable) -> None:
    """Fill cost_nanos / cost_source / price_version of a validated event in place.

    A cost sent by the client wins (it may know negotiated prices); otherwise
    the price table decides; an unknown model is stored with cost 0 and
    cost_source 'unpriced' so it can be found and re-priced later.
    """
    sent = event.pop("cost_usd", None)
    if sent is not None:
        event["cost_nanos"] = round(sent * 1e9)
        event["cost_source"] = "event"
        event["price_version"] = ""
        return
    nanos = table.cost_nanos(
        event["model"],
        event["input_tokens"],
        event["output_tokens"],
        event["cache_read_tokens"],
        event["cache_write_tokens"],
    )
    event["cost_nanos"] = nanos or 0
    event["cost_source"] = "unpriced" if nanos is None else "price_table"
    event["price_version"] = "" if nanos is None else table.version
