"""The shapes every limit store shares: a limit (GCRA rate or budget counter), a store's
decision, and GCRA's one step and its "units left" (used by the stores and the leases)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["WINDOWS", "Decision", "Limit", "LimitName", "gcra", "remaining_units"]

# budget_tokens and budget_cost (nano-USD) are a caller's counters for a fixed period.
LimitName = Literal["requests", "tokens", "tokens_day", "budget_tokens", "budget_cost"]
WINDOWS: dict[LimitName, float] = {"requests": 60.0, "tokens": 60.0, "tokens_day": 86400.0}


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # store key, e.g. "provider:openai:tokens"
    name: LimitName
    amount: int
    window_s: float
    # Counters (budgets) only: wall-clock end of their period (0: never, a "total" budget),
    # whose description goes into messages ("max_tokens per day", ...).
    resets_at: float = 0.0
    owner: str = ""  # whose limit, for messages: "key 'ci'" (empty: the provider's)
    label: str = ""
    # GCRA limits: the reserve script's "kind interval window" for this limit, made once
    # (formatting them was a measurable part of every reservation).
    gcra_args: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not self.counter and self.amount > 0:
            object.__setattr__(self, "gcra_args",
                               f"0 {self.interval * 1000!r} {self.window_s * 1000!r}")

    @property
    def interval(self) -> float:
        return self.window_s / self.amount

    @property
    def counter(self) -> bool:
        return self.name in ("budget_tokens", "budget_cost")

    def ttl_ms(self, wall_now: float) -> int:
        """Counters: milliseconds until the period ends (0: no expiry)."""
        if not self.resets_at:
            return 0
        return max(1, math.ceil((self.resets_at - wall_now) * 1000))


@dataclass(slots=True)
class Decision:
    admitted: bool
    # Per limit, after the decision: units left now and seconds until fully replenished.
    remaining: list[int] = field(default_factory=list)
    reset_s: list[float] = field(default_factory=list)
    denied_index: int = -1
    retry_after_s: float = 0.0


def gcra(tat: float, now: float, limit: Limit, cost: int) -> tuple[bool, float, float]:
    """(admitted, new tat, retry after) for one limit."""
    base = max(tat, now)
    new_tat = base + cost * limit.interval
    allow_at = new_tat - limit.window_s
    if allow_at <= now:
        return True, new_tat, 0.0
    return False, tat, allow_at - now


def remaining_units(ahead: float, limit: Limit) -> int:
    """Units still free when the TAT is ``ahead`` seconds in the future."""
    left = int((limit.window_s - max(0.0, ahead)) / limit.interval + 1e-9)
    return max(0, min(limit.amount, left))
