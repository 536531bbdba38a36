"""POST /v1/messages (Anthropic's Messages API, for Claude Code and the anthropic SDK) and
/v1/messages/count_tokens, on every provider: byte-faithful to Anthropic-kind ones,
translated through the hub elsewhere. Errors on these routes are in Anthropic's shape (the
app's error handler picks it by path)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.anthropic_types import (
    CountTokensRequest,
    CreateMessageRequest,
    MessageTokensCount,
    decode_count_tokens,
    decode_create_message,
)
from gateway_core.errors import InvalidRequest
from gateway_llm.dialects.messages import MESSAGES
from gateway_llm.hub import LLMRequest
from gateway_llm.limiter import estimate_prompt_tokens
from gateway_llm.providers import AnthropicProvider
from gateway_server.bodies import decode_raw, field_of
from gateway_server.routes.front_door import principal_of, serve, timeout_of, until_disconnect
from gateway_server.state import GatewayState

__all__ = ["ANTHROPIC_PATHS", "routes"]

ANTHROPIC_PATHS = ("/v1/messages",)
# Client headers the Messages front door carries to a native (Anthropic-kind) upstream.
_FORWARDED = ("anthropic-beta",)
_encode = msgspec.json.Encoder().encode


def _invalid(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidRequest:
    if isinstance(exc, msgspec.ValidationError):
        message, param = field_of(exc)
        return InvalidRequest(f"Invalid request: {message}", param=param)
    return InvalidRequest(f"The request body is not valid JSON: {exc}")


def _create(body: bytes) -> CreateMessageRequest:
    try:
        return decode_create_message(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _invalid(exc) from None


def _count(body: bytes) -> CountTokensRequest:
    try:
        return decode_count_tokens(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _invalid(exc) from None


def _forwarded(request: Request) -> dict[str, str]:
    return {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}


async def create_message(request: Request) -> Response:
    body = await request.body()
    raw = decode_raw(body)
    req = _create(body)
    if not req.model:
        raise InvalidRequest("model: Field required", param="model")
    if not req.messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    llm = LLMRequest(MESSAGES, req.model, req, raw, stream=req.stream is True,
                     max_output_tokens=req.max_tokens, headers=_forwarded(request))
    return await serve(request, llm)


async def count_tokens(request: Request) -> Response:
    """Passed through to an Anthropic-kind provider; elsewhere the gateway's own estimate,
    said so in ``x-gateway-token-estimate: true``."""
    state: GatewayState = request.app.state.gateway
    body = await request.body()
    raw = decode_raw(body)
    req = _count(body)
    principal = principal_of(request)
    if state.access is not None and principal is not None:
        state.access.check_model(principal, req.model)
    deployment = state.router.chain(req.model)[0]
    provider = deployment.provider
    if isinstance(provider, AnthropicProvider):
        counted = await until_disconnect(request, provider.count_tokens(
            raw, model=deployment.model, headers=_forwarded(request),
            timeout_s=timeout_of(request)))
        return Response(counted, media_type="application/json",
                        headers={"x-gateway-provider": provider.name,
                                 "x-gateway-model": deployment.model})
    conversation = MESSAGES.to_conversation(_create(_encode({**raw, "max_tokens": 1})))
    estimate = estimate_prompt_tokens(conversation)
    return Response(_encode(MessageTokensCount(input_tokens=estimate)),
                    media_type="application/json",
                    headers={"x-gateway-token-estimate": "true",
                             "x-gateway-provider": provider.name})


routes = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
