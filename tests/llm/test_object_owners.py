"""Which provider holds an object created through the pass-through: the memory notes'
bounds and expiry, the Redis notes shared between two clients of one real redis-server,
and an unreachable Redis answering "unknown" (the default provider) instead of failing."""

from __future__ import annotations

import asyncio

from gateway_core.config import LLMConfig, RateLimitConfig, ResponsesConfig
from gateway_llm.object_owners import (
    MemoryObjectOwners,
    RedisObjectOwners,
    owners_from_config,
)
from tests.gateway_process import free_port
from tests.redis_fixture import redis_server


def test_memory_notes_are_bounded_and_expire() -> None:
    now = [0.0]
    owners = MemoryObjectOwners(max_items=2, max_age_s=10, clock=lambda: now[0])

    async def run() -> None:
        await owners.note("file-a", "other")
        await owners.note("file-b", "third")
        assert await owners.owner(["nothing", "file-b"]) == "third"
        await owners.note("file-c", "other")  # file-a is the oldest: forgotten
        assert await owners.owner(["file-a"]) is None
        now[0] = 11.0
        assert await owners.owner(["file-b", "file-c"]) is None

    asyncio.run(run())


def test_redis_notes_are_shared_between_workers() -> None:
    with redis_server() as redis:
        async def run() -> None:
            a, b = RedisObjectOwners(redis.url), RedisObjectOwners(redis.url)
            await a.start()
            await b.start()
            try:
                await a.note("batch_1", "other")
                assert await b.owner(["vs_9", "batch_1"]) == "other"
                assert await b.owner(["vs_9"]) is None
                assert b.health()["healthy"] is True
            finally:
                await a.aclose()
                await b.aclose()

        asyncio.run(run())


def test_unreachable_redis_means_unknown_not_an_error() -> None:
    async def run() -> None:
        owners = RedisObjectOwners(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        await owners.start()
        try:
            await owners.note("file-a", "other")
            assert await owners.owner(["file-a"]) is None
            health = owners.health()
            assert health["healthy"] is False and health["last_error"]
        finally:
            await owners.aclose()

    asyncio.run(run())


def test_redis_when_the_response_store_or_the_limiter_uses_it() -> None:
    assert isinstance(owners_from_config(LLMConfig(), RateLimitConfig()), MemoryObjectOwners)
    llm = LLMConfig(responses=ResponsesConfig(store="redis"))
    assert isinstance(owners_from_config(llm, RateLimitConfig()), RedisObjectOwners)
    rl = RateLimitConfig(enabled=True, backend="redis")
    assert isinstance(owners_from_config(LLMConfig(), rl), RedisObjectOwners)
