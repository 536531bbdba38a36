"""Limit state in Redis, shared by every worker and host: the GCRA of ``gcra.py`` run as
Lua scripts, so each check-and-charge over all limits of a scope is one atomic step.

- Time comes from Redis ``TIME`` inside the script, so hosts with skewed clocks still share
  one timeline. Tests may inject a clock instead; its value is then passed as ``ARGV[1]``
  (milliseconds) and the script uses it.
- Keys are ``<prefix>{<scope>}:<limit>`` holding the TAT in milliseconds. The hash tag puts
  all limits of a scope in one Redis Cluster slot. Each key gets a PEXPIRE of its remaining
  debt plus a second: a key that has expired is exactly a full bucket.
- Scripts are sent once (``SCRIPT LOAD``) and run by ``EVALSHA``; redis-py's Script reloads
  them on ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``).
- Every call is bounded by ``timeout_s`` and raises ``LimitStoreUnavailable`` on any
  failure; the caller decides whether to fail open. A call that timed out may still have
  been applied by Redis (the command was sent): that over-counts, the safe direction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway_llm.limits.gcra import (
    LimitName,
    LimitState,
    LimitStoreUnavailable,
    Outcome,
    Rejection,
    Reservation,
    state_of,
    too_large,
)
from gateway_llm.limits.gcra import Limit

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Shared prologue: "now" in ms from ARGV[1] when given, else from the server clock.
_NOW = """
-- Redis 3.2-4 replicate scripts verbatim and refuse writes after TIME unless told to
-- replicate effects; from 5 on this is the default (and a no-op in 7).
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function fmt(x) return string.format('%.17g', x) end
local function store(key, tat)
  local ttl = math.ceil(tat - now)
  if ttl <= 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, fmt(tat), 'PX', ttl + 1000)
  end
end
"""

# KEYS[i]: one per limit. ARGV[1]: now or ''. Per limit i (base = 1 + 3*(i-1)):
# ARGV[base+1] interval ms, ARGV[base+2] period ms, ARGV[base+3] cost.
# Returns {admitted, index of the limit with the longest wait (0 if none), wait ms, now,
# tat after (or before, when rejected) for each limit}.
_RESERVE = _NOW + """
local n = #KEYS
local new = {}
local old = {}
local worst, worst_wait = 0, 0
for i = 1, n do
  local base = 1 + 3 * (i - 1)
  local interval = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  old[i] = tat
  new[i] = tat + cost * interval
  local wait = new[i] - period - now
  if wait > 1e-6 and wait > worst_wait then
    worst, worst_wait = i, wait
  end
end
local out = {}
if worst == 0 then
  for i = 1, n do store(KEYS[i], new[i]) end
  out = {1, 0, '0', fmt(now)}
  for i = 1, n do out[4 + i] = fmt(new[i]) end
else
  out = {0, worst, fmt(worst_wait), fmt(now)}
  for i = 1, n do out[4 + i] = fmt(old[i]) end
end
return out
"""

# Same KEYS; per limit ARGV[base+1] interval ms, ARGV[base+2] delta (units, may be < 0).
_ADJUST = _NOW + """
for i = 1, #KEYS do
  local base = 1 + 2 * (i - 1)
  local interval = tonumber(ARGV[base + 1])
  local delta = tonumber(ARGV[base + 2])
  if delta ~= 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if delta > 0 then
      if tat < now then tat = now end
      store(KEYS[i], tat + delta * interval)
    else
      store(KEYS[i], math.max(tat + delta * interval, now))
    end
  end
