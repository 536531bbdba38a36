"""Callers' own limits in the limiter (a virtual key's and its team's, as a Charge): token
and cost budgets are exact under a concurrent burst, in memory and in a real Redis, with
provider limits in the same reservation; settlement charges a stream's overshoot and gives
unused estimates back; a budget's 429 says which one and when it resets."""

from __future__ import annotations

import asyncio

import pytest

from gateway_core.config import RateLimitConfig
from gateway_llm.hub import Usage
from gateway_llm.limiter import (
    Admission,
    Charge,
    Denied,
    Limit,
    LimitStore,
    MemoryLimitStore,
    RateLimiter,
    RedisLimitStore,
)
from gateway_llm.prices import Price
from tests.redis_fixture import RedisServer

PRICE = Price(input=2.0, output=8.0)  # USD per Mtok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _store(kind: str, clock: Clock, redis: RedisServer, prefix: str) -> LimitStore:
    store: LimitStore
    if kind == "memory":
        store = MemoryLimitStore(clock=clock)
    else:
        store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix=prefix, clock=clock)
    await store.start()
    return store


def _charge(*limits: Limit) -> Charge:
    return Charge(list(limits), lambda alias, model: PRICE)


def _budget(name: str, amount: int, key: str = "key:k1") -> Limit:
    kind = "budget_cost" if name == "cost" else "budget_tokens"
    return Limit(f"{key}:{kind}:d1", kind, amount, 1.0, resets_at=4_000_000_000.0,
                 owner=f"key '{key}'", label="day")


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_token_budget_admits_exactly_n_of_a_3n_burst(kind: str,
                                                           redis: RedisServer) -> None:
    n, estimate = 7, 150
    store = await _store(kind, Clock(), redis, f"t-burst-{kind}:")
    # A provider limit in the same reservation, with room for everything.
    rl = RateLimiter.from_config(RateLimitConfig(requests_per_minute=1000), {}, {},
                                 store=store, charges=True)
    rl.scopes["provider:p"] = [Limit("provider:p:requests", "requests", 1000, 60.0)]
    charge = _charge(_budget("tokens", n * estimate))
    try:
        results = await asyncio.gather(*(rl.acquire("p", "m", estimate, model="m",
                                                    charge=charge) for _ in range(3 * n)))
        admitted = [r for r in results if isinstance(r, Admission)]
        denied = [r for r in results if isinstance(r, Denied)]
        assert len(admitted) == n
        assert len(denied) == 2 * n
        assert all(d.caller and d.limit == "budget_tokens" for d in denied)
        assert "max_tokens = 1050 per day is spent" in denied[0].message
        assert "resets at 2096-10-02T07:06:40Z" in denied[0].message
        # The provider's own count took only the admitted ones.
        assert min(a.remaining[0] for a in admitted) == 1000 - n
    finally:
        await rl.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_settlement_gives_back_and_charges_overshoot(kind: str,
                                                           redis: RedisServer) -> None:
    store = await _store(kind, Clock(), redis, f"t-settle-{kind}:")
    rl = RateLimiter({}, store, charges=True)
    tokens = _budget("tokens", 1000)
    charge = _charge(tokens)
    try:
        a = await rl.acquire("p", "m", 400, charge=charge)
        assert isinstance(a, Admission)
        rl.settle_later(a, usage=Usage(input_tokens=50, output_tokens=50))  # 300 back
        b = await rl.acquire("p", "m", 400, charge=charge)
        assert isinstance(b, Admission)
        # A stream that used more than it reserved is charged the overshoot.
        rl.settle_later(b, usage=Usage(input_tokens=300, output_tokens=500))
        await rl.drain()
        # 100 + 800 used: 100 left; 101 does not fit, 100 does.
        assert isinstance(await rl.acquire("p", "m", 101, charge=charge), Denied)
        assert isinstance(await rl.acquire("p", "m", 100, charge=charge), Admission)
    finally:
        await rl.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_cost_budget_reserves_the_bound_and_settles_to_the_price(
        kind: str, redis: RedisServer) -> None:
    store = await _store(kind, Clock(), redis, f"t-cost-{kind}:")
    rl = RateLimiter({}, store, charges=True)
    # 0.01 USD = 10_000_000 nano-USD; 1000 tokens reserve 1000 * 8 USD/Mtok = 8_000_000.
    charge = _charge(_budget("cost", 10_000_000))
    try:
        a = await rl.acquire("p", "m", 1000, charge=charge)
        assert isinstance(a, Admission)
        assert isinstance(await rl.acquire("p", "m", 1000, charge=charge), Denied)
        # 500 in at 2 USD/Mtok + 100 out at 8 = 1_000_000 + 800_000 nano-USD.
        rl.settle_later(a, usage=Usage(input_tokens=500, output_tokens=100))
        await rl.drain()
        # 8_200_000 left: 1000 tokens fit once more, not twice.
        assert isinstance(await rl.acquire("p", "m", 1000, charge=charge), Admission)
        assert isinstance(await rl.acquire("p", "m", 1000, charge=charge), Denied)
    finally:
        await rl.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_key_and_team_limits_are_taken_together(kind: str, redis: RedisServer) -> None:
    """A team budget shared by two keys: neither key's own room helps past the team's."""
    clock = Clock()
    store = await _store(kind, clock, redis, f"t-team-{kind}:")
    rl = RateLimiter({}, store, charges=True)
    team = _budget("tokens", 300, key="team:t")
    one = _charge(_budget("tokens", 1000, key="key:a"), team)
    two = _charge(_budget("tokens", 1000, key="key:b"),
                  Limit("key:b:requests", "requests", 2, 60.0, owner="key 'b'"), team)
    try:
        assert isinstance(await rl.acquire("p", "m", 100, charge=one), Admission)
        assert isinstance(await rl.acquire("p", "m", 100, charge=two), Admission)
        assert isinstance(await rl.acquire("p", "m", 100, charge=two), Admission)
        # Key b is at its rpm; a refusal takes nothing from the team's budget.
        d = await rl.acquire("p", "m", 100, charge=two)
        assert isinstance(d, Denied) and d.limit == "requests" and d.caller
        assert "Rate limit reached for key 'b'" in d.message
        d = await rl.acquire("p", "m", 1, charge=one)
        assert isinstance(d, Denied) and d.limit == "budget_tokens"
        assert "team:t" in d.message
    finally:
        await rl.aclose()
