"""How the LLM library opens redis-py clients (stored responses, object owners): a blocking
pool whose every wait — for a free connection, to connect, per command — is bounded by one
timeout, so a burst queues briefly instead of failing with "too many connections" and a Redis
that does not answer never holds a request longer than that. The limit store, on every
request's path, uses one pipelined connection instead (redis_pipe.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_core.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["bounded_redis", "redis_errors"]


def bounded_redis(url: str, timeout_s: float, *, max_connections: int = 64,
                  needed_for: str = "a Redis store") -> Redis:
    """A client for ``url``; ConfigError naming ``needed_for`` if redis-py is missing."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(f"{needed_for} needs the redis package: install gateway-llm "
                          "with its redis extra (gateway-llm[redis])") from None
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s,
        socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    return aioredis.Redis(connection_pool=pool)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a failed Redis call raises (redis-py's errors, timeouts, socket errors)."""
    import redis.exceptions
    return (TimeoutError, OSError, redis.exceptions.RedisError)
