"""The limiter's pipelined Redis connection against a real redis-server: concurrent callers
each get their own reply, error replies raise, a missing script is loaded, a timeout drops
the connection and the next call opens a new one, a restarted server is reconnected to."""

from __future__ import annotations

import asyncio

import pytest

from gateway_llm.redis_pipe import RedisPipe, RedisReplyError
from tests.redis_fixture import RedisServer


async def test_concurrent_callers_get_their_own_replies(redis: RedisServer) -> None:
    pipe = RedisPipe(redis.url, timeout_s=2.0)
    try:
        replies = await asyncio.gather(*(pipe.call("ECHO", f"v{i}") for i in range(500)))
        assert replies == [f"v{i}".encode() for i in range(500)]
        assert await pipe.call("INCRBY", "pipe:n", 5) == 5
        assert await pipe.call("PING") == b"PONG"
    finally:
        await pipe.aclose()


async def test_error_replies_raise_and_the_connection_stays_usable(redis: RedisServer) -> None:
    pipe = RedisPipe(redis.url, timeout_s=2.0)
    try:
        await pipe.call("SET", "pipe:s", "x")
        with pytest.raises(RedisReplyError, match="not an integer"):
            await pipe.call("INCR", "pipe:s")
        assert await pipe.call("GET", "pipe:s") == b"x"
    finally:
        await pipe.aclose()


async def test_scripts_are_loaded_when_redis_lacks_them(redis: RedisServer) -> None:
    pipe = RedisPipe(redis.url, timeout_s=2.0)
    source = "return {KEYS[1], ARGV[1], 7}"
    try:
        await pipe.call("SCRIPT", "FLUSH")
        assert await pipe.script(RedisPipe.sha1(source), source, ["k"], ["a"]) == [b"k", b"a", 7]
        # Cached by the EVAL: the EVALSHA now answers by itself.
        assert await pipe.call("EVALSHA", RedisPipe.sha1(source), 1, "k", "b") == [b"k", b"b", 7]
        with pytest.raises(RedisReplyError):
            await pipe.script(RedisPipe.sha1("return nosuch()"), "return nosuch()", [], [])
    finally:
        await pipe.aclose()


async def test_a_timeout_drops_the_connection_and_the_next_call_reconnects(
        redis: RedisServer) -> None:
    pipe = RedisPipe(redis.url, timeout_s=0.2)
    admin = RedisPipe(redis.url, timeout_s=2.0)
    try:
        assert await pipe.call("PING") == b"PONG"
        await admin.call("CLIENT", "PAUSE", 600, "ALL")
        results = await asyncio.gather(pipe.call("PING"), pipe.call("ECHO", "x"),
                                       return_exceptions=True)
        assert all(isinstance(r, (TimeoutError, ConnectionError)) for r in results), results
        await asyncio.sleep(0.5)
        assert await pipe.call("ECHO", "again") == b"again"
    finally:
        await pipe.aclose()
        await admin.aclose()


async def test_database_from_the_url_and_a_restarted_server() -> None:
    server = RedisServer().start()
    url = server.url.rsplit("/", 1)[0] + "/3"
    pipe = RedisPipe(url, timeout_s=1.0)
    other = RedisPipe(server.url, timeout_s=1.0)  # database 0
    try:
        await pipe.call("SET", "pipe:db", "three")
        assert await other.call("GET", "pipe:db") is None
        server.stop()
        with pytest.raises(OSError):
            await pipe.call("PING")
        server.start()
        assert await pipe.call("PING") == b"PONG"
    finally:
        await pipe.aclose()
        await other.aclose()
        server.stop()


async def test_nothing_listening_is_a_connection_error() -> None:
    dead = RedisServer()  # never started
    pipe = RedisPipe(dead.url, timeout_s=0.5)
    with pytest.raises(OSError):
        await pipe.call("PING")
    await pipe.aclose()


def test_under_uvloop(redis: RedisServer) -> None:
    # The gateway serves on uvloop, whose transports are not asyncio's classes.
    uvloop = pytest.importorskip("uvloop")

    async def calls() -> list[object]:
        pipe = RedisPipe(redis.url, timeout_s=2.0)
        try:
            return list(await asyncio.gather(*(pipe.call("ECHO", str(i)) for i in range(50))))
        finally:
            await pipe.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(calls()) == [str(i).encode() for i in range(50)]
