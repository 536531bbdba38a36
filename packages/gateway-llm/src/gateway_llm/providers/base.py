"""What every provider adapter offers the router, and the HTTP mechanics they share: one
keep-alive aiohttp session per provider, first-byte and total timeouts, SSE reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from gateway_core.config import ProviderConfig
from gateway_core.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway_core.openai_types import ChatCompletionRequest, Usage
from gateway_llm.errors import AttemptFailed, classify_status


@dataclass(slots=True)
class Call:
    """One attempt's input: the decoded request, the client's raw JSON object (unknown
    fields kept), the upstream model, and the time left."""

    request: ChatCompletionRequest
    raw: dict[str, object]
    model: str
    deadline: float  # loop.time() by which the whole request must be done
    include_usage: bool = False  # the client asked for the usage chunk
    extra_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Completion:
    body: bytes  # an OpenAI chat.completion JSON document
    usage: Usage | None


class Stream(Protocol):
    """An upstream stream whose first event has arrived. Iterating yields OpenAI SSE event
    bytes (``data: {...}\\n\\n``) and finally ``data: [DONE]\\n\\n``. ``usage`` is known once
    the stream ended. ``aclose()`` releases the upstream connection."""

    @property
    def usage(self) -> Usage | None: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def config(self) -> ProviderConfig: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def complete(self, call: Call) -> Completion:
        """Raises AttemptFailed."""
        ...

    async def stream(self, call: Call) -> Stream:
        """Returns once the first event is in hand; raises AttemptFailed before that."""
        ...


class HTTPProvider:
    """The session, timeouts and error handling every provider kind shares. A kind sets
    ``url`` and ``headers`` and says how its error bodies read (``error_from``)."""

    url: str
    headers: dict[str, str]

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self._name = name
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        assert config.base_url is not None
        self.base_url = config.base_url

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> ProviderConfig:
        return self._config

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"provider {self._name} used before start()")
        return self._session

    async def start(self) -> None:
        if self._session is not None:
            return
        cfg = self._config
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s),
            auto_decompress=True,
            # Provider APIs set no cookies we want to keep or send back.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Upstream errors are read and mapped by us, never raised by aiohttp.
            raise_for_status=False,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], call: Call
    ) -> aiohttp.ClientResponse:
        """Send the request and return once the response headers are in, within the
        first-byte timeout and the request deadline."""
        loop = asyncio.get_running_loop()
        budget = min(self._config.first_byte_timeout_s, call.deadline - loop.time())
        if budget <= 0:
            raise AttemptFailed(
                UpstreamTimeout("The request deadline passed before the upstream answered."),
                reason="deadline", retryable=False, failover=False,
            )
        try:
            async with asyncio.timeout(budget):
                return await self.session.post(url, data=body, headers=headers)
        except TimeoutError:
            raise AttemptFailed(
                UpstreamTimeout(f"Provider {self._name} sent no response within {budget:.1f}s."),
                reason="first_byte_timeout", retryable=True, failover=True,
            ) from None
        except aiohttp.ClientError as exc:
            raise connection_failed(self._name, exc) from None

    def time_left(self, call: Call) -> float:
        loop = asyncio.get_running_loop()
        return min(self._config.total_timeout_s, call.deadline - loop.time())

    def error_from(self, status: int, body: bytes) -> GatewayError:
        """The provider's error body as a client-facing error (keys redacted)."""
        raise NotImplementedError

    async def send(self, body: bytes, call: Call) -> bytes:
        """POST and read the whole answer; anything but 200 raises AttemptFailed."""
        resp = await self.post(self.url, body, self.headers, call)
        try:
            data = await read_body(resp, self.name, self.time_left(call))
        finally:
            resp.release()
        if resp.status != 200:
            raise classify_status(resp.status, self.error_from(resp.status, data),
                                  resp.headers)
        return data

    async def open_stream(self, body: bytes, call: Call) -> aiohttp.ClientResponse:
        """POST and return the response once its headers say 200; else AttemptFailed."""
        resp = await self.post(self.url, body, self.headers, call)
        if resp.status == 200:
            return resp
        try:
            data = await read_body(resp, self.name, self.time_left(call))
        finally:
            resp.release()
        raise classify_status(resp.status, self.error_from(resp.status, data), resp.headers)


def connection_failed(provider: str, exc: BaseException) -> AttemptFailed:
    # The exception text can include the URL but never headers, so no key leaks here.
    return AttemptFailed(
        UpstreamError(f"Could not reach provider {provider}: {type(exc).__name__}",
                      code="upstream_unreachable"),
        reason="connect_error", retryable=True, failover=True,
    )


def stream_start_failed(provider: str, exc: BaseException) -> AttemptFailed | None:
    """A transport failure before a stream's first event: still safe to fail over."""
    if isinstance(exc, TimeoutError):
        return AttemptFailed(
            UpstreamError(f"Provider {provider} sent no stream data in time.",
                          code="upstream_timeout"),
            reason="first_byte_timeout", retryable=True, failover=True,
        )
    if isinstance(exc, aiohttp.ClientError):
        return connection_failed(provider, exc)
    return None


def empty_stream(provider: str) -> AttemptFailed:
    return AttemptFailed(
        UpstreamError(f"Provider {provider} closed the stream without data."),
        reason="empty_stream", retryable=True, failover=True,
    )


async def read_body(resp: aiohttp.ClientResponse, provider: str, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(max(timeout, 0.001)):
            return await resp.read()
    except TimeoutError:
        raise AttemptFailed(
            UpstreamTimeout(f"Provider {provider} did not finish its response in time."),
            reason="timeout", retryable=False, failover=True,
        ) from None
    except aiohttp.ClientError as exc:
        raise connection_failed(provider, exc) from None


async def sse_events(
    resp: aiohttp.ClientResponse, idle_timeout: float
) -> AsyncGenerator[tuple[bytes, bytes], None]:
    """Yield ``(event_name, data)`` for each Server-Sent Event of the response, as soon as
    its closing blank line arrives. Multi-line data fields are joined with newlines."""
    event = b""
    data: list[bytes] = []
    content = resp.content
    while True:
        async with asyncio.timeout(idle_timeout):
            line = await content.readline()
        if not line:
            if data:
                yield event, b"\n".join(data)
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = b"", []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        # Comments (":") and id/retry fields carry nothing we use.
