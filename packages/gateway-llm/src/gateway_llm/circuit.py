"""Per-deployment circuit breaker by failure rate: a deployment opens when, within the last
``window_s``, at least ``min_requests`` client requests reached it and at least
``failure_rate`` of them (and no fewer than ``min_failures``) failed; after ``cooldown_s`` it
lets ``probes`` requests through (half-open) and closes once they all succeeded, or re-opens
on the first that fails. The router reports each client request at most once."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = ["BUCKETS", "CircuitBreaker", "Permit", "State"]

State = Literal["closed", "open", "half_open"]
# What an admitted attempt is to the breaker: an ordinary request, or a probe (half-open,
# or forced through an open circuit because every other door was shut).
Permit = Literal["closed", "probe"]

# The rolling window is kept as this many counters of window_s / BUCKETS seconds each:
# memory stays constant whatever the traffic, at the price of that much granularity.
BUCKETS = 10


class CircuitBreaker:
    def __init__(
        self, *, window_s: float, min_requests: int, failure_rate: float, cooldown_s: float,
        probes: int = 1, min_failures: int = 1, clock: Callable[[], float],
    ) -> None:
        self.window_s = window_s
        self.min_requests = max(1, min_requests)
        self.failure_rate = failure_rate
        self.cooldown_s = cooldown_s
        self.probes = max(1, probes)
        self.min_failures = max(1, min_failures)
        self.clock = clock
        self._width = window_s / BUCKETS
        # bucket number -> [successes, failures]; at most BUCKETS + 1 entries.
        self._buckets: dict[int, list[int]] = {}
        self._opened_at: float | None = None
        self._probing = 0  # probes in flight
        self._probed = 0  # probes that succeeded since the circuit went half-open
        self.last_reason: str | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    @property
    def opened_at(self) -> float | None:
        """When the circuit last opened (clock time); None while closed."""
        return self._opened_at

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def counts(self) -> tuple[int, int]:
        """(requests, failures) within the window."""
        self._prune(self._bucket())
        requests = sum(s + f for s, f in self._buckets.values())
        return requests, sum(f for _, f in self._buckets.values())

    # --- admission -----------------------------------------------------------------------

    def admit(self) -> Permit | None:
        """May a request use this deployment now? None: no (open, or every probe taken)."""
        state = self.state
        if state == "closed":
            return "closed"
        if state == "half_open" and self._probing + self._probed < self.probes:
            self._probing += 1
            return "probe"
        return None

    def force(self) -> Permit:
        """Let a request through whatever the state (the last door): it is a probe unless
        the circuit is closed."""
        if self._opened_at is None:
            return "closed"
        self._probing += 1
        return "probe"

    def release(self, permit: Permit) -> None:
        """The attempt never told anything about the upstream (the client went away, the
        request itself was wrong): give its probe back."""
        if permit == "probe":
            self._probing = max(0, self._probing - 1)

    # --- outcomes ------------------------------------------------------------------------

    def success(self, permit: Permit, *, count: bool = True) -> bool:
        """Record a served request; True when this closed the circuit. ``count=False``: the
        request was already counted (it failed here before), only its probe matters."""
        if self._opened_at is None:
            if count:
                self._add(0)
            return False
        if permit != "probe":
            return False  # admitted before the circuit opened: says nothing about now
        self._probing = max(0, self._probing - 1)
        self._probed += 1
        if self._probed < self.probes:
            return False
        self._opened_at = None
        self._probing = self._probed = 0
        self._buckets.clear()
        self.last_reason = None
        return True

    def failure(self, reason: str, permit: Permit, *, count: bool = True) -> bool:
        """Record a failed request; True when this opened (or re-opened) the circuit."""
        if self._opened_at is not None:
            if permit != "probe":
                return False  # admitted before the circuit opened: already accounted for
            self.last_reason = reason
            self._open()
            return True
        self.last_reason = reason
        if not count:
            return False
        self._add(1)
        requests, failures = self.counts()
        if (requests >= self.min_requests and failures >= self.min_failures
                and failures / requests >= self.failure_rate):
            self._open()
            return True
        return False

    def trip(self, reason: str) -> bool:
        """Open at once (the provider rejected our key); True when it was closed before."""
        was_closed = self._opened_at is None
        self.last_reason = reason
        self._open()
        return was_closed

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._probing = self._probed = 0
        self._buckets.clear()

    # --- the rolling window ----------------------------------------------------------------

    def _bucket(self) -> int:
        return math.floor(self.clock() / self._width) if self._width > 0 else 0

    def _prune(self, now: int) -> None:
        for b in [b for b in self._buckets if b <= now - BUCKETS]:
            del self._buckets[b]

    def _add(self, failed: int) -> None:
        b = self._bucket()
        self._prune(b)
        counters = self._buckets.setdefault(b, [0, 0])
        counters[failed] += 1
