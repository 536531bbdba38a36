"""Stored responses behind ``POST /v1/responses``: what ``previous_response_id``,
``GET /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and
``DELETE /v1/responses/{id}`` read, in process memory or in a Redis shared by every worker.

The gateway always expands ``previous_response_id`` itself, on every provider, and never
forwards it upstream. Failover may move a conversation from one provider to another between
turns (or within one turn), and a provider reached through translation (Chat Completions,
Anthropic Messages) keeps no server-side state at all; even OpenAI's own store only knows the
responses OpenAI itself produced. So a turn's request carries the whole conversation:
``conversation_items(previous)`` followed by the turn's own input. ``instructions`` are not
part of the stored items: like OpenAI, a new turn's instructions replace the previous ones.
A request with ``store: false`` is simply never ``put``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec
import structlog

from gateway_core.config import ResponsesConfig
from gateway_core.errors import ServiceUnavailable
from gateway_llm.redis_client import bounded_redis, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "ResponseStoreUnavailable",
    "StoredResponse",
    "conversation_items",
    "store_from_config",
]

log = structlog.get_logger("gateway.responses_store")

_T = TypeVar("_T")


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One stored turn. Unknown fields are tolerated on decode, so an older worker reads
    what a newer one wrote (rolling upgrades share one Redis)."""

    id: str
    # Unix seconds, the Response object's created_at.
    created_at: int
    # The whole Response object exactly as the client received it (JSON), embedded as is.
    response: msgspec.Raw
    # This turn's input normalised to items, after expanding previous_response_id: the full
    # conversation input of the turn, what GET .../input_items lists.
    input_items: list[dict[str, object]]
    # The Response's output items.
    output_items: list[dict[str, object]]
    # The alias the client asked for, not the upstream model that answered.
    model: str
    previous_response_id: str | None = None


# One codec for both stores: the memory store keeps encoded bytes too, so an item that Redis
# could not hold fails the same way in memory, and nobody can mutate a stored entry through
# a list they still hold.
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(StoredResponse).decode


def conversation_items(stored: StoredResponse) -> list[dict[str, object]]:
    """What a turn with ``previous_response_id=stored.id`` puts before its own input."""
    return [*stored.input_items, *stored.output_items]


class ResponseStoreUnavailable(ServiceUnavailable):
    """The response store (Redis) did not answer within its timeout. The message names
    neither the URL nor any password."""

    code = "response_store_unavailable"


