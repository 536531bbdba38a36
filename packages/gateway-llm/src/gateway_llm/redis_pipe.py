"""One pipelined connection to Redis for the limiter's per-request scripts.

redis-py's asyncio client checks a connection out of its pool for every command and walks
its retry, event and parser layers around it: a profile of the gateway with limits in Redis
put ~9 % of the request path's CPU in it. Here every caller writes its command on one shared
connection at once and waits for its own reply; Redis answers in order, so replies are
matched to callers first in, first out. Commands are packed and replies parsed by hiredis
(the C library redis-py itself uses); the URL is read by redis-py's own parser.

A call is bounded by its timeout: one that runs out closes the connection (every call still
waiting on it fails at once with ConnectionError, as redis-py disconnects on a timeout) and
the next call opens a new one. Error replies raise :class:`RedisReplyError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from gateway_core.errors import ConfigError

if TYPE_CHECKING:
    import hiredis

__all__ = ["RedisPipe", "RedisReplyError"]

Arg = str | bytes | int | float


class RedisReplyError(Exception):
    """Redis answered a command with an error reply (its text is the message)."""


class _Connection(asyncio.Protocol):
    """The socket, the reply parser and the callers waiting, in the order they wrote."""

    def __init__(self, reader: hiredis.Reader) -> None:
        self.reader = reader
        self.waiting: collections.deque[asyncio.Future[object]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.close()
                return
            future = self.waiting.popleft()
            if not future.done():  # a caller whose timeout ran out is skipped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"Redis connection lost: {exc}" if exc
                                else "Redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, packed: bytes) -> asyncio.Future[object]:
        if self.closed or self.transport is None:
            raise ConnectionError("Redis connection is closed")
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(packed)
        return future

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # connection_lost fails whoever still waits


class RedisPipe:
    """Commands to the Redis at ``url`` (redis://, rediss:// or unix://, with user,
    password and database as redis-py reads them) over one pipelined connection."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        try:
            import hiredis
            from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
        except ImportError:
            raise ConfigError("the Redis limit store needs the redis and hiredis packages: "
                              "install gateway-llm with its redis extra "
                              "(gateway-llm[redis])") from None
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._pack_command = hiredis.pack_command
        self._reply_error = hiredis.ReplyError
        self._reader = hiredis.Reader
        self.timeout_s = timeout_s
        connection_class = options.get("connection_class")
        self._path: str | None = (str(options["path"])
                                  if connection_class is UnixDomainSocketConnection else None)
        self._host = str(options.get("host") or "localhost")
        self._port = int(options.get("port") or 6379)
        self._ssl = ssl.create_default_context() if connection_class is SSLConnection else None
        self._db = int(options.get("db") or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def call(self, *args: Arg) -> object:
        """Send one command and return its reply (bytes, int, list, ...), within the
        timeout; TimeoutError, ConnectionError (an OSError) or RedisReplyError otherwise."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or conn.closed:
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = await self._connection()
            except TimeoutError:
                self._drop()
                raise
        future = conn.send(self._pack(args))
        # A bare timer rather than asyncio.timeout(): this runs once per request.
        timer = loop.call_at(loop.time() + self.timeout_s, self._expire, conn, future)
        try:
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, self._reply_error):
            raise RedisReplyError(str(reply))
        return reply

    def _expire(self, conn: _Connection, future: asyncio.Future[object]) -> None:
        if not future.done():
            future.set_exception(TimeoutError(f"Redis did not answer within {self.timeout_s}s"))
            if conn is self._conn:
                self._drop()

    async def script(self, sha: str, source: str, keys: Sequence[str],
                     args: Sequence[Arg]) -> object:
        """EVALSHA, and EVAL (which also caches the script) when Redis does not have it."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", source, len(keys), *keys, *args)

    def _pack(self, args: tuple[Arg | None, ...]) -> bytes:
        # hiredis's stub types the command as a 1-tuple (it takes any number of arguments)
        # and leaves the result untyped.
        packed: bytes = self._pack_command(cast("tuple[Arg]", args))
        return packed

    @staticmethod
    def sha1(source: str) -> str:
        return hashlib.sha1(source.encode()).hexdigest()

    async def _connection(self) -> _Connection:
        # One connect at a time; callers arriving meanwhile wait for the same one.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self._reader())
        if self._path is not None:
            await loop.create_unix_connection(lambda: conn, self._path)
        else:
            await loop.create_connection(lambda: conn, self._host, self._port, ssl=self._ssl)
        hello: list[tuple[Arg | None, ...]] = []
        if self._password is not None:
            hello.append(("AUTH", self._username, self._password) if self._username
                         else ("AUTH", self._password))
        if self._db:
            hello.append(("SELECT", self._db))
        for command in hello:
            reply = await conn.send(self._pack(command))
            if isinstance(reply, self._reply_error):
                conn.close()
                raise ConnectionError(f"Redis refused {command[0]!s}: {reply}")
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        self._drop()
