"""POST /v1/chat/completions: decode once, validate, hand to the router through the hub."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.errors import InvalidRequest
from gateway_core.openai_types import ChatCompletionRequest, StreamOptions
from gateway_llm.dialects.chat import CHAT
from gateway_llm.headers import forwarded_headers
from gateway_llm.hub import LLMRequest
from gateway_server.bodies import decode_raw, decode_typed
from gateway_server.routes.front_door import serve

__all__ = ["chat_completions", "llm_request", "routes"]

_request_decoder = msgspec.json.Decoder(ChatCompletionRequest, strict=False)


def _validate(req: ChatCompletionRequest) -> None:
    if not req.model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    if isinstance(req.n, int) and req.n < 1:
        raise InvalidRequest("'n' must be at least 1.", param="n")


def _max_output(req: ChatCompletionRequest) -> int | None:
    for value in (req.max_completion_tokens, req.max_tokens):
        if isinstance(value, int):
            return value
    return None


def llm_request(req: ChatCompletionRequest, raw: dict[str, object],
                headers: dict[str, str] | None = None) -> LLMRequest:
    """The router's view of a chat request: output limit (max_completion_tokens, the newer
    name, wins over max_tokens), choices, whether the client wants the usage chunk."""
    include_usage = (isinstance(req.stream_options, StreamOptions)
                     and req.stream_options.include_usage is True)
    return LLMRequest(CHAT, req.model, req, raw, stream=req.stream is True,
                      include_usage=include_usage, max_output_tokens=_max_output(req),
                      n=req.n if isinstance(req.n, int) else 1, headers=headers or {})


async def chat_completions(request: Request) -> Response:
    body = await request.body()
    # Decoded twice on purpose: the typed request validates and routes, the raw object
    # keeps unknown fields for OpenAI-kind upstreams (both take microseconds).
    raw = decode_raw(body)
    req = decode_typed(_request_decoder, body)
    _validate(req)
    return await serve(request, llm_request(req, raw, forwarded_headers(request.headers)))


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