class ResponseStore(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def get(self, id: str) -> StoredResponse | None:
        """The stored response, or None when unknown, deleted or expired."""
        ...

    async def put(self, item: StoredResponse) -> None:
        """Store (or replace) ``item`` under ``item.id`` for max_age_s."""
        ...

    async def delete(self, id: str) -> bool:
        """Remove ``id``; False when it was not there."""
        ...

    def health(self) -> dict[str, object]: ...


class MemoryResponseStore:
    """One process's stored responses, bounded by count (the oldest is evicted first) and
    by age (an expired entry is never returned). No method awaits, so each is atomic under
    asyncio; it is not meant to be shared between threads."""

    def __init__(self, max_items: int = 10000, max_age_s: float = 86400.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_items = max_items
        self.max_age_s = max_age_s
        self.clock = clock
        # id -> (expires at, encoded StoredResponse), oldest first. Every entry lives the
        # same max_age_s, so insertion order is also expiry order: pruning pops the front.
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._items.clear()

    def _prune(self, now: float) -> None:
        items = self._items
        while items:
            key, (expires, _) = next(iter(items.items()))
            if expires > now:
                break
            del items[key]

    async def get(self, id: str) -> StoredResponse | None:
        now = self.clock()
        self._prune(now)
        entry = self._items.get(id)
        if entry is None or entry[0] <= now:  # the second test covers a clock gone back
            return None
        return _decode(entry[1])

    async def put(self, item: StoredResponse) -> None:
        blob = _encode(item)
        now = self.clock()
        self._prune(now)
        # A replaced id moves to the back: its life starts again.
        self._items.pop(item.id, None)
        self._items[item.id] = (now + self.max_age_s, blob)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    async def delete(self, id: str) -> bool:
        self._prune(self.clock())
        return self._items.pop(id, None) is not None

    def __len__(self) -> int:
        self._prune(self.clock())
        return len(self._items)

    def health(self) -> dict[str, object]:
        return {"backend": "memory", "healthy": True, "items": len(self)}


class RedisResponseStore:
    """Stored responses shared by every worker and replica using one Redis: one key per
    response (``gw:resp:<id>``) holding the JSON-encoded StoredResponse, expiring after
    max_age_s. Every call is bounded by ``timeout_s``; a failure raises
    ResponseStoreUnavailable."""

    def __init__(self, url: str, *, timeout_s: float = 0.5, max_age_s: float = 86400.0,
                 key_prefix: str = "gw:resp:") -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.url = url
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.key_prefix = key_prefix
        self._client: Redis | None = None
        self._errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        self.last_error: str | None = None

    def __repr__(self) -> str:
        # The URL may carry a password.
        return f"RedisResponseStore(url='***', timeout_s={self.timeout_s!r})"

    async def start(self) -> None:
        self._client = bounded_redis(self.url, self.timeout_s,
                                     needed_for='llm.responses.store = "redis"')
        self._errors = redis_errors()
        # Readiness should say at once when Redis is unreachable (_call logs it and keeps
        # it in last_error); serving goes on anyway, only stored responses need it.
        with contextlib.suppress(ResponseStoreUnavailable):
            await self._call(lambda client: client.ping())

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            await client.connection_pool.disconnect()

    def _key(self, id: str) -> str:
        return self.key_prefix + id

    async def _call(self, op: Callable[[Redis], Awaitable[_T]]) -> _T:
        client = self._client
        if client is None:
            raise ResponseStoreUnavailable("The response store was not started.")
        try:
            # Waiting for a pooled connection and the command itself may each take up to
            # timeout_s; this bounds both together, whatever state the server is in.
            async with asyncio.timeout(self.timeout_s * 2):
                result = await op(client)
        except self._errors as exc:
            if self.last_error is None:
                log.error("responses_store_unavailable", error=type(exc).__name__)
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise ResponseStoreUnavailable(
                f"The response store is unavailable ({type(exc).__name__}); "
                "try again shortly.") from None
        if self.last_error is not None:
            log.info("responses_store_recovered")
            self.last_error = None
        return result

    async def get(self, id: str) -> StoredResponse | None:
        key = self._key(id)
        blob = await self._call(lambda client: client.get(key))
        if blob is None:
            return None
        try:
            return _decode(blob)
        except msgspec.DecodeError as exc:
            # Not ours or from an incompatible version: answer "not found" rather than fail
            # every read of it, and say so.
            log.warning("responses_store_bad_entry", id=id, error=str(exc))
            return None

    async def put(self, item: StoredResponse) -> None:
        key, blob = self._key(item.id), _encode(item)
        ttl_ms = max(1, math.ceil(self.max_age_s * 1000))
        await self._call(lambda client: client.set(key, blob, px=ttl_ms))

    async def delete(self, id: str) -> bool:
        key = self._key(id)
        removed = await self._call(lambda client: client.delete(key))
        return bool(removed)

    def health(self) -> dict[str, object]:
        return {"backend": "redis", "healthy": self.last_error is None,
                "last_error": self.last_error}


def store_from_config(config: ResponsesConfig) -> ResponseStore:
    """The store ``[llm.responses]`` asks for; the app's lifespan starts and closes it."""
    if config.store == "redis":
        return RedisResponseStore(config.redis_url, timeout_s=config.redis_timeout_s,
                                  max_age_s=config.max_age_s)
    return MemoryResponseStore(config.max_items, config.max_age_s)
