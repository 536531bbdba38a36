"""Rate limits through the served gateway: a burst admits exactly the budget, the rest
fails over or gets 429 with Retry-After; two gateway processes share one Redis budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.redis_fixture import RedisServer, redis_server


def config(up: FakeUpstream, backup: FakeUpstream, *, backend: str = "memory",
           redis_url: str = "") -> str:
    return f"""
[logging]
access_log = false
[sandbox]
enabled = false
[rate_limit]
enabled = true
backend = "{backend}"
redis_url = "{redis_url or 'redis://127.0.0.1:1/0'}"
redis_timeout_s = 2.0
[llm.providers.main]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
rpm = 30
[llm.providers.spare]
kind = "openai"
base_url = "{backup.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.with-fallback]
provider = "main"
model = "m"
fallbacks = ["spare/m2"]
[llm.models.alone]
provider = "main"
model = "m"
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream() as backup:
        yield up, backup


async def burst(urls: list[str], model: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(*(client.post(
            urls[i % len(urls)] + "/v1/chat/completions",
            json={"model": model, "max_tokens": 10,
                  "messages": [{"role": "user", "content": "hi"}]}) for i in range(n)))


def refilled(started: float) -> int:
    """GCRA gives capacity back continuously (rpm 30: one request every 2 s), so a burst
    that a loaded machine stretches over several seconds may see that many more. With an
    injected clock (tests/llm/test_limiter.py) the count is exact."""
    return int((time.monotonic() - started) / 2.0)


def test_burst_fails_over_past_the_budget(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    backup.reset()
    with GatewayProcess(config(up, backup)) as gw:
        started = time.monotonic()
        responses = asyncio.run(burst([gw.url], "with-fallback", 200))
        extra = refilled(started)
        assert all(r.status_code == 200 for r in responses)
        main = [r for r in responses if r.headers["x-gateway-provider"] == "main"]
        assert 30 <= len(main) <= 30 + extra
        assert len(up.requests) == len(main) and len(backup.requests) == 200 - len(main)
        assert {r.headers["x-ratelimit-limit-requests"] for r in main} == {"30"}
        assert min(int(r.headers["x-ratelimit-remaining-requests"]) for r in main) == 0
        metrics = httpx.get(gw.url + "/metrics").text
        rejected = 200 - len(main)
        assert ('gateway_ratelimit_rejections_total{limit="requests",provider="main"} '
                f"{rejected}.0") in metrics


def test_burst_without_fallback_gets_429(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    with GatewayProcess(config(up, backup)) as gw:
        started = time.monotonic()
        responses = asyncio.run(burst([gw.url], "alone", 200))
        extra = refilled(started)
        ok = [r for r in responses if r.status_code == 200]
        limited = [r for r in responses if r.status_code == 429]
        assert 30 <= len(ok) <= 30 + extra and len(ok) + len(limited) == 200
        for r in limited:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert r.json()["error"]["type"] == "rate_limit_error"
        assert len(up.requests) == len(ok)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def test_two_gateways_share_one_redis_budget(upstreams: tuple[FakeUpstream, FakeUpstream],
                                             redis: RedisServer) -> None:
    up, backup = upstreams
    up.reset()
    text = config(up, backup, backend="redis", redis_url=redis.url)
    with GatewayProcess(text) as one, GatewayProcess(text) as two:
        started = time.monotonic()
        responses = asyncio.run(burst([one.url, two.url], "alone", 200))
        extra = refilled(started)
        ok = sum(r.status_code == 200 for r in responses)
        assert 30 <= ok <= 30 + extra
        assert sum(r.status_code == 429 for r in responses) == 200 - ok
        assert len(up.requests) == ok
        ready = httpx.get(one.url + "/health/ready").json()
        assert ready["llm"]["rate_limit"]["backend"] == "redis"
        assert ready["llm"]["rate_limit"]["healthy"] is True


def test_gateway_keeps_serving_when_redis_is_down(
        upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    dead = RedisServer()  # nothing listens there
    with GatewayProcess(config(up, backup, backend="redis", redis_url=dead.url)) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=10, json={
            "model": "alone", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        ready = httpx.get(gw.url + "/health/ready").json()
        assert ready["llm"]["rate_limit"]["healthy"] is False
        assert "ratelimit_store_unavailable" in gw.logs()
