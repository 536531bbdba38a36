"""Leases: a little of a shared limit, reserved in Redis ahead of need and spent here.

With limits in Redis every request would cost a script call to reserve and another to
settle. Far from a limit that is wasted work: the answer is always yes. So when a
reservation goes to Redis and one of its limits has plenty left, it also takes a lease on
that limit (``LEASE_REQUESTS`` requests' worth of the cost, at most ``1 / LEASE_SHARE`` of
the limit), and the next requests whose every limit has enough leased here are admitted
without a round trip; their settlement (the estimate given back, an overshoot taken) goes
into the lease too. Leased units are reserved in Redis like any other, so the limit is
never exceeded, across any number of processes. What a lease costs is the other way:
units leased here are not available to other processes until used or given back, which
happens when the lease has gone unused for ``LEASE_S`` (the store's return loop) and at
stop. Near a limit there are no leases (only while the last answer from Redis said at
least ``LEASE_FAR`` leases' worth is left), so the last part of a budget is reserved
request by request, as exactly as without leases; a crash loses at most the unused part of
one lease per limit (counted as used until the window or the period ends).

While a request is admitted from a lease, its ``x-ratelimit-remaining-*`` are what Redis
said at the last round trip, less what this process has spent since (GCRA limits refill
with time as they do in Redis); other processes' spending since then shows at the next
round trip.

One process's table, used from its event loop only (no locks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway_llm.limit_types import Decision, Limit, remaining_units

__all__ = ["LEASE_FAR", "LEASE_REQUESTS", "LEASE_S", "LEASE_SHARE", "Leases"]

LEASE_S = 1.0  # unused this long, a lease goes back to Redis
LEASE_REQUESTS = 32  # a lease covers this many requests of the cost that took it
LEASE_SHARE = 100  # a lease is at most 1/100 of its limit
LEASE_FAR = 10  # leases only while at least this many leases' worth is left


@dataclass(slots=True)
class _Lease:
    limit: Limit
    units: int = 0  # reserved in Redis, not yet spent here
    pending: int = 0  # asked for by round trips still in flight
    used_at: float = 0.0  # monotonic: when a request last took from it or it grew
    seen_at: float = -math.inf  # limit clock: when Redis last said what is left
    # What is spent as the world sees it, this lease's units not counted: a counter's
    # units used; a GCRA limit's theoretical arrival time on the limit clock (s).
    spent: float = 0.0


class Leases:
    """The leases of one process, by limit key. ``clock`` is the limit clock (the one the
    store gives Redis, or monotonic time); expiry always runs on monotonic time, after
    ``lease_s`` unused (0: no leases, every reservation goes to Redis)."""

    def __init__(self, clock: Callable[[], float] | None = None, *,
                 lease_s: float = LEASE_S) -> None:
        self._clock = clock or time.monotonic
        self.lease_s = lease_s
        self._by_key: dict[str, _Lease] = {}

    def __len__(self) -> int:
        return sum(1 for lease in self._by_key.values() if lease.units)

    def units(self, key: str) -> int:
        lease = self._by_key.get(key)
        return 0 if lease is None else lease.units

    # --- a request ---------------------------------------------------------------------

    def take(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision | None:
        """Admit from the leases when every limit has enough leased here; None otherwise
        (nothing taken)."""
        found = []
        by_key = self._by_key
        for limit, cost in zip(limits, costs, strict=True):
            lease = by_key.get(limit.key)
            if lease is None or lease.units < cost or not lease.units:
                return None
            found.append(lease)
        mono = time.monotonic()
        now = self._clock()
        wall = time.time()
        decision = Decision(True)
        for lease, cost in zip(found, costs, strict=True):
            lease.units -= cost
            lease.used_at = mono
            limit = lease.limit
            if limit.counter:
                lease.spent += cost
            else:
                lease.spent = max(lease.spent, now) + cost * limit.interval
            _fill(decision, lease, now, wall)
        return decision

    def ask(self, limits: Sequence[Limit],
            costs: Sequence[int]) -> tuple[list[int], list[int]]:
        """For a reservation about to go to Redis, per limit: the units to lease on top of
        its cost (0: none; counted as pending until ``answered``), and the units of the
        cost paid from a lease held here (taken out of it now, put back if Redis refuses),
        so that a lease too small for the whole cost never stands in a request's way."""
        more: list[int] = []
        used: list[int] = []
        now = self._clock()
        for limit, cost in zip(limits, costs, strict=True):
            lease = self._by_key.get(limit.key)
            want = paid = 0
            if lease is not None:
                paid = min(lease.units, cost)
                lease.units -= paid
                if paid:
                    lease.used_at = time.monotonic()
                cap = limit.amount // LEASE_SHARE
                unit = max(cost, 1)
                if self.lease_s > 0 and cap >= unit and now - lease.seen_at <= self.lease_s:
                    want = min(unit * LEASE_REQUESTS, cap - lease.units - lease.pending)
                    if want < unit or \
                            _remaining_of(lease, now) - lease.pending - want < LEASE_FAR * cap:
                        want = 0
                lease.pending += want
            more.append(want)
            used.append(paid)
        return more, used

    def answered(self, limits: Sequence[Limit], more: Sequence[int], used: Sequence[int],
                 decision: Decision | None, state: Sequence[float]) -> None:
        """A round trip came back (``decision`` None: it failed or is asked again): what
        ``ask`` set aside is no longer pending; when admitted the extra is leased and what
        was paid from leases stays spent, otherwise it goes back into them. ``state`` (per
        limit, Redis' answer: GCRA seconds ahead, counter units used) is what the world has
        spent; the decision's remaining and reset are made to count this process's leases
        as free."""
        now = self._clock()
        mono = time.monotonic()
        admitted = decision is not None and decision.admitted
        for i, (limit, want) in enumerate(zip(limits, more, strict=True)):
            lease = self._by_key.get(limit.key)
            if lease is None:
                if decision is None or limit.amount // LEASE_SHARE <= 0:
                    continue
                lease = self._by_key[limit.key] = _Lease(limit)
            lease.pending -= want
            lease.limit = limit
            if not admitted:
                lease.units += used[i]
            if decision is None:
                continue
            if admitted and want:
                lease.units += want
                lease.used_at = mono
            lease.seen_at = now
            held = lease.units * (1 if limit.counter else limit.interval)
            lease.spent = (state[i] if limit.counter else now + state[i]) - held
            decision.remaining[i] = _remaining_of(lease, now)
            if not limit.counter:
                decision.reset_s[i] = max(0.0, lease.spent - now)

    def absorb(self, limits: Sequence[Limit], deltas: Sequence[int]) -> list[int] | None:
        """Settle into the leases what they can hold (a refund grows a lease, an overshoot
        is taken from it); what is left for Redis, or None when nothing is."""
        left: list[int] | None = None
        now = self._clock()
        for i, (limit, delta) in enumerate(zip(limits, deltas, strict=True)):
            lease = self._by_key.get(limit.key)
            rest = delta
            if lease is not None and lease.units and delta:
                # A refund grows the lease (those units are free again, and reserved);
                # an overshoot is paid from it as far as it goes.
                moved = -delta if delta < 0 else min(delta, lease.units)
                if delta < 0:
                    lease.units += moved
                    rest = 0
                else:
                    lease.units -= moved
                    rest = delta - moved
                step = moved if delta > 0 else -moved
                if limit.counter:
                    lease.spent += step
                else:
                    lease.spent = max(lease.spent, now) + step * limit.interval
            if rest:
                if left is None:
                    left = [0] * len(deltas)
                left[i] = rest
        return left

    # --- giving back -------------------------------------------------------------------

    def expired(self, *, everything: bool = False) -> tuple[list[Limit], list[int]]:
        """Take out the units of leases unused for ``lease_s`` (all of them with
        ``everything``): the limits and negative deltas that give them back to Redis."""
        mono = time.monotonic()
        limits: list[Limit] = []
        deltas: list[int] = []
        for lease in self._by_key.values():
            if lease.units and (everything or mono - lease.used_at >= self.lease_s):
                limits.append(lease.limit)
                deltas.append(-lease.units)
                lease.units = 0
        self._forget(mono)
        return limits, deltas

    def _forget(self, mono: float) -> None:
        """Drop what holds nothing and was not asked about for 10 s."""
        now = self._clock()
        for key, lease in list(self._by_key.items()):
            if not lease.units and not lease.pending and now - lease.seen_at > 10 \
                    and mono - lease.used_at > 10:
                del self._by_key[key]


def _remaining_of(lease: _Lease, now: float) -> int:
    """Units free as the world sees it (this process's lease counted as free)."""
    limit = lease.limit
    if limit.counter:
        return max(0, limit.amount - int(lease.spent))
    return remaining_units(max(0.0, lease.spent - now), limit)


def _fill(decision: Decision, lease: _Lease, now: float, wall: float) -> None:
    limit = lease.limit
    decision.remaining.append(_remaining_of(lease, now))
    if limit.counter:
        decision.reset_s.append(max(0.0, limit.resets_at - wall) if limit.resets_at else 0.0)
    else:
        decision.reset_s.append(max(0.0, lease.spent - now))
