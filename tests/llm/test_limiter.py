"""Rate limits: GCRA budgets in memory (with an injected clock) and in a real Redis,
exact under concurrency, shared across processes, failing open or closed without Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import msgspec
import pytest

from gateway_core.config import ModelConfig, ProviderConfig, RateLimitConfig
from gateway_core.openai_types import ChatCompletionRequest
from gateway_llm.dialects.chat import CHAT
from gateway_llm.limiter import (
    Admission,
    Decision,
    Denied,
    Limit,
    MemoryLimitStore,
    RateLimiter,
    RedisLimitStore,
    estimate_prompt_tokens,
    format_reset,
)
from gateway_llm.redis_pipe import RedisPipe
from tests.redis_fixture import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def limiter(store: object, *, rpm: int | None = None, tpm: int | None = None,
            tpd: int | None = None, alias_rpm: int | None = None,
            fail_open: bool = True) -> RateLimiter:
    providers = {"p": ProviderConfig(kind="openai", base_url="http://x", rpm=rpm, tpm=tpm,
                                     tpd=tpd)}
    models = {"m": ModelConfig(provider="p", rpm=alias_rpm)}
    rl = RateLimitConfig(enabled=True, fail_open=fail_open)
    return RateLimiter.from_config(rl, providers, models, store=store)  # type: ignore[arg-type]


async def test_requests_per_minute_rolls_without_boundary_burst() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), rpm=6)
    results = [await rl.acquire("p", None, 0) for _ in range(8)]
    assert [isinstance(r, Admission) for r in results] == [True] * 6 + [False] * 2
    denied = results[-1]
    assert isinstance(denied, Denied) and denied.limit == "requests"
    assert denied.retry_after_s == pytest.approx(10.0)  # one request back every 10 s
    assert denied.headers["x-ratelimit-remaining-requests"] == "0"
    # Crossing a minute boundary gives nothing extra: capacity returns at 6/min only.
    clock.now += 10
    assert isinstance(await rl.acquire("p", None, 0), Admission)
    assert isinstance(await rl.acquire("p", None, 0), Denied)
    clock.now += 60
    admitted = [isinstance(await rl.acquire("p", None, 0), Admission) for _ in range(7)]
    assert admitted == [True] * 6 + [False]


async def test_tokens_reserve_settle_and_release() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), tpm=1000)
    a = await rl.acquire("p", None, 600)
    assert isinstance(a, Admission)
    assert rl.headers(a)["x-ratelimit-remaining-tokens"] == "400"
    b = await rl.acquire("p", None, 600)
    assert isinstance(b, Denied) and b.limit == "tokens"
    assert b.retry_after_s == pytest.approx(12.0)  # 200 tokens at 1000/60 s
    # The provider reported only 100 tokens: 500 come back.
    await rl.settle(a, 100)
    assert isinstance(await rl.acquire("p", None, 600), Admission)
    c = await rl.acquire("p", None, 300)
    assert isinstance(c, Admission)
    await rl.release(c)
    assert isinstance(await rl.acquire("p", None, 300), Admission)


async def test_estimate_larger_than_the_limit_is_refused_with_a_message() -> None:
    rl = limiter(MemoryLimitStore(Clock()), tpm=1000)
    d = await rl.acquire("p", None, 5000)
    assert isinstance(d, Denied) and d.too_large
    assert "5000" in d.message and "1000 tokens per minute" in d.message


async def test_alias_limit_rejection_holds_no_provider_budget() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), rpm=10, alias_rpm=2)
    assert isinstance(await rl.acquire("p", "m", 0), Admission)
    assert isinstance(await rl.acquire("p", "m", 0), Admission)
    d = await rl.acquire("p", "m", 0)
    assert isinstance(d, Denied)
    # The provider scope still has its 8 other requests for other aliases.
    admitted = [isinstance(await rl.acquire("p", None, 0), Admission) for _ in range(9)]
    assert admitted == [True] * 8 + [False]


async def test_burst_is_exact_in_memory() -> None:
    rl = limiter(MemoryLimitStore(), rpm=30)
    results = await asyncio.gather(*(rl.acquire("p", None, 10) for _ in range(200)))
    admitted = [r for r in results if isinstance(r, Admission)]
    denied = [r for r in results if isinstance(r, Denied)]
    assert len(admitted) == 30 and len(denied) == 170
    assert all(d.retry_after_s > 0 for d in denied)


def test_reset_format() -> None:
    assert format_reset(0.02) == "20ms"
    assert format_reset(1.0) == "1s"
    assert format_reset(360) == "6m0s"
    assert format_reset(3723) == "1h2m3s"


def test_prompt_estimate() -> None:
    req = msgspec.json.decode(msgspec.json.encode({
        "model": "m", "messages": [
            {"role": "system", "content": "x" * 400},
            {"role": "user", "content": [
                {"type": "text", "text": "y" * 40},
                {"type": "image_url", "image_url": {"url": "https://e/x.png"}}]}]}),
        type=ChatCompletionRequest)
    assert estimate_prompt_tokens(CHAT.to_conversation(req)) == 110 + 8 + 3 + 765


# --- Redis ---------------------------------------------------------------------------


async def test_burst_is_exact_in_redis(redis: RedisServer) -> None:
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-burst:")
    rl = limiter(store, rpm=30)
    await rl.start()
    try:
        results = await asyncio.gather(*(rl.acquire("p", None, 10) for _ in range(200)))
    finally:
        await rl.aclose()
    assert sum(isinstance(r, Admission) for r in results) == 30
    assert all(r.retry_after_s > 0 for r in results if isinstance(r, Denied))


async def test_redis_keys_expire_and_clock_can_be_injected(redis: RedisServer) -> None:
    import redis.asyncio as aioredis

    clock = Clock()
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-clock:", clock=clock)
    await store.start()
    try:
        limit = Limit("provider:p:requests", "requests", 2, 60.0)
        assert (await store.reserve([limit], [1])).admitted
        assert (await store.reserve([limit], [1])).admitted
        d = await store.reserve([limit], [1])
        assert not d.admitted and d.retry_after_s == pytest.approx(30.0)
        clock.now += 30
        assert (await store.reserve([limit], [1])).admitted
        client = aioredis.Redis.from_url(redis.url)
        ttl = await client.pttl("t-clock:provider:p:requests")
        await client.aclose()
        assert 0 < ttl <= 120_000
    finally:
        await store.aclose()


SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from gateway_core.config import ProviderConfig, RateLimitConfig
    from gateway_llm.limiter import Admission, RateLimiter, RedisLimitStore

    async def main():
        store = RedisLimitStore(sys.argv[1], timeout_s=2.0, key_prefix="t-procs:")
        rl = RateLimiter.from_config(RateLimitConfig(enabled=True),
            {"p": ProviderConfig(kind="openai", base_url="http://x", rpm=50)}, {}, store=store)
        await rl.start()
        results = await asyncio.gather(*(rl.acquire("p", None, 0) for _ in range(100)))
        await rl.aclose()
        print(sum(isinstance(r, Admission) for r in results))

    asyncio.run(main())
""")


