"""More rate-limit cases for gateway_llm.limiter (next to tests/llm/test_limiter.py): the
daily limit, over-charging settlement, header numbers, memory and Redis agreeing step by
step, and a real redis-server stopped or frozen while the limiter runs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from gateway_core.config import ModelConfig, ProviderConfig, RateLimitConfig
from gateway_core.openai_types import ChatCompletionRequest
from gateway_llm.hub import LLMRequest
from gateway_llm.limiter import (
    Admission,
    Denied,
    Limit,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    RateLimiter,
    RedisLimitStore,
    estimate_prompt_tokens,
)
from gateway_server.routes.chat import llm_request
from tests.redis_fixture import RedisServer, redis_server

BOUND_S = 10.0  # generous "finished at all" bound for calls against a dead Redis


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def limiter(store: LimitStore, *, rpm: int | None = None, tpm: int | None = None,
            tpd: int | None = None, fail_open: bool = True,
            default_completion_tokens: int = 1024) -> RateLimiter:
    providers = {"p": ProviderConfig(kind="openai", base_url="http://x", rpm=rpm, tpm=tpm,
                                     tpd=tpd)}
    models = {"m": ModelConfig(provider="p")}
    rl = RateLimitConfig(enabled=True, fail_open=fail_open,
                         default_completion_tokens=default_completion_tokens)
    return RateLimiter.from_config(rl, providers, models, store=store)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test may stop, freeze or restart it."""
    with redis_server() as server:
        yield server


# --- configuration -------------------------------------------------------------------


def test_limits_resolve_from_provider_defaults_and_aliases() -> None:
    providers = {
        "own": ProviderConfig(kind="openai", base_url="http://x", rpm=5),
        "plain": ProviderConfig(kind="openai", base_url="http://y"),
    }
    models = {"a": ModelConfig(provider="own", tpm=700), "b": ModelConfig(provider="own")}
    cfg = RateLimitConfig(enabled=True, requests_per_minute=60, tokens_per_day=10_000)
    rl = RateLimiter.from_config(cfg, providers, models, store=MemoryLimitStore())
    amounts = {scope: {lim.name: lim.amount for lim in limits}
               for scope, limits in rl.scopes.items()}
    assert amounts == {
        # A provider's own value wins per limit; the [rate_limit] defaults fill the rest.
        "provider:own": {"requests": 5, "tokens_day": 10_000},
        "provider:plain": {"requests": 60, "tokens_day": 10_000},
        "model:a": {"tokens": 700},
    }
    assert rl.enabled
    off = RateLimiter.from_config(RateLimitConfig(enabled=False, requests_per_minute=60),
                                  providers, models, store=MemoryLimitStore())
    assert off.scopes == {} and not off.enabled


# --- memory store, injected clock ----------------------------------------------------


async def test_daily_token_limit_and_its_retry_after() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), tpd=1000)
    assert isinstance(await rl.acquire("p", None, 600), Admission)
    d = await rl.acquire("p", None, 600)
    assert isinstance(d, Denied) and d.limit == "tokens_day" and not d.too_large
    # 200 tokens missing at 1000 per 86400 s: 17280 s.
    assert d.retry_after_s == pytest.approx(200 * 86.4)
    assert "tokens per day" in d.message
    clock.now += 200 * 86.4 + 1
    assert isinstance(await rl.acquire("p", None, 600), Admission)


async def test_settling_above_the_estimate_makes_later_requests_wait() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), tpm=1000)
    a = await rl.acquire("p", None, 100)
    assert isinstance(a, Admission)
    # The provider reported 2100 tokens: 2000 more than reserved, more than a minute's
    # budget. Later requests wait until it has drained: 126 s ahead + 0.6 s for 10 tokens,
    # minus the 60 s window.
    await rl.settle(a, 2100)
    d = await rl.acquire("p", None, 10)
    assert isinstance(d, Denied) and d.limit == "tokens"
    assert d.retry_after_s == pytest.approx(66.6)
    clock.now += 67
    assert isinstance(await rl.acquire("p", None, 10), Admission)


async def test_settle_and_release_happen_once() -> None:
    clock = Clock()
    rl = limiter(MemoryLimitStore(clock), rpm=3, tpm=960)
    assert isinstance(await rl.acquire("p", None, 480), Admission)  # kept
    a = await rl.acquire("p", None, 480)
    assert isinstance(a, Admission)
    await rl.release(a)
    await rl.release(a)  # a second release must not refund the kept request's budget
    await rl.settle(a, 0)
    b = await rl.acquire("p", None, 480)
    assert isinstance(b, Admission)
    assert rl.headers(b)["x-ratelimit-remaining-tokens"] == "0"
    assert rl.headers(b)["x-ratelimit-remaining-requests"] == "1"
    d = await rl.acquire("p", None, 1)
    assert isinstance(d, Denied) and d.limit == "tokens"


