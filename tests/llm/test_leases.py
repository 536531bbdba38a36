"""Leases of Redis limits: far from a limit most reservations are admitted from what this
process leased ahead (no round trip) and their settlement stays here too; nothing is ever
admitted beyond a limit, across several stores (processes) on one Redis; leases go back
when unused and at stop, so what Redis counts in the end is exactly what was spent; near a
limit every reservation goes to Redis again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway_llm.leases import LEASE_FAR, LEASE_SHARE, Leases
from gateway_llm.limit_types import Decision, Limit
from gateway_llm.limiter import Admission, Charge, RateLimiter, RedisLimitStore
from gateway_llm.prices import Price
from tests.llm.test_budgets import Clock
from tests.redis_fixture import RedisServer


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis.url)
    await c.config_resetstat()
    try:
        yield c
    finally:
        await c.aclose()


async def _scripts_run(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in ("evalsha", "eval"))


def _budget(key: str, amount: int) -> Limit:
    return Limit(f"key:{key}:budget_tokens:total", "budget_tokens", amount, 1.0,
                 owner=f"key '{key}'", label="total")


def _charge(*limits: Limit) -> Charge:
    return Charge(list(limits), lambda alias, model: Price())


# --- the table alone -----------------------------------------------------------------


def test_a_lease_admits_only_what_it_holds_and_takes_settlement() -> None:
    clock = Clock()
    leases = Leases(clock, lease_s=60)
    a, b = _budget("a", 100_000), _budget("b", 100_000)
    assert leases.take([a], [10]) is None  # nothing leased yet
    more, used = leases.ask([a], [10])
    assert (more, used) == ([0], [0])  # no answer from Redis yet: nothing to lease on
    leases.answered([a], more, used, Decision(True, [99_990], [0.0]), [10.0])
    more, used = leases.ask([a, b], [10, 10])
    assert more == [320, 0] and used == [0, 0]  # b was never answered for
    leases.answered([a, b], more, used, Decision(True, [0, 0], [0.0, 0.0]), [340.0, 10.0])
    assert leases.units(a.key) == 320
    # Redis counts 340 used, 320 of them held here: the world has spent 20.
    taken = leases.take([a], [100])
    assert taken is not None and taken.admitted and taken.remaining == [100_000 - 120]
    assert leases.take([a, b], [10, 10]) is None  # b holds nothing: to Redis
    assert leases.units(a.key) == 220
    # A cost bigger than the lease: the lease pays its part now, and gets it back when
    # Redis refuses.
    more, used = leases.ask([a], [250])
    assert used == [220] and more == [1000] and leases.units(a.key) == 0
    leases.answered([a], more, used, Decision(False, [0], [0.0], denied_index=0), [1590.0])
    assert leases.units(a.key) == 220
    # Settlement: a refund grows the lease, an overshoot is paid from it as far as it goes.
    assert leases.absorb([a], [-40]) is None and leases.units(a.key) == 260
    assert leases.absorb([a], [230]) is None and leases.units(a.key) == 30
    assert leases.absorb([a, b], [70, 5]) == [40, 5] and leases.units(a.key) == 0
    # An empty lease takes no refund: near a limit what comes back goes to Redis at once.
    assert leases.absorb([a], [-30]) == [-30]
    leases.answered([a], [0], [0], Decision(True, [0], [0.0]), [400.0])
    more, used = leases.ask([a], [10])
    leases.answered([a], more, used, Decision(True, [0], [0.0]), [720.0])
    assert leases.units(a.key) == 320
    limits, deltas = leases.expired(everything=True)
    assert (limits, deltas) == ([a], [-320]) and len(leases) == 0


def test_no_lease_near_the_limit_or_smaller_than_a_cost() -> None:
    clock = Clock()
    leases = Leases(clock, lease_s=60)
    big = _budget("big", 10_000)  # a lease is at most 100
    leases.answered([big], [0], [0], Decision(True, [0], [0.0]),
                    [10_000 - LEASE_FAR * 100 + 50.0])
    assert leases.ask([big], [1]) == ([0], [0])  # fewer than LEASE_FAR leases left
    small = _budget("small", 5_000)  # a lease would be 50: less than one cost of 60
    leases.answered([small], [0], [0], Decision(True, [0], [0.0]), [0.0])
    assert leases.ask([small], [60]) == ([0], [0])
    tiny = _budget("tiny", LEASE_SHARE - 1)
    leases.answered([tiny], [0], [0], Decision(True, [0], [0.0]), [0.0])
    assert leases.ask([tiny], [1]) == ([0], [0])
    off = Leases(clock, lease_s=0)
    off.answered([big], [0], [0], Decision(True, [0], [0.0]), [0.0])
    assert off.ask([big], [1]) == ([0], [0])


# --- in Redis ------------------------------------------------------------------------


async def test_far_from_the_limit_few_round_trips_and_redis_ends_exact(
        redis: RedisServer, client: aioredis.Redis) -> None:
    clock = Clock()
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-lease-far:", clock=clock,
                            lease_s=60)
    rl = RateLimiter({"provider:p": [Limit("provider:p:requests", "requests", 1_000_000,
                                           60.0)]}, store, charges=True)
    charge = _charge(_budget("k", 10_000_000))
    await rl.start()
    n = 400
    try:
        for _ in range(n):
            a = await rl.acquire("p", "m", 100, model="m", charge=charge)
            assert isinstance(a, Admission)
            rl.settle_later(a, 60)  # 40 of the 100 reserved come back
        assert store.health()["leases"] == 2
        assert await _scripts_run(client) <= n // 16
    finally:
        await rl.aclose()  # the leases go back
    assert int(await client.get("t-lease-far:key:k:budget_tokens:total")) == n * 60
    tat_ms = float(await client.get("t-lease-far:provider:p:requests"))
    assert tat_ms == pytest.approx((clock.now + n * 60.0 / 1_000_000) * 1000, abs=1e-6)


async def test_two_stores_never_pass_a_budget_and_give_back_the_rest(
        redis: RedisServer, client: aioredis.Redis) -> None:
    """Two processes' leases on one budget of 2000 requests' worth, 6000 requests in waves
    of 16 split over both: never more than the budget; once both have stopped (leases back)
    a third admits exactly what is left."""
    clock = Clock()
    budget = _budget("shared", 20_000)
    charge = _charge(budget)
    stores = [RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-lease-two:",
                              clock=clock, lease_s=60) for _ in range(3)]
    limiters = [RateLimiter({}, store, charges=True) for store in stores]
    for rl in limiters:
        await rl.start()
    admitted = 0
    try:
        for wave in range(375):
            results = await asyncio.gather(*(
                limiters[(wave + i) % 2].acquire("p", "m", 10, model="m", charge=charge)
                for i in range(16)))
            admitted += sum(isinstance(r, Admission) for r in results)
            assert admitted <= 2000
        assert int(await client.get("t-lease-two:" + budget.key)) == 20_000
        held = stores[0].leases.units(budget.key) + stores[1].leases.units(budget.key)
        assert admitted * 10 + held == 20_000
        await limiters[0].aclose()
        await limiters[1].aclose()
        assert int(await client.get("t-lease-two:" + budget.key)) == admitted * 10
        while isinstance(await limiters[2].acquire("p", "m", 10, model="m", charge=charge),
                         Admission):
            admitted += 1
        assert admitted == 2000
    finally:
        for rl in limiters:
            await rl.aclose()


async def test_one_store_admits_exactly_its_budget(redis: RedisServer) -> None:
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix="t-lease-one:", lease_s=60)
    rl = RateLimiter({}, store, charges=True)
    charge = _charge(_budget("one", 1000))
    await rl.start()
    try:
        results = [await rl.acquire("p", "m", 1, model="m", charge=charge)
                   for _ in range(1200)]
    finally:
        await rl.aclose()
    assert sum(isinstance(r, Admission) for r in results) == 1000
    assert all(isinstance(r, Admission) for r in results[:1000])


async def _leased(redis: RedisServer, prefix: str, budget: Limit, *, requests: int,
                  lease_s: float) -> tuple[RedisLimitStore, RateLimiter]:
    """A started limiter whose store has admitted ``requests`` of 100 units on ``budget``
    (the later ones from its lease)."""
    store = RedisLimitStore(redis.url, timeout_s=2.0, key_prefix=prefix, lease_s=lease_s)
    rl = RateLimiter({}, store, charges=True)
    await rl.start()
    for _ in range(requests):
        assert isinstance(await rl.acquire("p", "m", 100, model="m", charge=_charge(budget)),
                          Admission)
    return store, rl


async def test_an_unused_lease_goes_back(redis: RedisServer, client: aioredis.Redis) -> None:
    budget = _budget("idle", 1_000_000)
    store, rl = await _leased(redis, "t-lease-idle:", budget, requests=5, lease_s=0.2)
    try:
        assert store.leases.units(budget.key) > 0
        await asyncio.sleep(0.6)
        assert store.health()["leases"] == 0
        assert int(await client.get("t-lease-idle:" + budget.key)) == 500
    finally:
        await rl.aclose()


async def test_what_was_never_reserved_is_never_given_back(
        redis: RedisServer, client: aioredis.Redis) -> None:
    """An admission made while the store was down (fail_open) reserved nothing: settling
    or releasing it must not refund into a lease or into Redis."""
    budget = _budget("degraded", 1_000_000)
    store, rl = await _leased(redis, "t-lease-degraded:", budget, requests=3, lease_s=60)
    try:
        held = store.leases.units(budget.key)
        assert held > 0
        rl.settle_later(Admission([budget], [100], 100, "p", [], [], degraded=True), 10)
        await rl.release(Admission([budget], [100], 100, "p", [], [], degraded=True))
        await rl.drain()
        assert store.leases.units(budget.key) == held
    finally:
        await rl.aclose()
    assert int(await client.get("t-lease-degraded:" + budget.key)) == 300
