"""Rolling-window limits as GCRA: the outcome types, the arithmetic, and the in-process store.

Algorithm (the same in the Redis scripts, see ``redis.py``). Each limit is a capacity ``L``
per period ``P`` (60 s for requests and tokens, 86400 s for tokens per day), applied as the
Generic Cell Rate Algorithm: one unit of the limit (a request, or a token) "costs" the
emission interval ``T = P / L``, and the only state per (scope, limit) is the theoretical
arrival time ``TAT``: the instant at which the bucket would be empty again. A cost ``c``
at time ``now`` is admitted iff ``max(TAT, now) + c*T - now <= P`` (the debt after paying
stays within one period), and then ``TAT := max(TAT, now) + c*T``.

- Rolling, not fixed windows: capacity comes back continuously at ``L / P``, so there is
  no boundary at which a fresh full window opens next to a spent one (a fixed-window
  counter admits ``2L`` within a second around a minute boundary; this admits ``L`` at
  once and then one unit per ``T``). The most that can pass in any span ``d`` is
  ``L + d/T``.
- ``retry_after`` is exact: ``max(TAT, now) + c*T - P - now``, the moment the cost fits.
- ``remaining = floor((P - (TAT - now)) / T)``, ``reset = TAT - now`` (until full again).
- Settlement moves ``TAT`` by ``(actual - estimate) * T``: a refund gives capacity back,
  an overrun pushes ``TAT`` past ``now + P`` and later requests wait it out. A refund never
  moves ``TAT`` below ``now`` (capacity is never more than ``L``).
- Several limits of one scope are checked together: a request is admitted only if every
  limit admits it, and only then is anything charged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec

LimitName = Literal["requests", "tokens", "tokens_day"]

MINUTE_S = 60.0
DAY_S = 86400.0


class Limit(msgspec.Struct, frozen=True):
    """``capacity`` units per rolling ``period_s``. A ``requests`` limit counts one unit per
    request; ``tokens`` and ``tokens_day`` count tokens."""

    name: LimitName
    capacity: int
    period_s: float

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.period_s <= 0:
            raise ValueError(f"a {self.name} limit needs a positive capacity and period")

    @property
    def interval_s(self) -> float:
        return self.period_s / self.capacity

    def cost(self, tokens: int) -> int:
        return 1 if self.name == "requests" else tokens


def standard_limits(rpm: int | None, tpm: int | None, tpd: int | None) -> tuple[Limit, ...]:
    """Requests and tokens per rolling minute, tokens per rolling day; None (or a value
    below 1, which config validation should refuse) means no limit."""
    out: list[Limit] = []
    if rpm is not None and rpm > 0:
        out.append(Limit("requests", rpm, MINUTE_S))
    if tpm is not None and tpm > 0:
        out.append(Limit("tokens", tpm, MINUTE_S))
    if tpd is not None and tpd > 0:
        out.append(Limit("tokens_day", tpd, DAY_S))
    return tuple(out)


class LimitState(msgspec.Struct, frozen=True):
    """One limit as clients see it in ``x-ratelimit-*`` headers."""

    name: LimitName
    limit: int
    remaining: int
    # Seconds until the limit is back to full capacity.
    reset_s: float


class Reservation(msgspec.Struct, frozen=True):
    """Proof that one request and ``tokens`` were charged to ``scope``; settle or release it."""

    scope: str
    limits: tuple[Limit, ...]
    tokens: int
    states: tuple[LimitState, ...]


class Rejection(msgspec.Struct, frozen=True):
    """Over ``limit``; nothing was charged. ``retry_after_s`` is when the request would fit
    (the longest wait over all limits of the scope)."""

    scope: str
    limit: LimitName
    retry_after_s: float
    states: tuple[LimitState, ...]


class EstimateTooLarge(msgspec.Struct, frozen=True):
    """``tokens`` alone exceed ``capacity``: waiting never helps."""

    scope: str
    limit: LimitName
    tokens: int
    capacity: int


Outcome = Reservation | Rejection | EstimateTooLarge


class LimitStoreUnavailable(Exception):
    """The limit store could not answer in time (Redis down, slow or refusing)."""


class LimitStore(Protocol):
    """Where limit state lives. Every call is atomic over all limits of the scope."""

    @property
    def healthy(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def reserve(self, scope: str, limits: Sequence[Limit], tokens: int) -> Outcome: ...

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...

    async def snapshot(self, scope: str, limits: Sequence[Limit]) -> tuple[LimitState, ...]: ...


def too_large(scope: str, limits: Sequence[Limit], tokens: int) -> EstimateTooLarge | None:
    for lim in limits:
        if lim.cost(tokens) > lim.capacity:
            return EstimateTooLarge(scope, lim.name, tokens, lim.capacity)
    return None


def state_of(lim: Limit, tat: float, now: float) -> LimitState:
    """What ``lim`` shows at ``now`` given its ``tat`` (same time unit as ``period_s``)."""
    debt = max(0.0, tat - now)
    # The small epsilon absorbs float error from summing many intervals.
    remaining = math.floor((lim.period_s - debt) / lim.interval_s + 1e-9)
    return LimitState(lim.name, lim.capacity, max(0, min(lim.capacity, remaining)), debt)


def key_of(scope: str, lim: Limit) -> str:
    return f"{scope}:{lim.name}"


class MemoryLimitStore:
    """Limit state in this process: exact and fast, shared by the tasks of one worker only.

    Each call runs without awaiting, so on one event loop it is atomic. Memory is one float
    per (scope, limit), and scopes come from the config, so nothing needs expiring.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._tat: dict[str, float] = {}

    @property
    def healthy(self) -> bool:
        return True

    @property
    def last_error(self) -> str | None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _states(self, scope: str, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        return tuple(state_of(lim, self._tat.get(key_of(scope, lim), now), now) for lim in limits)

    async def reserve(self, scope: str, limits: Sequence[Limit], tokens: int) -> Outcome:
        big = too_large(scope, limits, tokens)
        if big is not None:
            return big
        now = self._clock()
        new_tats: list[float] = []
        worst: tuple[float, LimitName] | None = None
        for lim in limits:
            tat = max(self._tat.get(key_of(scope, lim), now), now)
            new_tat = tat + lim.cost(tokens) * lim.interval_s
            wait = new_tat - lim.period_s - now
            # 1e-9: float sums of intervals must not reject a cost that fits exactly.
            if wait > 1e-9 and (worst is None or wait > worst[0]):
                worst = (wait, lim.name)
            new_tats.append(new_tat)
        if worst is not None:
            return Rejection(scope, worst[1], worst[0], self._states(scope, limits, now))
        for lim, new_tat in zip(limits, new_tats):
            self._tat[key_of(scope, lim)] = new_tat
        return Reservation(scope, tuple(limits), tokens, self._states(scope, limits, now))

    def _adjust(self, scope: str, limits: Sequence[Limit], requests: int, tokens: int) -> None:
        now = self._clock()
        for lim in limits:
            delta = requests if lim.name == "requests" else tokens
            if delta == 0:
                continue
            key = key_of(scope, lim)
            tat = self._tat.get(key, now)
            if delta > 0:
                self._tat[key] = max(tat, now) + delta * lim.interval_s
            else:
                self._tat[key] = max(tat + delta * lim.interval_s, now)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        self._adjust(reservation.scope, reservation.limits, 0,
                     actual_tokens - reservation.tokens)

    async def release(self, reservation: Reservation) -> None:
        self._adjust(reservation.scope, reservation.limits, -1, -reservation.tokens)

    async def snapshot(self, scope: str, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        return self._states(scope, limits, self._clock())