async def test_header_numbers_follow_the_budget() -> None:
    clock = Clock()
    # 960 tokens/min: 62.5 ms a token, exact in binary, so the numbers are exact too.
    rl = limiter(MemoryLimitStore(clock), rpm=6, tpm=960, tpd=100_000)
    await rl.acquire("p", None, 160)
    a = await rl.acquire("p", None, 160)
    assert isinstance(a, Admission)
    assert rl.headers(a) == {
        "x-ratelimit-limit-requests": "6",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "20s",  # 2 requests at 10 s each
        "x-ratelimit-limit-tokens": "960",
        "x-ratelimit-remaining-tokens": "640",
        "x-ratelimit-reset-tokens": "20s",  # 320 tokens at 62.5 ms each
    }
    clock.now += 5
    c = await rl.acquire("p", None, 0)
    assert isinstance(c, Admission)
    # 5 s later: half a request came back (not a whole one), 80 tokens came back.
    assert rl.headers(c)["x-ratelimit-remaining-requests"] == "3"
    assert rl.headers(c)["x-ratelimit-reset-requests"] == "25s"
    assert rl.headers(c)["x-ratelimit-remaining-tokens"] == "720"
    assert rl.headers(c)["x-ratelimit-reset-tokens"] == "15s"


def _request(**extra: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "z" * 400}], **extra}
    return msgspec.json.decode(msgspec.json.encode(body), type=ChatCompletionRequest)


def _llm(**extra: Any) -> LLMRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "z" * 400}], **extra}
    return llm_request(_request(**extra), body)