end
return 1
"""

# Returns {now, tat or '' for each key}.
_SNAPSHOT = _NOW + """
local out = {fmt(now)}
for i = 1, #KEYS do
  out[i + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
"""


def _ms(lim: Limit) -> Limit:
    """The limit in milliseconds, the unit of the scripts."""
    return Limit(lim.name, lim.capacity, lim.period_s * 1000)


def _states_ms(limits: Sequence[Limit], tats: Sequence[float], now_ms: float) -> tuple[LimitState, ...]:
    out = []
    for lim, tat in zip(limits, tats):
        s = state_of(_ms(lim), tat, now_ms)
        out.append(LimitState(s.name, s.limit, s.remaining, s.reset_s / 1000))
    return tuple(out)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisLimitStore:
    """GCRA limits shared through one Redis. Needs the ``redis`` extra (``gateway-llm[redis]``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.25,
        key_prefix: str = "gateway:rl:",
        clock: Callable[[], float] | None = None,
        max_connections: int = 64,
    ) -> None:
        self._url = url
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        self._clock = clock
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._healthy = False
        self._last_error: str | None = "not started"

    @property
    def healthy(self) -> bool:
        """Whether the last call reached Redis; readiness reports it."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def start(self) -> None:
        """Connect and load the scripts. Redis being down is recorded, not raised: the
        gateway still starts, and each call tries again."""
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise ImportError("rate_limit.backend = \"redis\" needs the redis client: "
                              "install gateway-llm[redis]") from exc

        # A blocking pool: a burst of more concurrent calls than connections queues for a
        # connection (inside the same timeout) instead of failing with "Too many connections".
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self._url,
            max_connections=self.max_connections,
            timeout=self.timeout_s,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            # One attempt: the caller's deadline is timeout_s, not retries x timeout_s.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client = redis.asyncio.Redis.from_pool(pool)
        for name, src in (("reserve", _RESERVE), ("adjust", _ADJUST), ("snapshot", _SNAPSHOT)):
            self._scripts[name] = self._client.register_script(src)
        try:
            await self._bounded(self._load)
        except LimitStoreUnavailable:
            pass

    async def _load(self) -> None:
        assert self._client is not None
        for script in self._scripts.values():
            await self._client.script_load(script.script)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        self._healthy = False
        self._last_error = "closed"

    async def _bounded(self, call: Callable[[], Awaitable[Any]]) -> Any:
        from redis.exceptions import RedisError

        if self._client is None:
            raise LimitStoreUnavailable("the Redis limit store is not started")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._healthy = False
            # redis-py messages name host and port, never the password of the URL.
            self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise LimitStoreUnavailable(f"Redis limit store unavailable ({self._last_error})") from exc
        self._healthy = True
        self._last_error = None
        return result

    def _keys(self, scope: str, limits: Sequence[Limit]) -> list[str]:
        return [f"{self.key_prefix}{{{scope}}}:{lim.name}" for lim in limits]

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock() * 1000)

    async def _run(self, name: str, keys: list[str], args: list[str]) -> list[Any]:
        script = self._scripts.get(name)
        if script is None or self._client is None:
            raise LimitStoreUnavailable("the Redis limit store is not started")
        client = self._client

        async def call() -> Any:
            return await script(keys=keys, args=args, client=client)

        result = await self._bounded(call)
        return list(result) if isinstance(result, list) else [result]

    async def reserve(self, scope: str, limits: Sequence[Limit], tokens: int) -> Outcome:
        big = too_large(scope, limits, tokens)
        if big is not None:
            return big
        if not limits:
            return Reservation(scope, (), tokens, ())
        args = [self._now_arg()]
        for lim in limits:
            m = _ms(lim)
            args += [repr(m.interval_s), repr(m.period_s), str(lim.cost(tokens))]
        res = await self._run("reserve", self._keys(scope, limits), args)
        admitted, worst, wait_ms, now_ms = int(res[0]), int(res[1]), float(_text(res[2])), float(_text(res[3]))
        tats = [float(_text(v)) for v in res[4:]]
        states = _states_ms(limits, tats, now_ms)
        if admitted:
            return Reservation(scope, tuple(limits), tokens, states)
        name: LimitName = limits[worst - 1].name
        return Rejection(scope, name, wait_ms / 1000, states)

    async def _adjust(self, scope: str, limits: Sequence[Limit], requests: int, tokens: int) -> None:
        if not limits:
            return
        args = [self._now_arg()]
        for lim in limits:
            args += [repr(_ms(lim).interval_s), str(requests if lim.name == "requests" else tokens)]
        await self._run("adjust", self._keys(scope, limits), args)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        await self._adjust(reservation.scope, reservation.limits, 0,
                           actual_tokens - reservation.tokens)

    async def release(self, reservation: Reservation) -> None:
        await self._adjust(reservation.scope, reservation.limits, -1, -reservation.tokens)

    async def snapshot(self, scope: str, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        if not limits:
            return ()
        res = await self._run("snapshot", self._keys(scope, limits), [self._now_arg()])
        now_ms = float(_text(res[0]))
        tats = [float(_text(v)) if _text(v) else now_ms for v in res[1:]]
        return _states_ms(limits, tats, now_ms)
