"""Slots (a key's max_sandboxes): at most ``most`` held at once across every store (process)
on one Redis, all of a hold's slots or none; a slot let go is free for any process at once;
a process that crashes frees its slots within the TTL; what Redis loses comes back with
the next heartbeat; with Redis unreachable a hold raises with the slot still counted here.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway_llm.limiter import LimitStoreUnavailable, MemoryLimitStore, RedisLimitStore, Slot
from tests.gateway_process import free_port
from tests.redis_fixture import RedisServer


def _slot(key: str, most: int) -> Slot:
    return Slot(f"key:{key}:sandboxes", most, f"key '{key}'")


@pytest.fixture
async def stores(redis: RedisServer, request: pytest.FixtureRequest,
                 ) -> AsyncIterator[list[RedisLimitStore]]:
    prefix = f"t-slots-{request.node.name}:"
    made = [RedisLimitStore(redis.url, timeout_s=2.0, key_prefix=prefix, slot_ttl_s=0.4)
            for _ in range(3)]
    for store in made:
        await store.start()
    try:
        yield made
    finally:
        for store in made:
            await store.aclose()


async def test_memory_store_counts_its_own() -> None:
    store = MemoryLimitStore()
    one = _slot("m", 2)
    assert await store.hold([one]) is None
    assert await store.hold([one]) is None
    assert await store.hold([one]) == (0, 2)
    await store.let_go([one.key])
    assert await store.hold([one]) is None
    await store.let_go([one.key])
    await store.let_go([one.key])
    assert store.slots.counts == {}


async def test_never_more_than_most_across_processes(stores: list[RedisLimitStore]) -> None:
    slot = _slot("k", 3)
    got = await asyncio.gather(*(stores[i % 3].hold([slot]) for i in range(12)))
    assert sum(1 for g in got if g is None) == 3
    assert all(g == (0, 3) for g in got if g is not None)
    holder = next(s for s in stores if s.slots.held(slot.key))
    others = [s for s in stores if s is not holder]
    await holder.let_go([slot.key])
    # Free for another process at once, and full again after it.
    assert await others[0].hold([slot]) is None
    assert await others[1].hold([slot]) == (0, 3)


async def test_a_hold_takes_all_of_its_slots_or_none(stores: list[RedisLimitStore]) -> None:
    key, team = _slot("k2", 5), Slot("team:t:sandboxes", 1, "team 't'")
    a, b, _ = stores
    assert await a.hold([key, team]) is None
    assert await b.hold([key, team]) == (1, 1)  # the team is full
    assert b.slots.held(key.key) == 0
    # The key's slot was not taken by the refused hold: 4 more fit, not 3.
    assert [await b.hold([key]) for _ in range(5)] == [None] * 4 + [(0, 5)]


async def test_what_redis_loses_comes_back(redis: RedisServer,
                                           stores: list[RedisLimitStore]) -> None:
    slot = _slot("k3", 1)
    a, b, _ = stores
    assert await a.hold([slot]) is None
    admin = aioredis.Redis.from_url(redis.url)
    try:
        await admin.flushall()  # as a Redis restarted without persistence
        field = f"{a.key_prefix}slots:{slot.key}"
        deadline = time.monotonic() + 5
        while await admin.hget(field, a.slots.me) != b"1":  # a's next heartbeat
            assert time.monotonic() < deadline, "the heartbeat did not write the count again"
            await asyncio.sleep(0.02)
        assert await b.hold([slot]) == (0, 1)
        assert 0 < await admin.pttl(field) <= 800  # gone by itself once nobody writes
    finally:
        await admin.aclose()


async def test_unreachable_redis_raises_with_the_slot_counted_here() -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2,
                            slot_ttl_s=0.4)
    await store.start()
    try:
        slot = _slot("k4", 1)
        with pytest.raises(LimitStoreUnavailable):
            await store.hold([slot])
        assert store.slots.held(slot.key) == 1  # the caller decides: go on, or let go
        assert await store.hold([slot]) == (0, 1)  # full here already: no round trip
        await store.let_go([slot.key])
        assert store.slots.held(slot.key) == 0
    finally:
        await store.aclose()


_CRASHING = """
import asyncio, sys
from gateway_llm.limiter import RedisLimitStore, Slot

async def main():
    store = RedisLimitStore(sys.argv[1], timeout_s=2.0, key_prefix=sys.argv[2],
                            slot_ttl_s=2.0)
    await store.start()
    slot = Slot("key:k5:sandboxes", 2, "key 'k5'")
    assert await store.hold([slot]) is None and await store.hold([slot]) is None
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_crashed_process_frees_its_slots_within_the_ttl(
        redis: RedisServer, stores: list[RedisLimitStore]) -> None:
    prefix = stores[0].key_prefix
    slot = Slot("key:k5:sandboxes", 2, "key 'k5'")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CRASHING, redis.url,
                                                prefix, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"held"
        assert await stores[0].hold([slot]) == (0, 2)
        proc.kill()  # no graceful stop: nothing is given back
        await asyncio.wait_for(proc.wait(), 10)
        deadline = time.monotonic() + 10
        while await stores[0].hold([slot]) is not None:
            assert time.monotonic() < deadline, "a dead process's slots still count"
            await asyncio.sleep(0.1)
        assert await stores[0].hold([slot]) is None
        assert await stores[0].hold([slot]) == (0, 2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