def test_two_processes_share_one_redis_budget(redis: RedisServer) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, redis.url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        counts.append(int(out.strip()))
    assert sum(counts) == 50
    assert all(c > 0 for c in counts) or sum(counts) == 50


async def test_unreachable_redis_fails_open_or_closed() -> None:
    dead = RedisServer()  # never started: nothing listens on its port
    for fail_open in (True, False):
        store = RedisLimitStore(dead.url, timeout_s=0.2)
        rl = limiter(store, rpm=5, fail_open=fail_open)
        await rl.start()
        try:
            result = await asyncio.wait_for(rl.acquire("p", None, 0), 5)
        finally:
            await rl.aclose()
        if fail_open:
            assert isinstance(result, Admission) and result.degraded
        else:
            assert isinstance(result, Denied) and result.store_unavailable
        assert store.health()["healthy"] is False


async def test_a_reservation_right_after_two_answers_is_still_sent(redis: RedisServer) -> None:
    """Two script calls in flight whose answers arrive together (Redis paused, then both
    answered in one read): the caller woken first reserves again at once, while both pumps
    that sent them have ended but are not yet forgotten. That reservation must still go out
    (it used to wait forever: no pump was left to send it)."""
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-pumps:", lease_s=0)
    await store.start()
    admin = RedisPipe(redis.url, timeout_s=2.0)
    limit = Limit("provider:p:requests", "requests", 1_000_000, 60.0)
    try:
        assert (await store.reserve([limit], [1])).admitted  # the script is loaded
        await admin.call("CLIENT", "PAUSE", 300, "ALL")

        async def twice() -> Decision:
            await store.reserve([limit], [1])
            return await store.reserve([limit], [1])  # in this task, as a request does

        first = asyncio.create_task(twice())
        second = asyncio.create_task(store.reserve([limit], [1]))
        await asyncio.sleep(0.05)  # one call in flight with both; the second pump ended
        third = asyncio.create_task(store.reserve([limit], [1]))  # a second call in flight
        async with asyncio.timeout(3):
            results = await asyncio.gather(first, second, third)
        assert all(d.admitted for d in results)
    finally:
        await admin.aclose()
        await store.aclose()
