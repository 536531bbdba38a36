"""Routing strategies for an alias with several deployments: the order in which one request
tries them (its first choice, then where its retries go), from the configured weights and
from what this process has measured of each deployment — requests in flight, recent
latency, rate-limit budget left."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from gateway_core.config import Routing

__all__ = [
    "EXPLORE",
    "LATENCY_ALPHA",
    "STRATEGIES",
    "Candidate",
    "DeploymentStats",
    "order",
]

# lowest-latency: the share of requests sent first to the deployment measured least
# recently, so that one that was slow (and so gets no traffic) is seen to recover.
EXPLORE = 0.05
# Weight of a new sample in the latency moving average (older samples decay by 1 - this).
LATENCY_ALPHA = 0.3


class DeploymentStats:
    """What routing knows of one deployment, in this process: requests in flight, a moving
    average of its latency (time to the first output of a stream, to the whole answer
    otherwise) and its rate-limit budget as the limiter last reported it."""

    __slots__ = ("_budget", "_budget_at", "_exhausted_until", "in_flight", "latency_s",
                 "measured_at")

    def __init__(self) -> None:
        self.in_flight = 0
        self.latency_s: float | None = None
        self.measured_at = -math.inf
        # (units left, amount, window_s) per limit, as of _budget_at.
        self._budget: list[tuple[int, int, float]] = []
        self._budget_at = 0.0
        self._exhausted_until = -math.inf

    def observe_latency(self, seconds: float, now: float) -> None:
        if self.latency_s is None:
            self.latency_s = seconds
        else:
            self.latency_s += LATENCY_ALPHA * (seconds - self.latency_s)
        self.measured_at = now

    def observe_budget(self, now: float, budgets: Sequence[tuple[int, int, float]]) -> None:
        """Units left, amount and window of each limit, right after an admission."""
        self._budget = list(budgets)
        self._budget_at = now
        self._exhausted_until = -math.inf

    def observe_exhausted(self, now: float, retry_after_s: float) -> None:
        """The limiter refused this deployment: nothing left for retry_after_s."""
        self._exhausted_until = now + retry_after_s

    def budget_left(self, now: float) -> float:
        """The smallest share (0..1) of any of its limits left now, counting what came back
        since the last admission; 1.0 without limits (or before any admission)."""
        if now < self._exhausted_until:
            return 0.0
        share = 1.0
        elapsed = max(0.0, now - self._budget_at)
        for left, amount, window in self._budget:
            refilled = min(amount, left + elapsed * amount / window)
            share = min(share, refilled / amount)
        return share


class Candidate(Protocol):
    @property
    def weight(self) -> float: ...

    @property
    def stats(self) -> DeploymentStats: ...


C = TypeVar("C", bound=Candidate)

# A strategy gives each candidate a sort key (smaller goes first) from its stats, the time
# and a weighted random draw (smaller for heavier deployments) that breaks ties by weight.
Key = tuple[float, ...]
Strategy = Callable[[Sequence[Candidate], Sequence[float], random.Random, float], list[Key]]


def _weighted(cands: Sequence[Candidate], draw: Sequence[float], rng: random.Random,
              now: float) -> list[Key]:
    return [(e,) for e in draw]


def _least_busy(cands: Sequence[Candidate], draw: Sequence[float], rng: random.Random,
                now: float) -> list[Key]:
    return [(c.stats.in_flight, e) for c, e in zip(cands, draw, strict=True)]


def _lowest_latency(cands: Sequence[Candidate], draw: Sequence[float], rng: random.Random,
                    now: float) -> list[Key]:
    if rng.random() < EXPLORE:
        return [(c.stats.measured_at, e) for c, e in zip(cands, draw, strict=True)]
    # Never measured: 0, so that every deployment gets tried once.
    return [(c.stats.latency_s or 0.0, e) for c, e in zip(cands, draw, strict=True)]


def _usage(cands: Sequence[Candidate], draw: Sequence[float], rng: random.Random,
           now: float) -> list[Key]:
    return [(-c.stats.budget_left(now), e) for c, e in zip(cands, draw, strict=True)]


STRATEGIES: dict[Routing, Strategy] = {
    "weighted": _weighted,
    "least-busy": _least_busy,
    "lowest-latency": _lowest_latency,
    "usage": _usage,
}


def order(routing: Routing, candidates: Sequence[C], *, rng: random.Random,
          now: float) -> list[C]:
    """The candidates in the order one request should try them. Weight 0 deployments
    (standbys) come after all others whatever the strategy."""
    if len(candidates) == 1:
        return list(candidates)
    # Efraimidis–Spirakis: -log(U)/w is exponential with rate w; sorting by it is weighted
    # sampling without replacement, so the first is picked with probability w / sum(w).
    draw = [-math.log(1.0 - rng.random()) / c.weight if c.weight > 0 else rng.random()
            for c in candidates]
    keys = STRATEGIES[routing](candidates, draw, rng, now)
    ranked = sorted(range(len(candidates)),
                    key=lambda i: (candidates[i].weight <= 0, keys[i]))
    return [candidates[i] for i in ranked]
