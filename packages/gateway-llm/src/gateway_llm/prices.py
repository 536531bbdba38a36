"""What tokens cost: USD per million input, output and cached input tokens, per alias from
the config or from a shipped table of well-known upstream models. Costs are counted in
nano-USD (integers), so budgets add up exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway_core.config import ModelConfig
from gateway_llm.hub import Usage

__all__ = ["DEFAULT_PRICES", "NANO_PER_USD", "Price", "Prices"]

NANO_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens (= micro-USD per token)."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None  # None: the input price

    def cost_nano(self, usage: Usage) -> int:
        """The cost of a reported usage, in nano-USD (cached prompt tokens at their price)."""
        cached = usage.cached_input_tokens or 0
        cached_price = self.input if self.cached_input is None else self.cached_input
        return math.ceil(1000 * ((usage.input_tokens - cached) * self.input
                                 + cached * cached_price + usage.output_tokens * self.output))

    def bound_nano(self, tokens: int) -> int:
        """The most ``tokens`` tokens can cost, whatever their kind (for reservations)."""
        return math.ceil(1000 * tokens * max(self.input, self.output))

    @property
    def free(self) -> bool:
        return self.input == 0 and self.output == 0 and not self.cached_input


# Public list prices (USD per million tokens) of well-known models, as of late 2025; an
# alias's input_/output_/cached_input_cost_per_mtok override them. Matched by the upstream
# model name, then by its longest listed prefix (dated snapshots: "gpt-4o-2024-08-06").
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.5, 10.0, 1.25),
    "gpt-4o-mini": Price(0.15, 0.6, 0.075),
    "gpt-4.1": Price(2.0, 8.0, 0.5),
    "gpt-4.1-mini": Price(0.4, 1.6, 0.1),
    "gpt-4.1-nano": Price(0.1, 0.4, 0.025),
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "gpt-5-nano": Price(0.05, 0.4, 0.005),
    "o3": Price(2.0, 8.0, 0.5),
    "o4-mini": Price(1.1, 4.4, 0.275),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "claude-opus-4": Price(15.0, 75.0, 1.5),
    "claude-opus-4-1": Price(15.0, 75.0, 1.5),
    "claude-opus-4-5": Price(5.0, 25.0, 0.5),
    "claude-sonnet-4": Price(3.0, 15.0, 0.3),
    "claude-sonnet-4-5": Price(3.0, 15.0, 0.3),
    "claude-haiku-4-5": Price(1.0, 5.0, 0.1),
    "claude-3-5-haiku": Price(0.8, 4.0, 0.08),
    "llama-3.3-70b-versatile": Price(0.59, 0.79),
    "llama-3.1-8b-instant": Price(0.05, 0.08),
}

_FREE = Price()


class Prices:
    """Price lookup for the router and the usage records: (alias, upstream model) -> Price."""

    def __init__(self, models: dict[str, ModelConfig],
                 table: dict[str, Price] | None = None) -> None:
        self.table = DEFAULT_PRICES if table is None else table
        self._by_alias: dict[str, Price] = {}
        for alias, m in models.items():
            fields = (m.input_cost_per_mtok, m.output_cost_per_mtok,
                      m.cached_input_cost_per_mtok)
            if any(f is not None for f in fields):
                base = self.of_model(m.model or alias)
                self._by_alias[alias] = Price(
                    base.input if m.input_cost_per_mtok is None else m.input_cost_per_mtok,
                    base.output if m.output_cost_per_mtok is None else m.output_cost_per_mtok,
                    base.cached_input if m.cached_input_cost_per_mtok is None
                    else m.cached_input_cost_per_mtok)
        self._cache: dict[tuple[str, str], Price] = {}

    def of_model(self, model: str) -> Price:
        found = self.table.get(model)
        if found is not None:
            return found
        best = ""
        for name in self.table:
            if model.startswith(name) and len(name) > len(best):
                best = name
        return self.table[best] if best else _FREE

    def __call__(self, alias: str, model: str) -> Price:
        key = (alias, model)
        found = self._cache.get(key)
        if found is None:
            found = self._by_alias.get(alias) or self.of_model(model)
            if len(self._cache) < 4096:  # bounded: direct "provider/model" names vary
                self._cache[key] = found
        return found
