"""Stored responses (gateway_llm.responses_store): the memory store's count and age bounds,
and the Redis store against a real redis-server — shared between instances, expiring by
PX, and bounded when the server is stopped, frozen or missing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import redis.asyncio as aioredis

from gateway_core.config import ResponsesConfig
from gateway_core.errors import ConfigError, ServiceUnavailable
from gateway_llm.responses_store import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStore,
    ResponseStoreUnavailable,
    StoredResponse,
    conversation_items,
    store_from_config,
)
from tests.gateway_process import free_port
from tests.redis_fixture import RedisServer, redis_server

BOUND_S = 10.0  # safety net: a call that hangs fails the test instead of the whole run
TIMEOUT_S = 0.3  # the Redis store's timeout in the failure tests
# What "within the timeout" means: the pool wait and the command (2 x timeout) plus slack.
WITHIN_S = TIMEOUT_S * 2 + 0.7

# From the API reference's "Create a model response" example.
USER_TURN: dict[str, object] = {
    "type": "message", "role": "user",
    "content": "Tell me a three sentence bedtime story about a unicorn.",
}
ASSISTANT_TURN: dict[str, object] = {
    "type": "message", "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
    "status": "completed", "role": "assistant",
    "content": [{"type": "output_text", "annotations": [],
                 "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina "
                         "discovered a hidden pool that reflected the stars."}],
}


def stored(id: str | None = None, *, previous: str | None = None,
           input_items: list[dict[str, object]] | None = None,
           output_items: list[dict[str, object]] | None = None) -> StoredResponse:
    rid = id or f"resp_{uuid.uuid4().hex}"
    outputs = [ASSISTANT_TURN] if output_items is None else output_items
    response = {"id": rid, "object": "response", "created_at": 1741476542,
                "status": "completed", "model": "gpt-4.1-2025-04-14", "output": outputs,
                "previous_response_id": previous}
    return StoredResponse(
        id=rid, created_at=1741476542, response=msgspec.Raw(msgspec.json.encode(response)),
        input_items=[USER_TURN] if input_items is None else input_items,
        output_items=outputs, model="fast", previous_response_id=previous)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the helper and the config -----------------------------------------------------------


def test_conversation_items_is_input_then_output() -> None:
    first = stored()
    assert conversation_items(first) == [USER_TURN, ASSISTANT_TURN]
    # The next turn stores its expanded input: the whole conversation so far plus its own.
    follow_up: dict[str, object] = {"type": "message", "role": "user",
                                    "content": "And then?"}
    reply: dict[str, object] = {"type": "message", "role": "assistant", "id": "msg_2",
                                "status": "completed",
                                "content": [{"type": "output_text", "text": "The end.",
                                             "annotations": []}]}
    second = stored(previous=first.id,
                    input_items=[*conversation_items(first), follow_up], output_items=[reply])
    assert conversation_items(second) == [USER_TURN, ASSISTANT_TURN, follow_up, reply]
    # A fresh list: the caller may append its own input without touching the stored one.
    items = conversation_items(first)
    items.append(follow_up)
    assert len(first.input_items) == 1 and len(first.output_items) == 1


@pytest.mark.parametrize(("config", "kind"), [
    (ResponsesConfig(), MemoryResponseStore),
    (ResponsesConfig(store="memory", max_items=7, max_age_s=60.0), MemoryResponseStore),
    (ResponsesConfig(store="redis", redis_url="redis://:pw@127.0.0.1:1/0",
                     redis_timeout_s=0.1, max_age_s=60.0), RedisResponseStore),
])
def test_store_from_config(config: ResponsesConfig, kind: type) -> None:
    store = store_from_config(config)
    assert isinstance(store, kind)
    if isinstance(store, MemoryResponseStore):
        assert (store.max_items, store.max_age_s) == (config.max_items, config.max_age_s)
    if isinstance(store, RedisResponseStore):
        assert (store.timeout_s, store.max_age_s) == (0.1, 60.0)
        assert "pw" not in repr(store)


@pytest.mark.parametrize(("max_items", "max_age_s"), [(0, 60.0), (10, 0.0), (10, -1.0)])
def test_memory_store_refuses_empty_bounds(max_items: int, max_age_s: float) -> None:
    with pytest.raises(ValueError):
        MemoryResponseStore(max_items, max_age_s)


# --- the memory store --------------------------------------------------------------------


async def test_memory_put_get_delete() -> None:
    store: ResponseStore = MemoryResponseStore(10, 60.0)
    await store.start()
    item = stored()
    assert await store.get(item.id) is None
    await store.put(item)
    got = await store.get(item.id)
    assert got == item
    assert got is not None and bytes(got.response) == bytes(item.response)
    assert msgspec.json.decode(got.response)["id"] == item.id
    assert await store.delete(item.id) is True
    assert await store.get(item.id) is None
    assert await store.delete(item.id) is False
    await store.aclose()


async def test_memory_entries_cannot_be_changed_through_what_get_returns() -> None:
    store = MemoryResponseStore(10, 60.0)
    item = stored()
    await store.put(item)
    item.input_items.append({"type": "message", "role": "user", "content": "late"})
    got = await store.get(item.id)
    assert got is not None and got.input_items == [USER_TURN]
    got.output_items.clear()
    again = await store.get(item.id)
    assert again is not None and again.output_items == [ASSISTANT_TURN]


async def test_memory_refuses_what_redis_could_not_hold() -> None:
    store = MemoryResponseStore(10, 60.0)
    with pytest.raises(TypeError):
        await store.put(stored(input_items=[{"type": "message", "content": object()}]))


async def test_memory_count_bound_evicts_the_oldest() -> None:
    store = MemoryResponseStore(3, 60.0)
    items = [stored(f"resp_{i}") for i in range(5)]
    for item in items:
        await store.put(item)
    assert [await store.get(i.id) is not None for i in items] == [False, False, True, True,
                                                                   True]
    assert len(store) == 3 and store.health() == {"backend": "memory", "healthy": True,
                                                  "items": 3}
    # Replacing an id makes it the newest: resp_3 is now the oldest and goes next.
    await store.put(stored("resp_2", output_items=[]))
    await store.put(stored("resp_5"))
    assert [await store.get(f"resp_{i}") is not None for i in range(2, 6)] == [True, False,
                                                                             True, True]
    replaced = await store.get("resp_2")
    assert replaced is not None and replaced.output_items == []


async def test_memory_age_bound_with_an_injected_clock() -> None:
    clock = Clock()
    store = MemoryResponseStore(100, 60.0, clock=clock)
    old, young = stored("resp_old"), stored("resp_young")
    await store.put(old)
    clock.now += 30
    await store.put(young)
    clock.now += 29.9
    assert await store.get(old.id) == old  # 59.9 s old
    clock.now += 0.1
    assert await store.get(old.id) is None  # exactly max_age_s: expired
    assert await store.delete(old.id) is False
    assert await store.get(young.id) == young
    assert len(store) == 1  # the expired entry was pruned, not only hidden
    clock.now += 30
    assert len(store) == 0 and await store.get(young.id) is None
    # A clock that goes back never resurrects anything, nor serves an expired entry.
    await store.put(stored("resp_late"))
    clock.now -= 1000
    assert await store.get("resp_late") is not None
    clock.now += 1060
    assert await store.get("resp_late") is None


async def test_memory_concurrent_puts_gets_and_deletes() -> None:
    store = MemoryResponseStore(50, 60.0)
    items = [stored(f"resp_{i}") for i in range(200)]
    await asyncio.gather(*(store.put(item) for item in items))
    assert len(store) == 50
    assert all(await asyncio.gather(*(store.get(i.id) for i in items[150:])))
    assert not any(await asyncio.gather(*(store.get(i.id) for i in items[:150])))
    # Interleaved writers, readers and deleters on the same ids stay consistent.
    fresh = [stored(f"resp_new_{i}") for i in range(50)]

    async def cycle(item: StoredResponse) -> bool:
        await store.put(item)
        await asyncio.sleep(0)
        seen = await store.get(item.id) == item
        return seen and await store.delete(item.id)

    assert all(await asyncio.gather(*(cycle(item) for item in fresh)))
    assert len(store) == 0


# --- the Redis store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test may stop or freeze it."""
    with redis_server() as server:
        yield server


