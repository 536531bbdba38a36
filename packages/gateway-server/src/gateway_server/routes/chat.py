"""POST /v1/chat/completions: decode once, route, answer — whole, or as Server-Sent Events
passed on as they arrive. A client that goes away cancels the upstream request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway_core.errors import GatewayError, InvalidRequest, UpstreamError
from gateway_core.openai_types import ChatCompletionRequest, StreamOptions
from gateway_llm.router import Routed, RoutedStream
from gateway_server.bodies import decode_raw, decode_typed
from gateway_server.state import GatewayState

log = structlog.get_logger("gateway.chat")
T = TypeVar("T")

_request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
TIMEOUT_HEADER = "x-gateway-timeout"


def _headers(routed: Routed) -> dict[str, str]:
    return {
        **routed.headers,
        "x-gateway-provider": routed.provider,
        "x-gateway-model": routed.model,
        "x-gateway-attempts": str(routed.attempts),
        "x-gateway-fallback": "true" if routed.fallback else "false",
    }


def _timeout(request: Request) -> float | None:
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


def _validate(req: ChatCompletionRequest) -> None:
    if not req.model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    if isinstance(req.n, int) and req.n < 1:
        raise InvalidRequest("'n' must be at least 1.", param="n")


async def chat_completions(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    body = await request.body()
    # Decoded twice on purpose: the typed request validates and routes, the raw object
    # keeps unknown fields for OpenAI-kind upstreams (both take microseconds).
    raw = decode_raw(body)
    req = decode_typed(_request_decoder, body)
    _validate(req)
    timeout_s = _timeout(request)
    router = state.router

    if req.stream:
        include_usage = (isinstance(req.stream_options, StreamOptions)
                         and req.stream_options.include_usage is True)
        routed = await _until_disconnect(
            request, router.stream(req, raw, include_usage=include_usage, timeout_s=timeout_s)
        )
        headers = _headers(routed)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return StreamingResponse(_relay(routed, state), media_type="text/event-stream",
                                 headers=headers)

    result = await _until_disconnect(request, router.complete(req, raw, timeout_s=timeout_s))
    return Response(result.completion.body, media_type="application/json",
                    headers=_headers(result))


async def _relay(routed: RoutedStream, state: GatewayState) -> AsyncIterator[bytes]:
    """Pass the stream on; after its first byte it can no longer fail over, so an upstream
    failure ends it with an error event in OpenAI's shape."""
    stream = routed.stream
    try:
        async for event in stream:
            yield event
    except GatewayError as exc:
        log.warning("stream_failed", provider=routed.provider, error=exc.message)
        yield b"data: " + exc.to_json() + b"\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - transport errors mid-stream
        err = UpstreamError(f"The upstream stream failed: {type(exc).__name__}",
                            code="stream_interrupted")
        log.warning("stream_failed", provider=routed.provider, error=type(exc).__name__)
        yield b"data: " + err.to_json() + b"\n\n"
    finally:
        await stream.aclose()
        await state.router.finish_stream(routed)


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
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


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
