"""What every LLM front door (chat, responses, messages, ...) shares once it has decoded its
request: route it, answer whole or as Server-Sent Events passed on as they arrive, say who
answered in x-gateway-* headers. A client that goes away cancels the upstream request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway_core.errors import InvalidRequest
from gateway_llm.hub import LLMRequest
from gateway_llm.router import Routed, RoutedCompletion, RoutedStream
from gateway_server.request_record import note_request, note_routed
from gateway_server.state import GatewayState

__all__ = ["TIMEOUT_HEADER", "routed_headers", "serve", "timeout_of", "until_disconnect"]

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


async def route(request: Request, llm: LLMRequest) -> RoutedCompletion | RoutedStream:
    """Route the request (whole or streamed) until it has an answer or its first output."""
    state: GatewayState = request.app.state.gateway
    timeout_s = timeout_of(request)
    note_request(llm)
    routed: RoutedCompletion | RoutedStream
    if llm.stream:
        routed = await until_disconnect(request, state.router.stream(llm, timeout_s=timeout_s))
    else:
        routed = await until_disconnect(request, state.router.complete(llm,
                                                                       timeout_s=timeout_s))
    note_routed(routed)
    return routed


async def serve(request: Request, llm: LLMRequest) -> Response:
    routed = await route(request, llm)
    return respond(routed)


def respond(routed: RoutedCompletion | RoutedStream) -> Response:
    headers = routed_headers(routed)
    if isinstance(routed, RoutedStream):
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return StreamingResponse(relay(routed), media_type="text/event-stream",
                                 headers=headers)
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