async def test_redis_put_get_delete(shared_redis: RedisServer) -> None:
    store: ResponseStore = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=60.0)
    await store.start()
    try:
        assert store.health() == {"backend": "redis", "healthy": True, "last_error": None}
        item = stored(previous="resp_before")
        assert await store.get(item.id) is None
        await store.put(item)
        got = await store.get(item.id)
        assert got == item
        assert got is not None and msgspec.json.decode(got.response)["id"] == item.id
        assert await store.delete(item.id) is True
        assert await store.get(item.id) is None
        assert await store.delete(item.id) is False
    finally:
        await store.aclose()


async def test_redis_key_per_response_with_px_expiry(shared_redis: RedisServer) -> None:
    store = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=120.0)
    client = aioredis.Redis.from_url(shared_redis.url)
    await store.start()
    try:
        item = stored()
        await store.put(item)
        key = f"gw:resp:{item.id}"
        assert 118_000 < await client.pttl(key) <= 120_000
        # The value is the StoredResponse as JSON, the Response object embedded as is.
        value = await client.get(key)
        assert isinstance(value, bytes)
        raw = msgspec.json.decode(value)
        assert raw["id"] == item.id and raw["response"]["object"] == "response"
        assert raw["model"] == "fast" and raw["input_items"] == [USER_TURN]
        # Writing again restarts the expiry.
        await client.pexpire(key, 5_000)
        await store.put(item)
        assert await client.pttl(key) > 118_000
        await store.delete(item.id)
        assert await client.exists(key) == 0
    finally:
        await client.aclose()
        await store.aclose()


