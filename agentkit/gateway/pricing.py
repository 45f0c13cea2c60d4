"""Model prices: tokens -> US dollars.

Runs on both sides: inside the gateway container (standard library only) and in the controller
(the outer agent's own usage). Prices are US dollars per million tokens, by model-name prefix;
the longest matching prefix wins, then the family word (``opus``/``sonnet``/``haiku``), then the
``*`` entry. ``AGENTKIT_PRICING`` (a JSON object of the same shape) adds or replaces entries::

    {"claude-sonnet-5": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}

``cache_write`` is the 5-minute cache write price (1.25 x input by default), ``cache_write_1h``
the 1-hour one (2 x input) and ``cache_read`` the cache hit price (0.1 x input by default) when
an entry leaves them out. A web search (server-side tool, when the gateway allows those) costs
:data:`WEB_SEARCH_USD` on top of its tokens. The table is a snapshot of the public list prices;
check it against your invoice and override what differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_PRICES",
    "WEB_SEARCH_USD",
    "Price",
    "PriceTable",
    "TokenCounts",
    "parse_overrides",
]

#: US dollars per web search the model API runs (server-side tool: $10 per 1,000)
WEB_SEARCH_USD = 0.01
_PRICE_KEYS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Token usage of one or more requests (the four kinds the Messages API reports), plus
    what prices them beyond those: the part of the cache writes that is 1-hour writes
    (``usage.cache_creation.ephemeral_1h_input_tokens``) and the web searches run
    (``usage.server_tool_use.web_search_requests``). Those two are priced, not stored."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_creation_1h_input_tokens + other.cache_creation_1h_input_tokens,
            self.web_search_requests + other.web_search_requests,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TokenCounts:
        def num(key: str, within: Mapping[str, Any] = data) -> int:
            value = within.get(key)
            return int(value) if isinstance(value, int | float) and value > 0 else 0

        def part(key: str) -> Mapping[str, Any]:
            value = data.get(key)
            return value if isinstance(value, Mapping) else {}

        written = num("cache_creation_input_tokens")
        return cls(
            num("input_tokens"),
            num("output_tokens"),
            num("cache_read_input_tokens"),
            written,
            min(num("ephemeral_1h_input_tokens", part("cache_creation")), written),
            num("web_search_requests", part("server_tool_use")),
        )


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    cache_write_1h: float = 0.0

    @classmethod
    def of(cls, input: float, output: float, **extra: float) -> Price:
        return cls(
            float(input),
            float(output),
            float(extra.get("cache_write", input * 1.25)),
            float(extra.get("cache_read", input * 0.1)),
            float(extra.get("cache_write_1h", input * 2)),
        )

    def cost(self, tokens: TokenCounts) -> float:
        hour = tokens.cache_creation_1h_input_tokens
        total = (
            tokens.input_tokens * self.input
            + tokens.output_tokens * self.output
            + (tokens.cache_creation_input_tokens - hour) * self.cache_write
            + hour * self.cache_write_1h
            + tokens.cache_read_input_tokens * self.cache_read
        )
        return total / 1_000_000 + tokens.web_search_requests * WEB_SEARCH_USD


#: The built-in table (USD per million tokens), by model-name prefix or family word.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-0": Price.of(15, 75),
    "claude-opus-4-1": Price.of(15, 75),
    "claude-opus-4-2025": Price.of(15, 75),
    "claude-3-opus": Price.of(15, 75),
    "claude-3-5-haiku": Price.of(0.8, 4),
    "claude-3-haiku": Price.of(0.25, 1.25),
    "opus": Price.of(5, 25),
    "sonnet": Price.of(3, 15),
    "haiku": Price.of(1, 5),
    "*": Price.of(3, 15),
}

_FAMILIES = ("opus", "sonnet", "haiku")


def parse_overrides(text: str | None) -> dict[str, Price]:
    """``AGENTKIT_PRICING`` JSON -> prices; raises ``ValueError`` with what is wrong."""
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"AGENTKIT_PRICING is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('AGENTKIT_PRICING must be a JSON object {"model-prefix": {...}}')
    out: dict[str, Price] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise ValueError(
                f"AGENTKIT_PRICING[{name!r}] needs at least input and output (USD per million)"
            )
        for key in _PRICE_KEYS:
            value = entry.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"AGENTKIT_PRICING[{name!r}].{key} must be a number >= 0")
        values = {k: float(v) for k, v in entry.items() if k in _PRICE_KEYS[2:]}
        out[str(name)] = Price.of(entry["input"], entry["output"], **values)
    return out


class PriceTable:
    """The built-in prices with overrides; :meth:`cost` prices a request."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = {**DEFAULT_PRICES, **(overrides or {})}

    def price(self, model: str) -> Price:
        name = (model or "").lower()
        prefixes = [p for p in self.prices if p not in (*_FAMILIES, "*") and name.startswith(p)]
        if prefixes:
            return self.prices[max(prefixes, key=len)]
        for family in _FAMILIES:
            if family in name and family in self.prices:
                return self.prices[family]
        return self.prices["*"]

    def cost(self, model: str, tokens: TokenCounts) -> float:
        return self.price(model).cost(tokens)
