"""Per-deployment circuit breaker: after ``failures`` failures within ``window_s`` a
deployment is skipped for ``cooldown_s``; then one probe request is let through (half-open)
and its outcome closes or re-opens the circuit."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, *, failures: int, window_s: float, cooldown_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.threshold = max(1, failures)
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probing = False
        self.last_reason: str | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def try_acquire(self) -> bool:
        """May a request use this deployment now? In half-open state only one probe may."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False
        self.last_reason = None

    def record_failure(self, reason: str) -> bool:
        """Count a failure; True when this failure opened (or re-opened) the circuit."""
        now = self.clock()
        self.last_reason = reason
        if self._probing or self.state == "half_open":
            self._probing = False
            self._opened_at = now
            return True
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if self._opened_at is None and len(self._failures) >= self.threshold:
            self._opened_at = now
            self._failures.clear()
            return True
        return False

    def release_probe(self) -> None:
        """The probe never reached the upstream (e.g. the client went away): let another."""
        self._probing = False

    def trip(self, reason: str) -> None:
        """Open at once (e.g. the provider rejected our key)."""
        self.last_reason = reason
        self._opened_at = self.clock()
        self._probing = False
        self._failures.clear()