def test_reserved_tokens_cover_prompt_and_every_choice() -> None:
    rl = limiter(MemoryLimitStore(), tpm=10_000, default_completion_tokens=50)
    prompt = estimate_prompt_tokens(_llm().conversation())
    assert prompt == 100 + 4 + 3
    assert rl.estimate(_llm()) == prompt + 50
    assert rl.estimate(_llm(max_tokens=100, n=2)) == prompt + 200
    # max_completion_tokens (the newer name) wins over max_tokens.
    assert rl.estimate(_llm(max_tokens=100, max_completion_tokens=30)) == prompt + 30
    tool = {"type": "function", "function": {
        "name": "lookup", "description": "d" * 400,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    with_tools = estimate_prompt_tokens(_llm(tools=[tool]).conversation())
    schema_chars = len(msgspec.json.encode(tool))
    assert abs((with_tools - prompt) - schema_chars / 4) <= schema_chars / 4 * 0.2


# --- memory and Redis agree ----------------------------------------------------------


async def _store(kind: str, clock: Clock, redis: RedisServer, prefix: str) -> LimitStore:
    if kind == "memory":
        return MemoryLimitStore(clock)
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix=prefix, clock=clock)
    await store.start()
    return store


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_stores_agree_step_by_step(kind: str, shared_redis: RedisServer) -> None:
    clock = Clock()
    store = await _store(kind, clock, shared_redis, "t-agree:")
    # 6/min: 10 s a request; 960 tokens/min: 62.5 ms a token (exact binary fractions).
    rl = limiter(store, rpm=6, tpm=960)
    steps = [(0, 320), (0, 320), (0, 320), (0, 16), (20, 160), (5, 160), (30, 320),
             (0, 320), (60, 0)] + [(0, 0)] * 6
    trace: list[tuple[str, str, float, str, str]] = []
    try:
        for step, (advance, tokens) in enumerate(steps):
            clock.now += advance
            r = await rl.acquire("p", None, tokens)
            if isinstance(r, Admission):
                h = rl.headers(r)
                trace.append(("ok", "", 0.0, h["x-ratelimit-remaining-requests"],
                              h["x-ratelimit-remaining-tokens"]))
                if step == 4:
                    await rl.settle(r, 320)  # charge 160 more than reserved
            else:
                trace.append(("denied", r.limit, round(r.retry_after_s, 3),
                              r.headers.get("x-ratelimit-remaining-requests", ""),
                              r.headers.get("x-ratelimit-remaining-tokens", "")))
    finally:
        await store.aclose()
    assert trace == [
        ("ok", "", 0.0, "5", "640"),
        ("ok", "", 0.0, "4", "320"),
        ("ok", "", 0.0, "3", "0"),
        ("denied", "tokens", 1.0, "3", "0"),  # 16 tokens at 62.5 ms
        # 20 s later: 320 tokens came back.
        ("ok", "", 0.0, "4", "160"),
        # Settlement charged 160 more (10 s); 5 s later 80 are back, 160 needed.
        ("denied", "tokens", 5.0, "4", "80"),
        ("ok", "", 0.0, "5", "240"),
        ("denied", "tokens", 5.0, "5", "240"),
        # A minute later everything is back.
        ("ok", "", 0.0, "5", "960"),
        ("ok", "", 0.0, "4", "960"),
        ("ok", "", 0.0, "3", "960"),
        ("ok", "", 0.0, "2", "960"),
        ("ok", "", 0.0, "1", "960"),
        ("ok", "", 0.0, "0", "960"),
        ("denied", "requests", 10.0, "0", "960"),
    ]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_overcharge_settled_after_the_window_counts_from_now(
        kind: str, shared_redis: RedisServer) -> None:
    clock = Clock()
    store = await _store(kind, clock, shared_redis, "t-late:")
    rl = limiter(store, tpm=1000)
    try:
        a = await rl.acquire("p", None, 100)
        assert isinstance(a, Admission)
        clock.now += 60  # a long stream: usage arrives a minute later
        await rl.settle(a, 1100)
        # 1000 tokens charged now use the whole minute's budget.
        d = await rl.acquire("p", None, 100)
        assert isinstance(d, Denied) and d.limit == "tokens"
    finally:
        await store.aclose()


# --- Redis specifics -----------------------------------------------------------------


async def test_daily_keys_expire_after_their_window(shared_redis: RedisServer) -> None:
    import redis.asyncio as aioredis

    clock = Clock()
    store = RedisLimitStore(shared_redis.url, timeout_s=2.0, key_prefix="t-ttl:",
                            clock=clock)
    rl = limiter(store, rpm=10, tpd=1000)
    await rl.start()
    client = aioredis.Redis.from_url(shared_redis.url)
    try:
        assert isinstance(await rl.acquire("p", None, 500), Admission)
        day_ttl = await client.pttl("t-ttl:provider:p:tokens_day")
        req_ttl = await client.pttl("t-ttl:provider:p:requests")
        # 500 tokens are 43200 s ahead, plus the 86400 s window.
        assert 86_400_000 < day_ttl <= 129_600_000
        assert 60_000 < req_ttl <= 66_000
    finally:
        await client.aclose()
        await rl.aclose()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_stopped_mid_run_then_back(own_redis: RedisServer,
                                               fail_open: bool) -> None:
    store = RedisLimitStore(own_redis.url, timeout_s=0.3, key_prefix="t-stop:")
    rl = limiter(store, rpm=100, tpm=100_000, fail_open=fail_open)
    await rl.start()
    try:
        first = await rl.acquire("p", None, 10)
        assert isinstance(first, Admission) and not first.degraded
        own_redis.stop()
        with pytest.raises(LimitStoreUnavailable):
            await asyncio.wait_for(store.reserve(rl.scopes["provider:p"], [1, 1]), BOUND_S)
        result = await asyncio.wait_for(rl.acquire("p", None, 10), BOUND_S)
        if fail_open:
            assert isinstance(result, Admission) and result.degraded
            await asyncio.wait_for(rl.release(result), BOUND_S)  # swallowed, bounded
        else:
            assert isinstance(result, Denied) and result.store_unavailable
            assert result.retry_after_s > 0
        # Settling while Redis is down neither raises nor hangs.
        await asyncio.wait_for(rl.settle(first, 20), BOUND_S)
        health = rl.health()
        assert health["healthy"] is False and health["last_error"]
        assert rl.degraded_since is not None

        own_redis.start()  # same port, empty data
        again: Admission | Denied | None = None
        for _ in range(5):  # pooled connections to the old server may fail once each
            again = await asyncio.wait_for(rl.acquire("p", None, 10), BOUND_S)
            if isinstance(again, Admission) and not again.degraded:
                break
            await asyncio.sleep(0.1)
        assert isinstance(again, Admission) and not again.degraded
        assert rl.health()["healthy"] is True and rl.degraded_since is None
    finally:
        await rl.aclose()


async def test_frozen_redis_is_bounded_by_the_timeout(own_redis: RedisServer) -> None:
    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    store = RedisLimitStore(own_redis.url, timeout_s=0.3, key_prefix="t-hung:")
    await store.start()
    limit = Limit("provider:p:requests", "requests", 5, 60.0)
    try:
        assert (await store.reserve([limit], [1])).admitted
        # A stopped process still completes TCP handshakes from its backlog but never
        # answers: only the socket and asyncio timeouts end the call.
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(LimitStoreUnavailable):
                await asyncio.wait_for(store.reserve([limit], [1]), BOUND_S)
            with pytest.raises(LimitStoreUnavailable):
                await asyncio.wait_for(store.adjust([limit], [-1]), BOUND_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert store.health()["healthy"] is False
    finally:
        await store.aclose()
