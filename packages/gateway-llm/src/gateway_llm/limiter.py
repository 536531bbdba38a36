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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

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
)

__all__ = [
    "Admission",
    "Decision",
    "Denied",
    "Limit",
    "LimitName",
    "LimitStore",
    "LimitStoreUnavailable",
    "MemoryLimitStore",
    "RateLimiter",
    "RedisLimitStore",
    "estimate_prompt_tokens",
    "format_reset",
]

log = structlog.get_logger("gateway.limits")

LimitName = Literal["requests", "tokens", "tokens_day"]
_WINDOWS: dict[LimitName, float] = {"requests": 60.0, "tokens": 60.0, "tokens_day": 86400.0}


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # store key, e.g. "provider:openai:tokens"
    name: LimitName
    amount: int
    window_s: float

    @property
    def interval(self) -> float:
        return self.window_s / self.amount


@dataclass(slots=True)
class Decision:
    admitted: bool
    # Per limit, after the decision: units left now and seconds until fully replenished.
    remaining: list[int] = field(default_factory=list)
    reset_s: list[float] = field(default_factory=list)
    denied_index: int = -1
    retry_after_s: float = 0.0


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

    def health(self) -> dict[str, object]: ...


def _gcra(tat: float, now: float, limit: Limit, cost: int) -> tuple[bool, float, float]:
    """(admitted, new tat, retry after) for one limit."""
    base = max(tat, now)
    new_tat = base + cost * limit.interval
    allow_at = new_tat - limit.window_s
    if allow_at <= now:
        return True, new_tat, 0.0
    return False, tat, allow_at - now


def _remaining(ahead: float, limit: Limit) -> int:
    """Units still free when the TAT is ``ahead`` seconds in the future."""
    left = int((limit.window_s - max(0.0, ahead)) / limit.interval + 1e-9)
    return max(0, min(limit.amount, left))


class MemoryLimitStore:
    """One process's budgets. Each call runs without awaiting, so it is atomic under
    asyncio."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._tat.clear()

    async def reserve(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision:
        now = self.clock()
        new: list[float] = []
        for i, (limit, cost) in enumerate(zip(limits, costs, strict=False)):
            ok, tat, retry = _gcra(self._tat.get(limit.key, now), now, limit, cost)
            if not ok:
                decision = Decision(False, denied_index=i, retry_after_s=retry)
                self._fill(decision, limits, now)
                return decision
            new.append(tat)
        for limit, tat in zip(limits, new, strict=False):
            self._tat[limit.key] = tat
        decision = Decision(True)
        self._fill(decision, limits, now)
        return decision

    def _fill(self, decision: Decision, limits: Sequence[Limit], now: float) -> None:
        for limit in limits:
            ahead = max(0.0, self._tat.get(limit.key, now) - now)
            decision.remaining.append(_remaining(ahead, limit))
            decision.reset_s.append(ahead)

    async def adjust(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        now = self.clock()
        for limit, delta in zip(limits, deltas, strict=False):
            # From now, like the Redis script: a TAT in the past means a full bucket.
            tat = max(self._tat.get(limit.key, now), now) + delta * limit.interval
            self._tat[limit.key] = max(tat, now)

    def health(self) -> dict[str, object]:
        return {"backend": "memory", "healthy": True}


# The same GCRA in Lua, over every limit of a reservation at once. Times in milliseconds
# from Redis' own clock (so every gateway host agrees), unless the caller passes now_ms.
_RESERVE = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local n = #KEYS
local new = {}
for i = 1, n do
  local interval = tonumber(ARGV[1 + (i - 1) * 3 + 1])
  local window = tonumber(ARGV[1 + (i - 1) * 3 + 2])
  local cost = tonumber(ARGV[1 + (i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local nt = tat + cost * interval
  if nt - window > now then
    local out = {0, i, tostring(nt - window - now)}
    for j = 1, n do
      local t2 = tonumber(redis.call('GET', KEYS[j]) or now)
      table.insert(out, tostring(math.max(0, t2 - now)))
    end
    return out
  end
  new[i] = nt
end
local out = {1, 0, '0'}
for i = 1, n do
  local window = tonumber(ARGV[1 + (i - 1) * 3 + 2])
  redis.call('SET', KEYS[i], tostring(new[i]), 'PX', math.ceil(new[i] - now + window))
  table.insert(out, tostring(new[i] - now))
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
  local interval = tonumber(ARGV[1 + (i - 1) * 3 + 1])
  local window = tonumber(ARGV[1 + (i - 1) * 3 + 2])
  local delta = tonumber(ARGV[1 + (i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tat = math.max(now, tat + delta * interval)
  redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil(tat - now + window))
end
return 1
"""


