"""Per-provider, per-alias and per-deployment request and token budgets: requests/min,
tokens/min, tokens/day, in process memory or in Redis shared by every worker and host.

Algorithm: GCRA (the generic cell rate algorithm, as in ATM networks and redis-cell). Each
limit of ``amount`` per ``window`` keeps one number, the theoretical arrival time (TAT):
every unit of cost pushes it ``window / amount`` seconds further; a request is admitted
when the TAT it would leave is at most ``window`` ahead of now. So at any instant no more
than ``amount`` units can be spent at once, and capacity comes back continuously at
``amount / window`` — a rolling window with no fixed boundaries, hence no 2x burst at a
minute boundary. A reservation covers all limits of a request at once (all or nothing);
after the call it is settled to the tokens the provider reported (refund or extra charge),
or released when the request never reached the provider.

A caller's own limits (a virtual key's and its team's rpm/tpm, and budgets of tokens or
cost per day, month or in total) ride in the same reservation as a :class:`Charge`: budgets
are counters for a fixed period (reset at its end) rather than GCRA, and all of them are
checked and taken in one step — one script in Redis, one synchronous step in memory.
Settlement is batched: what finished requests report is added up and sent as one script
call while the previous one is in flight, off the request's path. In Redis, far from a
limit, a process leases a little of it ahead and admits and settles from the lease without
a round trip (``gateway_llm.leases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import structlog

from gateway_core.config import ModelConfig, ProviderConfig, RateLimitConfig
from gateway_llm.hub import (
    Conversation,
    File,
    FunctionTool,
    Image,
    LLMRequest,
    Opaque,
    Reasoning,
    Refusal,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from gateway_llm.leases import LEASE_S, Leases
from gateway_llm.limit_types import WINDOWS, Decision, Limit, LimitName, gcra, remaining_units
from gateway_llm.prices import Price
from gateway_llm.redis_pipe import RedisPipe, RedisReplyError
from gateway_llm.slots import HOLD_SCRIPT, PUBLISH_SCRIPT, HeldSlots, Slot

__all__ = [
    "Admission",
    "Charge",
    "Decision",
    "Denied",
    "Limit",
    "LimitName",
    "LimitStore",
    "LimitStoreUnavailable",
    "MemoryLimitStore",
    "RateLimiter",
    "RedisLimitStore",
    "Slot",
    "estimate_prompt_tokens",
    "format_reset",
    "iso_utc",
]

log = structlog.get_logger("gateway.limits")

@dataclass(frozen=True, slots=True)
class Charge:
    """A caller's own limits (a virtual key's, its team's), reserved with the provider's.
    ``price`` gives what a deployment's tokens cost, for budgets in money."""

    limits: list[Limit]
    price: Callable[[str, str], Price]

    def costs(self, tokens: int, price: Price) -> list[int]:
        out = []
        for limit in self.limits:
            if limit.name == "requests":
                out.append(1)
            elif limit.name == "budget_cost":
                out.append(price.bound_nano(tokens))
            else:
                out.append(tokens)
        return out


class LimitStoreUnavailable(Exception):
    """The store (Redis) could not be reached within its timeout."""