async def test_redis_entries_expire(shared_redis: RedisServer) -> None:
    store = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=0.2)
    await store.start()
    try:
        item = stored()
        await store.put(item)
        assert await store.get(item.id) == item
        await asyncio.sleep(0.4)
        assert await store.get(item.id) is None
    finally:
        await store.aclose()


async def test_two_stores_on_one_server_share_items(shared_redis: RedisServer) -> None:
    # Two workers (or replicas) of the gateway: one writes turn 1, the other serves turn 2.
    a = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=60.0)
    b = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=60.0)
    await a.start()
    await b.start()
    try:
        first = stored()
        await a.put(first)
        seen = await b.get(first.id)
        assert seen == first
        second = stored(previous=first.id,
                        input_items=[*conversation_items(seen), USER_TURN])
        await b.put(second)
        assert await a.get(second.id) == second
        assert await a.delete(first.id) is True
        assert await b.get(first.id) is None
        assert await b.delete(first.id) is False
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_entry_that_does_not_decode_reads_as_missing(
        shared_redis: RedisServer) -> None:
    store = RedisResponseStore(shared_redis.url, timeout_s=2.0, max_age_s=60.0)
    client = aioredis.Redis.from_url(shared_redis.url)
    await store.start()
    try:
        await client.set("gw:resp:resp_garbage", b"not json", px=60_000)
        await client.set("gw:resp:resp_other_shape", b'{"id": 1}', px=60_000)
        assert await store.get("resp_garbage") is None
        assert await store.get("resp_other_shape") is None
        assert store.health()["healthy"] is True
    finally:
        await client.aclose()
        await store.aclose()


async def test_redis_stopped_is_unavailable_within_the_timeout(own_redis: RedisServer) -> None:
    store = RedisResponseStore(own_redis.url, timeout_s=TIMEOUT_S, max_age_s=60.0)
    await store.start()
    try:
        item = stored()
        await store.put(item)
        own_redis.stop()
        calls = [store.get(item.id), store.put(stored()), store.delete(item.id)]
        for call in calls:
            began = time.monotonic()
            with pytest.raises(ResponseStoreUnavailable) as caught:
                await asyncio.wait_for(call, BOUND_S)
            assert time.monotonic() - began < WITHIN_S
            error = caught.value
            assert isinstance(error, ServiceUnavailable) and error.status == 503
            assert str(own_redis.port) not in error.message and "redis://" not in error.message
        health = store.health()
        assert health["healthy"] is False and health["last_error"]

        own_redis.start()  # same port, empty data
        back = None
        for _ in range(5):  # pooled connections to the old server may fail once each
            try:
                back = await asyncio.wait_for(store.get(item.id), BOUND_S)
                break
            except ResponseStoreUnavailable:
                await asyncio.sleep(0.1)
        assert back is None  # the data went with the old process
        assert store.health()["healthy"] is True
    finally:
        await store.aclose()


async def test_redis_frozen_is_bounded_by_the_timeout(own_redis: RedisServer) -> None:
    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    store = RedisResponseStore(own_redis.url, timeout_s=TIMEOUT_S, max_age_s=60.0)
    await store.start()
    try:
        item = stored()
        await store.put(item)
        # A stopped process still completes TCP handshakes from its backlog but never
        # answers: only the store's own timeouts end the call.
        os.kill(pid, signal.SIGSTOP)
        try:
            for call in [store.get(item.id), store.put(item), store.delete(item.id)]:
                began = time.monotonic()
                with pytest.raises(ResponseStoreUnavailable):
                    await asyncio.wait_for(call, BOUND_S)
                assert time.monotonic() - began < WITHIN_S
        finally:
            os.kill(pid, signal.SIGCONT)
        assert store.health()["healthy"] is False
    finally:
        await store.aclose()


async def test_redis_unreachable_at_start_serves_on_and_says_so() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisResponseStore(url, timeout_s=TIMEOUT_S, max_age_s=60.0)
    began = time.monotonic()
    await asyncio.wait_for(store.start(), BOUND_S)  # does not raise: readiness reports it
    assert time.monotonic() - began < WITHIN_S
    try:
        health = store.health()
        assert health["healthy"] is False and "s3cret" not in str(health["last_error"])
        with pytest.raises(ResponseStoreUnavailable) as caught:
            await asyncio.wait_for(store.get("resp_x"), BOUND_S)
        assert "s3cret" not in caught.value.message and "s3cret" not in repr(store)
    finally:
        await store.aclose()


async def test_redis_store_not_started_is_unavailable() -> None:
    store = RedisResponseStore("redis://127.0.0.1:1/0")
    with pytest.raises(ResponseStoreUnavailable):
        await store.get("resp_x")
    await store.aclose()  # closing what never started is fine


async def test_redis_extra_missing_is_a_clear_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    store = RedisResponseStore("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match=r"gateway-llm\[redis\]"):
        await store.start()
