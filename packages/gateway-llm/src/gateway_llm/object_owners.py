"""Which provider holds an object created through the pass-through (a file, a batch, a vector
store, ...), so that later calls naming its id go back to that provider: in process memory,
or in a Redis shared by every worker and replica (the one the response store or the rate
limiter already uses). Only objects created away from the default pass-through provider are
noted; an unknown id goes to the default one."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog

from gateway_core.config import LLMConfig, RateLimitConfig
from gateway_llm.redis_client import bounded_redis, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "MemoryObjectOwners",
    "ObjectOwners",
    "RedisObjectOwners",
    "owners_from_config",
]

log = structlog.get_logger("gateway.object_owners")

_T = TypeVar("_T")
# Objects at a provider (files, vector stores) live for months; the note lives this long.
MAX_AGE_S = 90 * 86400.0


class ObjectOwners(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def note(self, object_id: str, provider: str) -> None:
        """Remember that ``provider`` holds ``object_id``."""
        ...

    async def owner(self, ids: Sequence[str]) -> str | None:
        """The provider holding the first of ``ids`` that is known, or None."""
        ...

    def health(self) -> dict[str, object]: ...


class MemoryObjectOwners:
    """One process's notes, bounded by count (oldest forgotten first) and age."""

    def __init__(self, max_items: int = 50_000, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.max_age_s = max_age_s
        self.clock = clock
        self._owner: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._owner.clear()

    async def note(self, object_id: str, provider: str) -> None:
        self._owner.pop(object_id, None)
        self._owner[object_id] = (self.clock() + self.max_age_s, provider)
        while len(self._owner) > self.max_items:
            self._owner.popitem(last=False)

    async def owner(self, ids: Sequence[str]) -> str | None:
        now = self.clock()
        for i in ids:
            entry = self._owner.get(i)
            if entry is not None and entry[0] > now:
                return entry[1]
        return None

    def health(self) -> dict[str, object]:
        return {"backend": "memory", "healthy": True, "items": len(self._owner)}


class RedisObjectOwners:
    """Notes shared through Redis: one key per object id (``gw:owner:<id>`` → provider name),
    expiring after max_age_s. A Redis that does not answer within ``timeout_s`` is logged
    and the call goes to the default provider (an unknown id): routing never fails on it."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, max_age_s: float = MAX_AGE_S,
                 key_prefix: str = "gw:owner:") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.key_prefix = key_prefix
        self._client: Redis | None = None
        self._errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"RedisObjectOwners(url='***', timeout_s={self.timeout_s!r})"

    async def start(self) -> None:
        self._client = bounded_redis(self.url, self.timeout_s, max_connections=32)
        self._errors = redis_errors()
        await self._call(lambda client: client.ping())

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            await client.connection_pool.disconnect()

    async def _call(self, op: Callable[[Redis], Awaitable[_T]]) -> _T | None:
        client = self._client
        if client is None:
            return None
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                result = await op(client)
        except self._errors as exc:
            if self.last_error is None:
                log.error("object_owners_unavailable", error=type(exc).__name__)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        if self.last_error is not None:
            log.info("object_owners_recovered")
            self.last_error = None
        return result

    async def note(self, object_id: str, provider: str) -> None:
        key = self.key_prefix + object_id
        ttl_ms = max(1, int(self.max_age_s * 1000))
        await self._call(lambda client: client.set(key, provider, px=ttl_ms))

    async def owner(self, ids: Sequence[str]) -> str | None:
        if not ids:
            return None
        keys = [self.key_prefix + i for i in ids]
        found = await self._call(lambda client: client.mget(keys))
        for value in found or ():
            if value is not None:
                return value.decode() if isinstance(value, bytes) else str(value)
        return None

    def health(self) -> dict[str, object]:
        return {"backend": "redis", "healthy": self.last_error is None,
                "last_error": self.last_error}


def owners_from_config(llm: LLMConfig, rate_limit: RateLimitConfig) -> ObjectOwners:
    """Redis when the response store or the rate limiter uses one (that Redis), memory
    otherwise."""
    if llm.responses.store == "redis":
        return RedisObjectOwners(llm.responses.redis_url,
                                 timeout_s=llm.responses.redis_timeout_s)
    if rate_limit.enabled and rate_limit.backend == "redis":
        return RedisObjectOwners(rate_limit.redis_url, timeout_s=rate_limit.redis_timeout_s)
    return MemoryObjectOwners()