class LimitStore(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def reserve(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision:
        """Admit all costs against all limits atomically, or none."""
        ...

    async def adjust(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        """Add (or with negative deltas, give back) units without an admission check."""
        ...

    async def hold(self, slots: Sequence[Slot]) -> tuple[int, int] | None:
        """One of each slot (``gateway_llm.slots``), all or none: None when taken, else
        (index of the first full one, how many were held there). Raises
        LimitStoreUnavailable with the slots still counted by this process, so that the
        caller may go on (fail open) or ``let_go`` of them."""
        ...

    async def let_go(self, keys: Sequence[str]) -> None:
        """Give back one of each slot taken by ``hold``."""
        ...

    def health(self) -> dict[str, object]: ...


class MemoryLimitStore:
    """One process's budgets. Each call runs without awaiting, so it is atomic under
    asyncio."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self._tat: dict[str, float] = {}
        self._used: dict[str, tuple[int, float]] = {}  # counters: (used, resets_at)
        self.slots = HeldSlots()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._tat.clear()
        self._used.clear()

    def _counter(self, limit: Limit, wall: float) -> int:
        used, resets_at = self._used.get(limit.key, (0, 0.0))
        return used if not resets_at or resets_at > wall else 0

    async def reserve(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision:
        now = self.clock()
        wall = self.wall_clock()
        new: list[float] = []
        for i, (limit, cost) in enumerate(zip(limits, costs, strict=False)):
            if limit.counter:
                used = self._counter(limit, wall)
                if used + cost > limit.amount:
                    retry = limit.resets_at - wall if limit.resets_at else math.inf
                    decision = Decision(False, denied_index=i, retry_after_s=retry)
                    self._fill(decision, limits, now, wall)
                    return decision
                new.append(float(used + cost))
                continue
            ok, tat, retry = gcra(self._tat.get(limit.key, now), now, limit, cost)
            if not ok:
                decision = Decision(False, denied_index=i, retry_after_s=retry)
                self._fill(decision, limits, now, wall)
                return decision
            new.append(tat)
        for limit, value in zip(limits, new, strict=False):
            if limit.counter:
                self._used[limit.key] = (int(value), limit.resets_at)
            else:
                self._tat[limit.key] = value
        if len(self._used) > 10_000:
            self._purge(wall)
        decision = Decision(True)
        self._fill(decision, limits, now, wall)
        return decision

    def _purge(self, wall: float) -> None:
        for key, (_, resets_at) in list(self._used.items()):
            if resets_at and resets_at <= wall:
                del self._used[key]

    def _fill(self, decision: Decision, limits: Sequence[Limit], now: float,
              wall: float) -> None:
        for limit in limits:
            if limit.counter:
                decision.remaining.append(max(0, limit.amount - self._counter(limit, wall)))
                decision.reset_s.append(max(0.0, limit.resets_at - wall)
                                        if limit.resets_at else 0.0)
                continue
            ahead = max(0.0, self._tat.get(limit.key, now) - now)
            decision.remaining.append(remaining_units(ahead, limit))
            decision.reset_s.append(ahead)

    async def adjust(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        self.adjust_now(limits, deltas)

    def adjust_now(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        """``adjust`` without awaiting (so the router's settlement costs no task)."""
        now = self.clock()
        wall = self.wall_clock()
        for limit, delta in zip(limits, deltas, strict=False):
            if limit.counter:
                used = max(0, self._counter(limit, wall) + delta)
                self._used[limit.key] = (used, limit.resets_at)
                continue
            # From now, like the Redis script: a TAT in the past means a full bucket.
            tat = max(self._tat.get(limit.key, now), now) + delta * limit.interval
            self._tat[limit.key] = max(tat, now)

    async def hold(self, slots: Sequence[Slot]) -> tuple[int, int] | None:
        denied = self.slots.take(slots)
        return None if denied is None else (denied, self.slots.held(slots[denied].key))

    async def let_go(self, keys: Sequence[str]) -> None:
        self.slots.give(keys, keep_zeros=False)  # nobody else to tell

    def health(self) -> dict[str, object]:
        return {"backend": "memory", "healthy": True}


# The same GCRA in Lua, over every limit of a reservation at once, for a batch of
# reservations (each atomic, taken in order: the ones that waited while the previous call
# was in flight). Times in milliseconds from Redis' own clock (so every gateway host
# agrees), unless the caller passes now_ms. ARGV: now, the number of reservations, then one
# string per reservation (one argument, not dozens: packing arguments is most of what a
# call costs the client): its number of keys, then four numbers per key: kind (0 GCRA,
# 1 counter), interval and window (GCRA) or amount and time-to-live (counter; 0: none),
# and the cost. Per reservation the answer is admitted, the denied key's index, the
# retry-after, and per key how far its TAT is ahead of now (GCRA) or what is used
# (counter).
_RESERVE = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function state(key, kind)
  local v = redis.call('GET', key)
  if kind == 1 then return string.format('%.0f', tonumber(v or 0)) end
  return tostring(math.max(0, tonumber(v or now) - now))
end
local out = {}
local k = 0
for r = 1, tonumber(ARGV[2]) do
  local f = {}
  for x in string.gmatch(ARGV[2 + r], '%S+') do f[#f + 1] = tonumber(x) end
  local n = f[1]
  local new = {}
  local denied = 0
  local retry = '0'
  for i = 1, n do
    local b = 1 + (i - 1) * 4
    local kind, x, w, cost = f[b + 1], f[b + 2], f[b + 3], f[b + 4]
    if kind == 1 then
      local used = tonumber(redis.call('GET', KEYS[k + i]) or 0)
      if used + cost > x then denied = i; retry = tostring(w) else new[i] = used + cost end
    else
      local tat = tonumber(redis.call('GET', KEYS[k + i]) or now)
      if tat < now then tat = now end
      local nt = tat + cost * x
      if nt - w > now then denied = i; retry = tostring(nt - w - now) else new[i] = nt end
    end
    if denied > 0 then break end
  end
  if denied > 0 then
    table.insert(out, 0)
    table.insert(out, denied)
    table.insert(out, retry)
    for j = 1, n do table.insert(out, state(KEYS[k + j], f[1 + (j - 1) * 4 + 1])) end
  else
    table.insert(out, 1)
    table.insert(out, 0)
    table.insert(out, '0')
    for i = 1, n do
      local b = 1 + (i - 1) * 4
      local w = f[b + 3]
      if f[b + 1] == 1 then
        local v = string.format('%.0f', new[i])
        if w > 0 then redis.call('SET', KEYS[k + i], v, 'PX', w)
        else redis.call('SET', KEYS[k + i], v) end
        table.insert(out, v)
      else
        redis.call('SET', KEYS[k + i], tostring(new[i]), 'PX', math.ceil(new[i] - now + w))
        table.insert(out, tostring(new[i] - now))
      end
    end
  end
  k = k + n
end
return out
"""

_ADJUST = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local a = tonumber(ARGV[b + 2])
  local w = tonumber(ARGV[b + 3])
  local delta = tonumber(ARGV[b + 4])
  if tonumber(ARGV[b + 1]) == 1 then
    local v = string.format('%.0f', math.max(0, tonumber(redis.call('GET', KEYS[i]) or 0) + delta))
    if w > 0 then redis.call('SET', KEYS[i], v, 'PX', w) else redis.call('SET', KEYS[i], v) end
  else
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    tat = math.max(now, tat + delta * a)
    redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil(tat - now + w))
  end
end
return 1
"""


_SHA = {script: RedisPipe.sha1(script)
        for script in (_RESERVE, _ADJUST, HOLD_SCRIPT, PUBLISH_SCRIPT)}


class RedisLimitStore:
    """Budgets shared by every process and host using one Redis. Each operation is one
    server-side script, so a reservation over several limits is atomic; keys expire once
    their window has passed. Every call is bounded by ``timeout_s``.

    Reservations that arrive while one is in flight wait for it and then go together, in
    one script call (each still atomic, in arrival order): under load one round trip
    carries many requests, idle each goes alone at once. Far from a limit most never go:
    they are admitted from this process's leases (``leases``; ``lease_s`` 0: none)."""

    _BATCH = 64  # reservations per script call
    _IN_FLIGHT = 2  # script calls at once
    def __init__(self, url: str, *, timeout_s: float = 0.25, key_prefix: str = "agw:rl:",
                 clock: Callable[[], float] | None = None,
                 lease_s: float = LEASE_S, slot_ttl_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        self.clock = clock
        self._client: RedisPipe | None = None
        self.last_error: str | None = None
        self._queue: list[tuple[Sequence[Limit], Sequence[int],
                                asyncio.Future[list[object]]]] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._sending = 0  # pumps that have not stopped yet
        self.leases = Leases(clock, lease_s=lease_s)
        self._returner: asyncio.Task[None] | None = None
        # Slots (max_sandboxes): this process's counts, kept alive in Redis by a heartbeat
        # while it holds any; a process gone for slot_ttl_s no longer counts.
        self.slots = HeldSlots()
        self.slot_ttl_s = slot_ttl_s
        self._beater: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = RedisPipe(self.url, timeout_s=self.timeout_s * 2)
        if self.leases.lease_s > 0:
            self._returner = asyncio.get_running_loop().create_task(self._return_leases())
        # Readiness should say at once when Redis is unreachable; serving goes on anyway.
        try:
            await self._client.call("PING")
        except Exception as exc:  # noqa: BLE001 - any failure here only means "not healthy"
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("ratelimit_store_unreachable_at_start", error=self.last_error)

    async def aclose(self) -> None:
        if self._returner is not None:
            returner, self._returner = self._returner, None
            returner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await returner
        for pump in list(self._pumps):
            with contextlib.suppress(Exception):
                await pump
        await self._give_back(everything=True)
        if self._beater is not None:
            beater, self._beater = self._beater, None
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
        if self.slots.counts:
            await self._publish(list(self.slots.counts), stopping=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _now_ms(self) -> float:
        return -1.0 if self.clock is None else self.clock() * 1000

    def _args(self, limits: Sequence[Limit], amounts: Sequence[int]) -> tuple[list[str], list[str]]:
        keys = [self.key_prefix + limit.key for limit in limits]
        args = [repr(self._now_ms())]
        self._limit_args(args, limits, amounts, time.time())
        return keys, args

    @staticmethod
    def _limit_args(args: list[str], limits: Sequence[Limit], amounts: Sequence[int],
                    wall: float) -> None:
        for limit, amount in zip(limits, amounts, strict=False):
            if limit.counter:
                args += ["1", str(limit.amount), str(limit.ttl_ms(wall)), str(amount)]
            else:
                args += ["0", repr(limit.interval * 1000), repr(limit.window_s * 1000),
                         str(amount)]

    async def _call(self, script: str, keys: list[str], args: list[str]) -> list[object]:
        if self._client is None:
            raise LimitStoreUnavailable("the Redis limit store was not started")
        try:
            result = await self._client.script(_SHA[script], script, keys, args)
        except (TimeoutError, OSError, RedisReplyError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise LimitStoreUnavailable(self.last_error) from None
        self.last_error = None
        return list(result) if isinstance(result, list) else [1]

    async def reserve(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision:
        """From this process's leases when they hold enough (no round trip); otherwise in
        Redis, taking leases on the limits far from their amount (see ``leases``)."""
        leases = self.leases
        decision = leases.take(limits, costs)
        if decision is not None:
            return decision
        more, used = leases.ask(limits, costs)
        try:
            decision, state = await self._round_trip(limits, [
                cost - paid + extra for cost, paid, extra in zip(costs, used, more, strict=True)])
            if not decision.admitted and more[decision.denied_index]:
                # Refused for the lease, not for the request: ask again without it.
                leases.answered(limits, more, [0] * len(more), None, ())
                more = [0] * len(more)
                decision, state = await self._round_trip(
                    limits, [cost - paid for cost, paid in zip(costs, used, strict=True)])
        except BaseException:
            leases.answered(limits, more, used, None, ())
            raise
        leases.answered(limits, more, used, decision, state)
        return decision

    def absorb(self, limits: Sequence[Limit], deltas: Sequence[int]) -> list[int] | None:
        """Settle into this process's leases what they can hold; what is left for Redis
        (None: nothing)."""
        return self.leases.absorb(limits, deltas)

    async def _round_trip(self, limits: Sequence[Limit],
                          costs: Sequence[int]) -> tuple[Decision, list[float]]:
        """One reservation in Redis: its decision, and per limit what the world has spent
        (GCRA: seconds its TAT is ahead; counter: units used)."""
        future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        self._queue.append((limits, costs, future))
        # Up to _IN_FLIGHT calls at once: a batch waits for Redis less while another is
        # on its way back. Counted by the pumps themselves as they stop, not by their
        # tasks' done callbacks: those run an iteration later, and a reservation made in
        # between (by a caller woken by the last answer) would find no pump to send it.
        if self._sending < self._IN_FLIGHT and len(self._queue) > self._sending - 1:
            self._sending += 1
            pump = asyncio.get_running_loop().create_task(self._send())
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)
        out = await future
        state = [float(x) for x in out[3:]]  # type: ignore[arg-type]
        for i, limit in enumerate(limits):
            if not limit.counter:
                state[i] /= 1000
        return self._decision(limits, out), state

    async def _send(self) -> None:
        """Send what waits, a batch per script call, until nothing does."""
        try:
            await self._send_batches()
        finally:
            self._sending -= 1

    async def _send_batches(self) -> None:
        while self._queue:
            batch = [item for item in self._queue[:self._BATCH] if not item[2].done()]
            del self._queue[:self._BATCH]
            if not batch:
                continue
            keys: list[str] = []
            args = [repr(self._now_ms()), str(len(batch))]
            wall = time.time()
            for limits, costs, _ in batch:
                keys += [self.key_prefix + limit.key for limit in limits]
                fields = [str(len(limits))]
                for limit, cost in zip(limits, costs, strict=False):
                    fields.append(f"1 {limit.amount} {limit.ttl_ms(wall)} {cost}"
                                  if limit.counter else f"{limit.gcra_args} {cost}")
                args.append(" ".join(fields))
            try:
                out = await self._call(_RESERVE, keys, args)
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception)
                                             else LimitStoreUnavailable("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            at = 0
            for limits, _, future in batch:
                part = out[at:at + 3 + len(limits)]
                at += 3 + len(limits)
                if not future.done():
                    future.set_result(part)

    @staticmethod
    def _decision(limits: Sequence[Limit], out: list[object]) -> Decision:
        admitted = int(out[0]) == 1  # type: ignore[call-overload]
        values = [float(x) for x in out[3:]]  # type: ignore[arg-type]
        denied = int(out[1]) - 1  # type: ignore[call-overload]
        retry = float(out[2]) / 1000  # type: ignore[arg-type]
        wall = time.time()
        if not admitted and limits[denied].counter:
            resets_at = limits[denied].resets_at
            retry = resets_at - wall if resets_at else math.inf
        decision = Decision(admitted, denied_index=denied, retry_after_s=retry)
        for limit, value in zip(limits, values, strict=False):
            if limit.counter:
                decision.remaining.append(max(0, limit.amount - int(value)))
                decision.reset_s.append(max(0.0, limit.resets_at - wall)
                                        if limit.resets_at else 0.0)
            else:
                decision.remaining.append(remaining_units(value / 1000, limit))
                decision.reset_s.append(value / 1000)
        return decision

    async def adjust(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        rest = self.leases.absorb(limits, deltas)
        if rest is not None:
            await self._adjust_in_redis(limits, rest)

    async def _adjust_in_redis(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        pairs = [(limit, delta) for limit, delta in zip(limits, deltas, strict=True) if delta]
        if not pairs:
            return
        keys, args = self._args([limit for limit, _ in pairs], [delta for _, delta in pairs])
        await self._call(_ADJUST, keys, args)

    async def _return_leases(self) -> None:
        """Give back, every half lease time, the leases unused for a lease time."""
        while True:
            await asyncio.sleep(self.leases.lease_s / 2)
            await self._give_back()

    async def _give_back(self, *, everything: bool = False) -> None:
        limits, deltas = self.leases.expired(everything=everything)
        if not limits or self._client is None:
            return
        try:
            await self._adjust_in_redis(limits, deltas)
        except LimitStoreUnavailable as exc:
            # Those units stay spent until their window or period ends: a budget reads a
            # little higher, never lower.
            log.warning("ratelimit_leases_not_returned", error=str(exc), limits=len(limits))

    async def hold(self, slots: Sequence[Slot]) -> tuple[int, int] | None:
        held = self.slots
        denied = held.take(slots)
        if denied is not None:
            return denied, held.held(slots[denied].key)
        keys = [slot.key for slot in slots]
        args = [held.me, self.key_prefix + "inst:", str(round(self.slot_ttl_s * 1000)),
                str(held.next_seq()), *(f"{slot.most} {held.held(slot.key)}" for slot in slots)]
        try:
            out = await self._call(HOLD_SCRIPT, [self._slot_key(key) for key in keys], args)
        except LimitStoreUnavailable:
            self._beat()  # counted here; the heartbeat tells Redis once it answers again
            raise
        except BaseException:
            held.give(keys)
            self._beat()  # the script may have run: the heartbeat corrects it
            raise
        if int(out[0]) >= 0:  # type: ignore[call-overload]
            held.give(keys)
            return int(out[0]), int(out[1])  # type: ignore[call-overload]
        self._beat()
        return None

    async def let_go(self, keys: Sequence[str]) -> None:
        self.slots.give(keys)
        await self._publish(list(keys))

    def _slot_key(self, key: str) -> str:
        return f"{self.key_prefix}slots:{key}"

    def _beat(self) -> None:
        if self._beater is None or self._beater.done():
            self._beater = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        """While this process holds slots: its instance key kept alive, its counts
        written again (so what Redis missed while unreachable comes back)."""
        while self.slots.counts:
            await asyncio.sleep(self.slot_ttl_s / 4)
            await self._publish(list(self.slots.counts))

    async def _publish(self, keys: list[str], *, stopping: bool = False) -> None:
        held = self.slots
        seq = held.next_seq()
        ttl_ms = 0 if stopping else round(self.slot_ttl_s * 1000)
        try:
            await self._call(PUBLISH_SCRIPT, [self._slot_key(key) for key in keys], [
                held.me, self.key_prefix + "inst:", str(ttl_ms), str(seq),
                *("0" if stopping else str(held.held(key)) for key in keys)])
        except LimitStoreUnavailable as exc:
            # Kept here: the heartbeat writes it again, and a slot counts a little longer.
            log.warning("ratelimit_slots_not_written", error=str(exc), slots=len(keys))
            if not stopping:
                self._beat()
            return
        held.published(keys, seq)

    def health(self) -> dict[str, object]:
        return {"backend": "redis", "healthy": self.last_error is None,
                "last_error": self.last_error, "leases": len(self.leases)}


# --- the façade the router uses ------------------------------------------------------


@dataclass(slots=True)
class Admission:
    limits: list[Limit]
    costs: list[int]
    tokens: int  # reserved token estimate
    provider: str
    remaining: list[int]
    reset_s: list[float]
    degraded: bool = False  # admitted without checking because the store is down
    settled: bool = False
    price: Price | None = None  # set when a caller's budget in money is part of it


@dataclass(slots=True)
class Denied:
    provider: str
    limit: LimitName
    retry_after_s: float
    message: str
    too_large: bool = False
    store_unavailable: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    caller: bool = False  # the caller's own limit (a key's, a team's): no other door helps
    resets_at: float = 0.0  # a budget's period end (wall clock; 0: never or not a budget)


def format_reset(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: "20ms", "1s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


class RateLimiter:
    def __init__(self, scopes: dict[str, list[Limit]], store: LimitStore, *,
                 fail_open: bool = True, default_completion_tokens: int = 1024,
                 charges: bool = False) -> None:
        self.scopes = scopes
        self.store = store
        self.fail_open = fail_open
        self.default_completion_tokens = default_completion_tokens
        # Whether callers bring limits of their own (virtual keys): then the limiter is in
        # use even with no provider limits configured.
        self.charges = charges
        self.degraded_since: float | None = None
        self._pending: dict[str, tuple[Limit, int]] = {}
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, rl: RateLimitConfig, providers: dict[str, ProviderConfig],
        models: dict[str, ModelConfig], *, store: LimitStore | None = None,
        charges: bool = False,
    ) -> RateLimiter:
        scopes: dict[str, list[Limit]] = {}
        # enabled = false switches every limit off, the providers' own included.
        for name, p in providers.items() if rl.enabled else ():
            amounts: dict[LimitName, int | None] = {
                "requests": p.rpm if p.rpm is not None else rl.requests_per_minute,
                "tokens": p.tpm if p.tpm is not None else rl.tokens_per_minute,
                "tokens_day": p.tpd if p.tpd is not None else rl.tokens_per_day,
            }
            scopes[f"provider:{name}"] = _limits(f"provider:{name}", amounts)
        for alias, m in models.items() if rl.enabled else ():
            scopes[f"model:{alias}"] = _limits(
                f"model:{alias}", {"requests": m.rpm, "tokens": m.tpm, "tokens_day": m.tpd})
            # A deployment's own budget (one name is one deployment in every alias).
            for d in m.resolved_deployments(alias):
                scope = f"deployment:{d.name}"
                scopes[scope] = _limits(
                    scope, {"requests": d.rpm, "tokens": d.tpm, "tokens_day": d.tpd})
        scopes = {k: v for k, v in scopes.items() if v}
        if store is None:
            store = (RedisLimitStore(rl.redis_url, timeout_s=rl.redis_timeout_s)
                     if rl.backend == "redis" else MemoryLimitStore())
        return cls(scopes, store, fail_open=rl.fail_open,
                   default_completion_tokens=rl.default_completion_tokens, charges=charges)

    @property
    def enabled(self) -> bool:
        return bool(self.scopes) or self.charges

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.drain()
        await self.store.aclose()

    def estimate(self, request: LLMRequest) -> int:
        """Tokens to reserve: the prompt estimate plus the output the request may use."""
        out = request.max_output_tokens
        if out is None:
            out = self.default_completion_tokens
        n = max(1, request.n)
        return estimate_prompt_tokens(request.conversation()) + out * n

    async def acquire(self, provider: str, alias: str | None, tokens: int, *,
                      deployment: str | None = None, model: str = "",
                      charge: Charge | None = None) -> Admission | Denied:
        limits = list(self.scopes.get(f"provider:{provider}", ()))
        if alias is not None:
            limits += self.scopes.get(f"model:{alias}", ())
        if deployment is not None:
            limits += self.scopes.get(f"deployment:{deployment}", ())
        if not limits and (charge is None or not charge.limits):
            return Admission([], [], tokens, provider, [], [])
        for limit in limits:
            if limit.name != "requests" and tokens > limit.amount:
                return Denied(provider, limit.name, 0.0, too_large=True, message=(
                    f"This request needs an estimated {tokens} tokens, more than the "
                    f"{limit.amount} {_describe(limit)} allowed for {_owner(limit, provider)}; "
                    "reduce the prompt or max_tokens."))
        costs = [1 if limit.name == "requests" else tokens for limit in limits]
        price: Price | None = None
        if charge is not None and charge.limits:
            price = charge.price(alias or "", model)
            for limit in charge.limits:
                if limit.name == "tokens" and tokens > limit.amount:
                    return Denied(provider, limit.name, 0.0, too_large=True, caller=True,
                                  message=(
                        f"This request needs an estimated {tokens} tokens, more than the "
                        f"{limit.amount} tokens per minute allowed for {limit.owner}; "
                        "reduce the prompt or max_tokens."))
            limits += charge.limits
            costs += charge.costs(tokens, price)
        try:
            decision = await self.store.reserve(limits, costs)
        except LimitStoreUnavailable as exc:
            if self.degraded_since is None:
                self.degraded_since = time.time()
                log.error("ratelimit_store_unavailable", error=str(exc),
                          fail_open=self.fail_open)
            if self.fail_open:
                return Admission(limits, costs, tokens, provider, [], [], degraded=True,
                                 price=price)
            return Denied(provider, "requests", 1.0, store_unavailable=True,
                          message="The rate-limit store is unavailable; try again shortly.")
        if self.degraded_since is not None:
            log.info("ratelimit_store_recovered")
            self.degraded_since = None
        if decision.admitted:
            return Admission(limits, costs, tokens, provider, decision.remaining,
                             decision.reset_s, price=price)
        limit = limits[decision.denied_index]
        if limit.counter:
            denied = Denied(provider, limit.name, decision.retry_after_s, caller=True,
                            resets_at=limit.resets_at, message=_budget_message(limit))
        else:
            denied = Denied(provider, limit.name, decision.retry_after_s,
                            caller=bool(limit.owner), message=(
                f"Rate limit reached for {limit.owner or _owner(limit, provider)}: "
                f"{limit.amount} {_describe(limit)}. "
                f"Try again in {format_reset(decision.retry_after_s)}."))
        denied.headers = _headers(limits, decision.remaining, decision.reset_s)
        return denied

    def _deltas(self, admission: Admission, actual_tokens: int | None,
                usage: Usage | None) -> list[int] | None:
        """What settling a reservation to the reported usage adds (or gives back) per
        limit; None when there is nothing to do."""
        if admission.settled or not admission.limits or admission.degraded:
            # A degraded admission reserved nothing: there is nothing to correct.
            return None
        admission.settled = True
        if usage is not None:
            actual_tokens = usage.total_tokens
        if actual_tokens is None:
            return None
        delta = actual_tokens - admission.tokens
        deltas = []
        for limit, cost in zip(admission.limits, admission.costs, strict=False):
            if limit.name == "requests":
                deltas.append(0)
            elif limit.name == "budget_cost":
                price = admission.price or Price()
                actual = (price.cost_nano(usage) if usage is not None
                          else price.bound_nano(actual_tokens))
                deltas.append(actual - cost)
            else:
                deltas.append(delta)
        return deltas if any(deltas) else None

    async def settle(self, admission: Admission, actual_tokens: int | None = None, *,
                     usage: Usage | None = None) -> None:
        """Charge what the provider reported instead of the estimate (``usage``, when
        given, also prices a budget in money exactly)."""
        deltas = self._deltas(admission, actual_tokens, usage)
        if deltas is None:
            return
        # Already logged by acquire's path; the budget is approximate meanwhile.
        with contextlib.suppress(LimitStoreUnavailable):
            await self.store.adjust(admission.limits, deltas)

    def settle_later(self, admission: Admission, actual_tokens: int | None = None, *,
                     usage: Usage | None = None) -> None:
        """``settle`` off the caller's path: in memory at once; in Redis added to the next
        batch, which one script call sends while the caller goes on."""
        deltas = self._deltas(admission, actual_tokens, usage)
        if deltas is None:
            return
        if isinstance(self.store, MemoryLimitStore):
            self.store.adjust_now(admission.limits, deltas)
            return
        if isinstance(self.store, RedisLimitStore):
            rest = self.store.absorb(admission.limits, deltas)
            if rest is None:
                return
            deltas = rest
        for limit, delta in zip(admission.limits, deltas, strict=False):
            if delta:
                _, before = self._pending.get(limit.key, (limit, 0))
                self._pending[limit.key] = (limit, before + delta)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            limits = [limit for limit, _ in batch.values()]
            deltas = [delta for _, delta in batch.values()]
            try:
                await self.store.adjust(limits, deltas)
            except LimitStoreUnavailable:
                pass  # logged by acquire's path; the budget is approximate meanwhile
            except Exception as exc:  # noqa: BLE001 - a background task must not die silently
                log.error("ratelimit_settle_failed", error=f"{type(exc).__name__}: {exc}")

    async def drain(self) -> None:
        """Wait for the settlements handed to ``settle_later`` to reach the store."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def release(self, admission: Admission) -> None:
        """Give everything back: the request never reached the provider."""
        if admission.settled or not admission.limits or admission.degraded:
            return
        admission.settled = True
        with contextlib.suppress(LimitStoreUnavailable):
            await self.store.adjust(admission.limits, [-c for c in admission.costs])

    def headers(self, admission: Admission) -> dict[str, str]:
        return _headers(admission.limits, admission.remaining, admission.reset_s)

    def health(self) -> dict[str, object]:
        info = dict(self.store.health())
        info["fail_open"] = self.fail_open
        info["scopes"] = {scope: {lim.name: lim.amount for lim in limits}
                          for scope, limits in self.scopes.items()}
        return info


def _limits(scope: str, amounts: dict[LimitName, int | None]) -> list[Limit]:
    return [Limit(f"{scope}:{name}", name, amount, WINDOWS[name])
            for name, amount in amounts.items() if amount]


def _owner(limit: Limit, provider: str) -> str:
    """Whose budget a limit is, for messages: the provider, or a deployment by name."""
    if limit.key.startswith("deployment:"):
        return "deployment " + limit.key[len("deployment:"):].rsplit(":", 1)[0]
    return provider


def _describe(limit: Limit) -> str:
    return {"requests": "requests per minute", "tokens": "tokens per minute",
            "tokens_day": "tokens per day", "budget_tokens": "tokens",
            "budget_cost": "nano-USD"}[limit.name]


def _budget_message(limit: Limit) -> str:
    if limit.name == "budget_cost":
        amount = f"max_cost = {limit.amount / 1e9:.6g} USD"
    else:
        amount = f"max_tokens = {limit.amount}"
    period = limit.label or "total"
    if limit.resets_at:
        when = f"it resets at {iso_utc(limit.resets_at)}"
    else:
        when = "it does not reset (period = \"total\")"
    per = "in total" if period == "total" else f"per {period}"
    return f"Budget exceeded for {limit.owner}: {amount} {per} is spent; {when}."


def iso_utc(ts: float) -> str:
    """A wall-clock time as RFC 3339 in UTC, to the second."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _headers(limits: Sequence[Limit], remaining: Sequence[int],
             reset_s: Sequence[float]) -> dict[str, str]:
    """x-ratelimit-* headers as OpenAI sends them, from the provider scope's limits (a
    deployment's own limits, more specific, win over its provider's)."""
    out: dict[str, str] = {}
    for limit, left, reset in zip(limits, remaining, reset_s, strict=False):
        if limit.name not in ("requests", "tokens") or not limit.key.startswith(
                ("provider:", "deployment:", "key:")):
            continue
        suffix = "requests" if limit.name == "requests" else "tokens"
        out[f"x-ratelimit-limit-{suffix}"] = str(limit.amount)
        out[f"x-ratelimit-remaining-{suffix}"] = str(left)
        out[f"x-ratelimit-reset-{suffix}"] = format_reset(reset)
    return out


# --- offline token estimate ----------------------------------------------------------

_IMAGE_TOKENS = 765  # OpenAI's cost of a 1024x1024 high-detail image: an upper bound
_json = msgspec.json.Encoder()


def _part_chars(part: object, images: list[int]) -> int:
    if isinstance(part, (Text, Refusal)):
        return len(part.text)
    if isinstance(part, Image):
        images[0] += 1
        return 0
    if isinstance(part, ToolCall):
        return len(part.name) + len(part.arguments)
    if isinstance(part, ToolResult):
        return sum(_part_chars(p, images) for p in part.content)
    if isinstance(part, Reasoning):
        return len(part.text)
    if isinstance(part, (File, Opaque)):
        return 256
    return 0


def estimate_prompt_tokens(conversation: Conversation) -> int:
    """Roughly four characters a token (OpenAI's rule of thumb for English), four tokens of
    framing per message, tool schemas by their JSON size, a fixed cost per image. No
    tokenizer file is needed; settlement corrects the estimate with the real usage."""
    chars = 0
    images = [0]
    for m in conversation.messages:
        for part in m.parts:
            chars += _part_chars(part, images)
    for tool in conversation.tools:
        if isinstance(tool, FunctionTool):
            chars += len(tool.name) + len(tool.description or "")
            if tool.parameters is not None:
                chars += len(_json.encode(tool.parameters))
        else:
            chars += 256
    return chars // 4 + 4 * len(conversation.messages) + 3 + _IMAGE_TOKENS * images[0]
