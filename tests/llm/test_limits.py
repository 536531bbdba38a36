"""Rate limits: GCRA windows, retry-after, settlement and snapshots on the memory store and
on a real redis-server (same fake clock, same numbers); bursts of concurrent acquires; two
OS processes sharing one Redis budget; key TTLs; Redis hung or gone with fail open/closed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from gateway_core.config.llm import ModelConfig, ProviderConfig, RateLimitConfig
from gateway_core.openai_types import ChatCompletionRequest
from gateway_llm.limits import (
    DAY_S,
    MINUTE_S,
    Admission,
    Denied,
    EstimateTooLarge,
    Limit,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    RateLimiter,
    RedisLimitStore,
    Rejection,
    Reservation,
    estimate_prompt_tokens,
    format_reset,
    standard_limits,
)
from tests.redis_server import RedisServer, redis_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_srv() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[LimitStore]:
    """The same fake clock drives both stores, so both must give the same numbers."""
    if request.param == "memory":
        yield MemoryLimitStore(clock)
        return
    with redis_server() as srv:
        s = RedisLimitStore(srv.url, timeout_s=5.0, clock=clock)
        await s.start()
        assert s.healthy
        try:
            yield s
        finally:
            await s.aclose()


RPM3 = (Limit("requests", 3, MINUTE_S),)


async def reserve_ok(store: LimitStore, scope: str, limits: tuple[Limit, ...], tokens: int) -> Reservation:
    out = await store.reserve(scope, limits, tokens)
    assert isinstance(out, Reservation), out
    return out


async def test_requests_window_rolls_with_exact_retry_after(store: LimitStore, clock: Clock) -> None:
    for _ in range(3):
        await reserve_ok(store, "s", RPM3, 0)
    out = await store.reserve("s", RPM3, 0)
    # One request comes back every 60/3 = 20 s.
    assert isinstance(out, Rejection) and out.limit == "requests"
    assert out.retry_after_s == pytest.approx(20.0)
    assert out.states[0].remaining == 0
    clock.now += 19.9
    assert isinstance(await store.reserve("s", RPM3, 0), Rejection)
    clock.now += 0.1
    await reserve_ok(store, "s", RPM3, 0)
    out = await store.reserve("s", RPM3, 0)
    assert isinstance(out, Rejection) and out.retry_after_s == pytest.approx(20.0)
    clock.now += 60
    for _ in range(3):
        await reserve_ok(store, "s", RPM3, 0)


async def test_no_burst_at_a_minute_boundary(store: LimitStore, clock: Clock) -> None:
    limits = (Limit("requests", 60, MINUTE_S),)
    clock.now = 1059.9  # just before a minute boundary
    admitted = 0
    for _ in range(200):
        if isinstance(await store.reserve("s", limits, 0), Reservation):
            admitted += 1
    clock.now = 1060.1  # just after it: a fixed window would admit another 60 here
    for _ in range(200):
        if isinstance(await store.reserve("s", limits, 0), Reservation):
            admitted += 1
    assert admitted == 60
    clock.now = 1059.9 + 30  # half a minute later: half the capacity is back
    for _ in range(200):
        if isinstance(await store.reserve("s", limits, 0), Reservation):
            admitted += 1
    assert admitted == 90


async def test_tokens_refund_on_settle(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(None, 1000, None)
    first = await reserve_ok(store, "s", limits, 600)
    out = await store.reserve("s", limits, 600)
    # 1200 tokens at 0.06 s each is 72 s of debt, 12 s more than a minute holds.
    assert isinstance(out, Rejection) and out.limit == "tokens"
    assert out.retry_after_s == pytest.approx(12.0)
    assert out.states[0].remaining == 400
    await store.settle(first, 100)  # the answer was short: 500 tokens come back
    await reserve_ok(store, "s", limits, 600)
    (state,) = await store.snapshot("s", limits)
    assert state.remaining == 300 and state.reset_s == pytest.approx(42.0)


async def test_overrun_on_settle_makes_later_requests_wait(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(None, 1000, None)
    r = await reserve_ok(store, "s", limits, 100)
    await store.settle(r, 1500)  # over the limit: allowed, it already happened
    (state,) = await store.snapshot("s", limits)
    assert state.remaining == 0 and state.reset_s == pytest.approx(90.0)
    out = await store.reserve("s", limits, 1)
    assert isinstance(out, Rejection) and out.retry_after_s == pytest.approx(30.06)
    clock.now += 30.06
    await reserve_ok(store, "s", limits, 1)


async def test_release_refunds_request_and_tokens(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(2, 1000, 10_000)
    r = await reserve_ok(store, "s", limits, 500)
    states = {s.name: s for s in await store.snapshot("s", limits)}
    assert (states["requests"].remaining, states["tokens"].remaining,
            states["tokens_day"].remaining) == (1, 500, 9500)
    await store.release(r)
    states = {s.name: s for s in await store.snapshot("s", limits)}
    assert (states["requests"].remaining, states["tokens"].remaining,
            states["tokens_day"].remaining) == (2, 1000, 10_000)
    assert all(s.reset_s == 0 for s in states.values())


async def test_all_limits_checked_together_and_nothing_charged_on_reject(
    store: LimitStore, clock: Clock,
) -> None:
    limits = standard_limits(10, 1000, None)
    await reserve_ok(store, "s", limits, 900)
    out = await store.reserve("s", limits, 200)
    assert isinstance(out, Rejection) and out.limit == "tokens"
    states = {s.name: s.remaining for s in await store.snapshot("s", limits)}
    assert states == {"requests": 9, "tokens": 100}
    # Other scopes are independent.
    await reserve_ok(store, "other", limits, 1000)


async def test_daily_limit_outlasts_the_minute(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(None, 1000, 1500)
    await reserve_ok(store, "s", limits, 1000)
    clock.now += 61
    out = await store.reserve("s", limits, 1000)
    # The day limit needs 500 tokens back at 86400/1500 = 57.6 s each, minus the 61 s gone.
    assert isinstance(out, Rejection) and out.limit == "tokens_day"
    assert out.retry_after_s == pytest.approx(500 * 57.6 - 61)


async def test_estimate_too_large(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(5, 1000, None)
    out = await store.reserve("s", limits, 1001)
    assert out == EstimateTooLarge("s", "tokens", 1001, 1000)
    states = {s.name: s.remaining for s in await store.snapshot("s", limits)}
    assert states == {"requests": 5, "tokens": 1000}


async def test_snapshot_numbers(store: LimitStore, clock: Clock) -> None:
    limits = standard_limits(10, 1000, None)
    await reserve_ok(store, "s", limits, 250)
    req, tok = await store.snapshot("s", limits)
    assert (req.limit, req.remaining) == (10, 9) and req.reset_s == pytest.approx(6.0)
    assert (tok.limit, tok.remaining) == (1000, 750) and tok.reset_s == pytest.approx(15.0)
    clock.now += 3
    req, tok = await store.snapshot("s", limits)
    assert req.remaining == 9 and req.reset_s == pytest.approx(3.0)
    assert tok.remaining == 800 and tok.reset_s == pytest.approx(12.0)


def config_limiter(store: LimitStore, *, rpm: int | None = None, fail_open: bool = True,
                   enabled: bool = True) -> RateLimiter:
    return RateLimiter.from_config(
        RateLimitConfig(enabled=enabled, requests_per_minute=rpm, fail_open=fail_open),
        {"openai": ProviderConfig()}, {}, store=store)


async def burst(limiter: RateLimiter, n: int) -> tuple[list[Admission], list[Denied]]:
    results = await asyncio.gather(*(limiter.acquire("openai", None, 10) for _ in range(n)))
    admitted = [r for r in results if isinstance(r, Admission)]
    denied = [r for r in results if isinstance(r, Denied)]
    return admitted, denied


async def test_burst_of_concurrent_acquires_admits_exactly_the_limit(store: LimitStore) -> None:
    limiter = config_limiter(store, rpm=30)
    admitted, denied = await burst(limiter, 200)
    assert len(admitted) == 30 and len(denied) == 170
    assert not any(a.degraded for a in admitted)
    assert all(d.reason == "requests" and d.retry_after_s is not None and d.retry_after_s > 0
               for d in denied)


async def test_burst_on_redis_server_time(redis_srv: RedisServer) -> None:
    """Without an injected clock the scripts read Redis TIME; a per-day request limit makes
    refill during the burst negligible (one per 1728 s), so the count is exact."""
    store = RedisLimitStore(redis_srv.url, timeout_s=5.0)
    await store.start()
    try:
        limiter = RateLimiter(store, provider_limits={"openai": (Limit("requests", 30, DAY_S),)})
        admitted, denied = await burst(limiter, 200)
        assert len(admitted) == 30 and len(denied) == 170
        assert all(d.retry_after_s is not None and d.retry_after_s > 1000 for d in denied)
    finally:
        await store.aclose()


async def test_from_config_resolves_provider_and_alias_limits() -> None:
    rl = RateLimitConfig(enabled=True, requests_per_minute=100, tokens_per_minute=5000)
    providers = {"openai": ProviderConfig(rpm=7), "groq": ProviderConfig(),
                 "anthropic": ProviderConfig(tpd=9)}
    models = {"fast": ModelConfig(provider="groq", tpm=300), "plain": ModelConfig(provider="groq")}
    lim = RateLimiter.from_config(rl, providers, models, store=MemoryLimitStore())
    assert lim.provider_limits["openai"] == standard_limits(7, None, None)
    assert lim.provider_limits["groq"] == standard_limits(100, 5000, None)
    assert lim.provider_limits["anthropic"] == standard_limits(None, None, 9)
    assert lim.model_limits == {"fast": standard_limits(None, 300, None), "plain": ()}
    shared = RateLimiter.from_config(
        RateLimitConfig(backend="redis", redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.5,
                        fail_open=False), providers, models)
    assert isinstance(shared.store, RedisLimitStore) and shared.store.timeout_s == 0.5
    assert not shared.fail_open
    off = RateLimiter.from_config(RateLimitConfig(), providers, models)
    assert isinstance(off.store, MemoryLimitStore)
    assert off.provider_limits["groq"] == ()
    assert off.provider_limits["openai"] == standard_limits(7, None, None)
    # No limits at all: always admitted.
    for _ in range(50):
        assert isinstance(await off.acquire("groq", "plain", 10**9), Admission)


async def test_alias_rejection_releases_the_provider_reservation(clock: Clock) -> None:
    lim = RateLimiter(MemoryLimitStore(clock),
                      provider_limits={"groq": standard_limits(100, 10_000, None)},
                      model_limits={"fast": standard_limits(None, 300, None)})
    a = await lim.acquire("groq", "fast", 200)
    assert isinstance(a, Admission) and len(a.reservations) == 2
    d = await lim.acquire("groq", "fast", 200)
    assert isinstance(d, Denied) and d.scope == "model:fast" and d.reason == "tokens"
    req, tok = await lim.snapshot("groq")
    assert (req.remaining, tok.remaining) == (99, 9800)
    big = await lim.acquire("groq", "fast", 301)
    assert isinstance(big, Denied) and big.reason == "estimate_too_large"
    assert big.retry_after_s is None and "301" in big.message
    assert big.to_error().status == 429
    await lim.settle(a, 50)
    req, tok = await lim.snapshot("groq")
    assert (req.remaining, tok.remaining) == (99, 9950)
    assert isinstance(await lim.acquire("groq", "fast", 250), Admission)


async def test_denied_renders_a_429_with_openai_headers(clock: Clock) -> None:
    lim = RateLimiter(MemoryLimitStore(clock), provider_limits={"openai": standard_limits(1, 100, None)})
    a = await lim.acquire("openai", None, 40)
    assert isinstance(a, Admission)
    assert {s.name: s.remaining for s in a.provider_states} == {"requests": 0, "tokens": 60}
    d = await lim.acquire("openai", None, 40)
    assert isinstance(d, Denied)
    err = d.to_error()
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.headers["retry-after"] == "60" and err.headers["retry-after-ms"] == "60000"
    assert err.headers["x-ratelimit-limit-requests"] == "1"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert err.headers["x-ratelimit-remaining-tokens"] == "60"
    assert err.headers["x-ratelimit-reset-tokens"] == "24s"
    assert (format_reset(0.25), format_reset(3725), format_reset(0)) == ("250ms", "1h2m5s", "0s")
    await lim.release(a)
    assert isinstance(await lim.acquire("openai", None, 40), Admission)


def test_estimate_prompt_tokens() -> None:
    def req(body: dict[str, object]) -> ChatCompletionRequest:
        return msgspec.convert({"model": "m", **body}, ChatCompletionRequest)

    one = req({"messages": [{"role": "user", "content": "x" * 400}]})
    assert estimate_prompt_tokens(one) == 3 + 4 + 100
    image = {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}
    low = {"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "low"}}
    parts = req({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "y" * 40}, image, low]}]})
    assert estimate_prompt_tokens(parts) == 3 + 4 + 10 + 765 + 85
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = req({"messages": [{"role": "user", "content": "x" * 400}],
                 "tools": [{"type": "function", "function": {"name": "w", "parameters": schema}}]})
    assert estimate_prompt_tokens(tools) > estimate_prompt_tokens(one) + 10
    lim = RateLimiter(MemoryLimitStore(), provider_limits={}, default_completion_tokens=1024)
    assert lim.estimate_tokens(one) == 107 + 1024
    capped = req({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 10, "n": 2})
    assert lim.estimate_tokens(capped) == 107 + 20


async def test_redis_keys_expire_after_their_window(redis_srv: RedisServer, clock: Clock) -> None:
    import redis.asyncio

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisLimitStore(redis_srv.url, timeout_s=5.0, key_prefix=prefix)
    await store.start()
    client = redis.asyncio.Redis.from_url(redis_srv.url, decode_responses=True)
    try:
        limits = standard_limits(10, 1000, 100_000)
        r = await reserve_ok(store, "provider:x", limits, 100)
        keys = sorted(str(k) for k in await client.keys(prefix + "*"))
        assert keys == [f"{prefix}{{provider:x}}:{n}" for n in ("requests", "tokens", "tokens_day")]
        ttls = {k.rsplit(":", 1)[1]: await client.pttl(k) for k in keys}
        # Each key lives as long as its debt, plus a second.
        assert 0 < ttls["requests"] <= 6000 + 1000
        assert 0 < ttls["tokens"] <= 6000 + 1000
        assert 6000 + 1000 < ttls["tokens_day"] <= 86_400 + 1000
        await store.release(r)
        # Fully refunded: a full bucket needs no key.
        assert await client.keys(prefix + "*") == []
        # A flushed script cache is reloaded transparently (EVALSHA, then NOSCRIPT -> load).
        await client.script_flush()
        await reserve_ok(store, "provider:x", limits, 100)
    finally:
        await client.aclose()
        await store.aclose()


async def test_redis_hung_or_gone_fails_fast_open_or_closed(redis_srv: RedisServer) -> None:
    store = RedisLimitStore(redis_srv.url, timeout_s=0.3)
    await store.start()
    opened = RateLimiter(store, provider_limits={"openai": standard_limits(5, None, None)})
    closed = RateLimiter(store, provider_limits={"openai": standard_limits(5, None, None)},
                         fail_open=False)
    try:
        assert isinstance(await opened.acquire("openai", None, 1), Admission)
        assert store.healthy and store.last_error is None
        redis_srv.pause()  # accepts bytes, answers nothing
        try:
            t0 = time.monotonic()
            with pytest.raises(LimitStoreUnavailable):
                await store.reserve("provider:openai", standard_limits(5, None, None), 1)
            assert time.monotonic() - t0 < 10  # bounded, not a hang
            assert not store.healthy and store.last_error
            a = await opened.acquire("openai", None, 1)
            assert isinstance(a, Admission) and a.degraded and a.reservations == ()
            d = await closed.acquire("openai", None, 1)
            assert isinstance(d, Denied) and d.reason == "store_unavailable"
            assert d.to_error().status == 503
        finally:
            redis_srv.resume()
        # Back: calls work and the store says so.
        assert isinstance(await opened.acquire("openai", None, 1), Admission)
        assert store.healthy
        (req,) = await opened.snapshot("openai")
        # 2 counted; calls that timed out while the server hung may have been applied
        # after it woke (their bytes were already sent), which only ever over-counts.
        assert 0 <= req.remaining <= 3
        redis_srv.stop()  # gone: connection refused
        with pytest.raises(LimitStoreUnavailable):
            await opened.snapshot("openai")
        d = await closed.acquire("openai", None, 1)
        assert isinstance(d, Denied) and d.reason == "store_unavailable"
        a = await opened.acquire("openai", None, 1)
        assert isinstance(a, Admission) and a.degraded
        await opened.settle(a, 5)  # nothing to settle, and no error
        assert not store.healthy
    finally:
        await store.aclose()


async def test_redis_down_at_start_does_not_stop_start_up() -> None:
    from tests.gateway_process import free_port

    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
    await store.start()
    try:
        assert not store.healthy and store.last_error
        with pytest.raises(LimitStoreUnavailable):
            await store.reserve("s", RPM3, 0)
    finally:
        await store.aclose()


WORKER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from gateway_llm.limits import DAY_S, Limit, RedisLimitStore, Reservation

    async def main(url: str, go: Path) -> None:
        store = RedisLimitStore(url, timeout_s=5.0)
        await store.start()
        limits = (Limit("requests", 50, DAY_S),)
        for _ in range(600):  # wait for the other process, at most 30 s
            if go.exists():
                break
            await asyncio.sleep(0.05)
        outs = await asyncio.gather(*(store.reserve("provider:shared", limits, 1)
                                      for _ in range(100)))
        print(sum(isinstance(o, Reservation) for o in outs), flush=True)
        await store.aclose()

    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
""")


def test_two_processes_share_one_redis_budget(redis_srv: RedisServer, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), redis_srv.url, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    try:
        time.sleep(0.5)
        go.touch()
        counts = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
            counts.append(int(out.decode().strip()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert sum(counts) == 50
