"""What every LLM front door (chat, responses, messages, ...) shares once it has decoded its
request: route it, answer whole or as Server-Sent Events passed on as they arrive, say who
answered in x-gateway-* headers. A client that goes away cancels the upstream request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from gateway_core.errors import GatewayError, InvalidRequest
from gateway_llm.hub import LLMRequest, Usage
from gateway_llm.providers.base import Stream
from gateway_llm.router import Routed, RoutedCompletion, RoutedStream
from gateway_server.access.records import Principal
from gateway_server.event_stream import EventStreamResponse
from gateway_server.request_record import note_request, note_routed
from gateway_server.state import GatewayState

__all__ = ["TIMEOUT_HEADER", "principal_of", "routed_headers", "serve", "timeout_of",
           "until_disconnect"]

T = TypeVar("T")
TIMEOUT_HEADER = "x-gateway-timeout"


def routed_headers(routed: Routed) -> dict[str, str]:
    return {
        **routed.headers,
        "x-gateway-provider": routed.provider,
        "x-gateway-model": routed.model,
        "x-gateway-deployment": routed.deployment,
        "x-gateway-attempts": str(routed.attempts),
        "x-gateway-fallback": "true" if routed.fallback else "false",
    }


def timeout_of(request: Request) -> float | None:
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86400:
        raise InvalidRequest(f"Header {TIMEOUT_HEADER} must be a number of seconds in "
                             "(0, 86400].", param=TIMEOUT_HEADER)
    return seconds


def principal_of(request: Request) -> Principal | None:
    """Who the middleware found the caller to be (None: no keys configured)."""
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


async def route(request: Request, llm: LLMRequest) -> RoutedCompletion | RoutedStream:
    """Route the request (whole or streamed) until it has an answer or its first output.
    With the key store on, the caller's allow-list and limits apply, and the request's
    usage is recorded once it is known (a stream's when it closes)."""
    state: GatewayState = request.app.state.gateway
    timeout_s = timeout_of(request)
    note_request(llm)
    access = state.access
    if access is None:
        routed: RoutedCompletion | RoutedStream
        if llm.stream:
            routed = await until_disconnect(request,
                                            state.router.stream(llm, timeout_s=timeout_s))
        else:
            routed = await until_disconnect(request,
                                            state.router.complete(llm, timeout_s=timeout_s))
        note_routed(routed)
        return routed
    principal = principal_of(request)
    started = time.perf_counter()
    request_id = str(request.scope.get("state", {}).get("request_id", ""))

    def record(routed: Routed | None, usage: Usage | None, status: int) -> None:
        access.record(principal, request_id=request_id, alias=llm.model,
                      api=llm.dialect.name, provider=routed.provider if routed else None,
                      model=routed.model if routed else None, usage=usage, status=status,
                      latency_s=time.perf_counter() - started)

    try:
        charge = None
        if principal is not None:
            access.check_model(principal, llm.model)
            access.check_recording(principal)
            charge = access.charge(principal)
        if llm.stream:
            routed = await until_disconnect(request, state.router.stream(
                llm, timeout_s=timeout_s, charge=charge))
        else:
            routed = await until_disconnect(request, state.router.complete(
                llm, timeout_s=timeout_s, charge=charge))
    except GatewayError as exc:
        record(None, None, exc.status)
        raise
    except asyncio.CancelledError:
        record(None, None, 499)  # the client went away (nginx's code for it)
        raise
    note_routed(routed)
    if isinstance(routed, RoutedStream):
        stream = routed.stream
        routed.stream = _RecordedStream(stream, lambda: record(routed, stream.usage, 200))
    else:
        record(routed, routed.completion.usage, 200)
    return routed


class _RecordedStream:
    """A routed stream whose closing (however it ended) records its usage, once."""

    def __init__(self, stream: Stream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def headers(self) -> dict[str, str]:
        return self._stream.headers

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


async def serve(request: Request, llm: LLMRequest) -> Response:
    routed = await route(request, llm)
    return respond(routed)


def respond(routed: RoutedCompletion | RoutedStream) -> Response:
    headers = routed_headers(routed)
    if isinstance(routed, RoutedStream):
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return EventStreamResponse(relay(routed), headers=headers)
    return Response(routed.completion.body, media_type="application/json", headers=headers)


async def relay(routed: RoutedStream) -> AsyncIterator[bytes]:
    """Pass the stream on. After its first byte it can no longer fail over: the stream ends
    an upstream failure with the front door's own error event. Closing it settles the
    token reservation (the router's stream does that itself)."""
    stream = routed.stream
    try:
        async for event in stream:
            yield event
    finally:
        await stream.aclose()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run the upstream work in this task; one watcher cancels it if the client
    disconnects first (which closes the upstream connection)."""
    current = asyncio.current_task()
    assert current is not None
    watcher = asyncio.create_task(_cancel_on_disconnect(request, current))
    try:
        return await work
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[object]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel("client disconnected")
            return