class RedisLimitStore:
    """Budgets shared by every process and host using one Redis. Each operation is one
    server-side script, so a reservation over several limits is atomic; keys expire once
    their window has passed. Every call is bounded by ``timeout_s``."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, key_prefix: str = "agw:rl:",
                 clock: Callable[[], float] | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        self.clock = clock
        self._client: object | None = None
        self._reserve: object | None = None
        self._adjust: object | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        import redis.asyncio as aioredis

        # A blocking pool: a burst waits (up to the timeout) for a free connection instead
        # of failing with "too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=64, timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
        )
        client = aioredis.Redis(connection_pool=pool)
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._adjust = client.register_script(_ADJUST)
        # Readiness should say at once when Redis is unreachable; serving goes on anyway.
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                await client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure here only means "not healthy"
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("ratelimit_store_unreachable_at_start", error=self.last_error)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()  # type: ignore[attr-defined]
            await client.connection_pool.disconnect()  # type: ignore[attr-defined]

    def _now_ms(self) -> float:
        return -1.0 if self.clock is None else self.clock() * 1000

    def _args(self, limits: Sequence[Limit], amounts: Sequence[int]) -> tuple[list[str], list[str]]:
        keys = [self.key_prefix + limit.key for limit in limits]
        args = [repr(self._now_ms())]
        for limit, amount in zip(limits, amounts, strict=False):
            args += [repr(limit.interval * 1000), repr(limit.window_s * 1000), str(amount)]
        return keys, args

    async def _call(self, script: object, keys: list[str], args: list[str]) -> list[object]:
        if script is None:
            raise LimitStoreUnavailable("the Redis limit store was not started")
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                result = await script(keys=keys, args=args)  # type: ignore[operator]
        except (TimeoutError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise LimitStoreUnavailable(self.last_error) from None
        except Exception as exc:  # redis-py's own connection errors; anything else re-raised
            if type(exc).__module__.startswith("redis"):
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise LimitStoreUnavailable(self.last_error) from None
            raise
        self.last_error = None
        return list(result) if isinstance(result, list) else [1]

    async def reserve(self, limits: Sequence[Limit], costs: Sequence[int]) -> Decision:
        keys, args = self._args(limits, costs)
        out = await self._call(self._reserve, keys, args)
        admitted = int(out[0]) == 1  # type: ignore[call-overload]
        aheads = [float(x) / 1000 for x in out[3:]]  # type: ignore[arg-type]
        decision = Decision(admitted, denied_index=int(out[1]) - 1,  # type: ignore[call-overload]
                            retry_after_s=float(out[2]) / 1000)  # type: ignore[arg-type]
        for limit, ahead in zip(limits, aheads, strict=False):
            decision.remaining.append(_remaining(ahead, limit))
            decision.reset_s.append(ahead)
        return decision

    async def adjust(self, limits: Sequence[Limit], deltas: Sequence[int]) -> None:
        keys, args = self._args(limits, deltas)
        await self._call(self._adjust, keys, args)

    def health(self) -> dict[str, object]:
        return {"backend": "redis", "healthy": self.last_error is None,
                "last_error": self.last_error}


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


@dataclass(slots=True)
class Denied:
    provider: str
    limit: LimitName
    retry_after_s: float
    message: str
    too_large: bool = False
    store_unavailable: bool = False
    headers: dict[str, str] = field(default_factory=dict)


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
                 fail_open: bool = True, default_completion_tokens: int = 1024) -> None:
        self.scopes = scopes
        self.store = store
        self.fail_open = fail_open
        self.default_completion_tokens = default_completion_tokens
        self.degraded_since: float | None = None

    @classmethod
    def from_config(
        cls, rl: RateLimitConfig, providers: dict[str, ProviderConfig],
        models: dict[str, ModelConfig], *, store: LimitStore | None = None,
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
                   default_completion_tokens=rl.default_completion_tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.scopes)

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    def estimate(self, request: LLMRequest) -> int:
        """Tokens to reserve: the prompt estimate plus the output the request may use."""
        out = request.max_output_tokens
        if out is None:
            out = self.default_completion_tokens
        n = max(1, request.n)
        return estimate_prompt_tokens(request.conversation()) + out * n

    async def acquire(self, provider: str, alias: str | None, tokens: int, *,
                      deployment: str | None = None) -> Admission | Denied:
        limits = list(self.scopes.get(f"provider:{provider}", ()))
        if alias is not None:
            limits += self.scopes.get(f"model:{alias}", ())
        if deployment is not None:
            limits += self.scopes.get(f"deployment:{deployment}", ())
        if not limits:
            return Admission([], [], tokens, provider, [], [])
        for limit in limits:
            if limit.name != "requests" and tokens > limit.amount:
                return Denied(provider, limit.name, 0.0, too_large=True, message=(
                    f"This request needs an estimated {tokens} tokens, more than the "
                    f"{limit.amount} {_describe(limit)} allowed for {_owner(limit, provider)}; "
                    "reduce the prompt or max_tokens."))
        costs = [1 if limit.name == "requests" else tokens for limit in limits]
        try:
            decision = await self.store.reserve(limits, costs)
        except LimitStoreUnavailable as exc:
            if self.degraded_since is None:
                self.degraded_since = time.time()
                log.error("ratelimit_store_unavailable", error=str(exc),
                          fail_open=self.fail_open)
            if self.fail_open:
                return Admission(limits, costs, tokens, provider, [], [], degraded=True)
            return Denied(provider, "requests", 1.0, store_unavailable=True,
                          message="The rate-limit store is unavailable; try again shortly.")
        if self.degraded_since is not None:
            log.info("ratelimit_store_recovered")
            self.degraded_since = None
        if decision.admitted:
            return Admission(limits, costs, tokens, provider, decision.remaining,
                             decision.reset_s)
        limit = limits[decision.denied_index]
        denied = Denied(provider, limit.name, decision.retry_after_s, message=(
            f"Rate limit reached for {_owner(limit, provider)}: {limit.amount} "
            f"{_describe(limit)}. "
            f"Try again in {format_reset(decision.retry_after_s)}."))
        denied.headers = _headers(limits, decision.remaining, decision.reset_s)
        return denied

    async def settle(self, admission: Admission, actual_tokens: int | None) -> None:
        """Charge what the provider reported instead of the estimate."""
        if admission.settled or not admission.limits:
            return
        admission.settled = True
        if actual_tokens is None:
            return
        delta = actual_tokens - admission.tokens
        if delta == 0:
            return
        deltas = [0 if limit.name == "requests" else delta for limit in admission.limits]
        # Already logged by acquire's path; the budget is approximate meanwhile.
        with contextlib.suppress(LimitStoreUnavailable):
            await self.store.adjust(admission.limits, deltas)

    async def release(self, admission: Admission) -> None:
        """Give everything back: the request never reached the provider."""
        if admission.settled or not admission.limits:
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
    return [Limit(f"{scope}:{name}", name, amount, _WINDOWS[name])
            for name, amount in amounts.items() if amount]


def _owner(limit: Limit, provider: str) -> str:
    """Whose budget a limit is, for messages: the provider, or a deployment by name."""
    if limit.key.startswith("deployment:"):
        return "deployment " + limit.key[len("deployment:"):].rsplit(":", 1)[0]
    return provider


def _describe(limit: Limit) -> str:
    return {"requests": "requests per minute", "tokens": "tokens per minute",
            "tokens_day": "tokens per day"}[limit.name]


def _headers(limits: Sequence[Limit], remaining: Sequence[int],
             reset_s: Sequence[float]) -> dict[str, str]:
    """x-ratelimit-* headers as OpenAI sends them, from the provider scope's limits (a
    deployment's own limits, more specific, win over its provider's)."""
    out: dict[str, str] = {}
    for limit, left, reset in zip(limits, remaining, reset_s, strict=False):
        if limit.name == "tokens_day" or not limit.key.startswith(("provider:",
                                                                    "deployment:")):
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
