"""POST /v1/responses (the OpenAI Responses API) on every provider, and the stored
responses behind previous_response_id: GET /v1/responses/{id}, its input_items, DELETE.

The gateway keeps each stored response itself and expands ``previous_response_id`` into the
full input before routing, so a conversation survives failover between providers and works
on providers that keep no state (translated ones)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.errors import GatewayError, InvalidRequest, NotFound
from gateway_core.responses_types import ResponsesRequest
from gateway_llm.dialects.responses import RESPONSES, input_items_of, output_items_of
from gateway_llm.headers import forwarded_headers
from gateway_llm.hub import LLMRequest
from gateway_llm.responses_store import StoredResponse, conversation_items
from gateway_llm.router import RoutedStream
from gateway_server.bodies import decode_raw, decode_typed, field_of
from gateway_server.event_stream import EventStreamResponse
from gateway_server.routes import openai_passthrough
from gateway_server.routes.front_door import respond, route, routed_headers
from gateway_server.state import GatewayState

__all__ = ["routes"]

log = structlog.get_logger("gateway.responses")

_request_decoder = msgspec.json.Decoder(ResponsesRequest, strict=False)
_encode = msgspec.json.Encoder().encode
_json = msgspec.json.Decoder()


class _FinalResponse(msgspec.Struct):
    response: dict[str, object] | None = None


_final_decoder = msgspec.json.Decoder(_FinalResponse)
_FINAL_EVENTS = (b"event: response.completed\n", b"event: response.incomplete\n")


def _unknown_response(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param=param,
                    code="response_not_found")


def _all_native(state: GatewayState, model: str) -> bool:
    """Whether every deployment the model may reach serves Responses natively."""
    try:
        chain = state.router.chain(model)
    except GatewayError:
        return False
    return bool(chain) and all(d.provider.serves("responses") for d in chain)


def _typed(raw: dict[str, object]) -> ResponsesRequest:
    try:
        return msgspec.convert(raw, ResponsesRequest, strict=False)
    except msgspec.ValidationError as exc:
        message, param = field_of(exc)
        raise InvalidRequest(f"Invalid request: {message}", param=param) from None


async def create_response(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    body = await request.body()
    raw = decode_raw(body)
    if "model" not in raw:
        # No model to route by (a stored prompt names it): the pass-through provider's.
        passed = await openai_passthrough.relay(request, serving="responses")
        if passed is not None:
            return passed
    req = decode_typed(_request_decoder, body)
    if not req.model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    previous = req.previous_response_id if isinstance(req.previous_response_id, str) else None
    items = input_items_of(raw)
    upstream_previous = False
    if previous is not None:
        stored = await state.responses.get(previous)
        if stored is not None:
            items = conversation_items(stored) + items
            raw = {k: v for k, v in raw.items() if k != "previous_response_id"}
            raw["input"] = items
            req = _typed(raw)
        elif _all_native(state, req.model):
            # Not one the gateway stored (made at the provider itself): every deployment of
            # the model serves Responses natively, so it goes along for the provider to
            # expand; the gateway stores nothing of a conversation it cannot see whole.
            upstream_previous = True
        else:
            raise _unknown_response(previous, "previous_response_id")
    if not items:
        raise InvalidRequest("'input' must contain at least one item.", param="input")
    max_output = req.max_output_tokens if isinstance(req.max_output_tokens, int) else None
    llm = LLMRequest(RESPONSES, req.model, req, raw, stream=req.stream is True,
                     max_output_tokens=max_output,
                     headers=forwarded_headers(request.headers))
    store = req.store is not False and not upstream_previous
    routed = await route(request, llm)
    if isinstance(routed, RoutedStream):
        if not store:
            return respond(routed)
        headers = routed_headers(routed)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return EventStreamResponse(
            _relay_and_store(routed, state, items, req.model, previous), headers=headers)
    if store:
        await _store(state, routed.completion.body, items, req.model, previous)
    return respond(routed)


async def _store(state: GatewayState, body: bytes, items: list[dict[str, object]],
                 model: str, previous: str | None) -> None:
    try:
        response = _json.decode(body)
    except msgspec.DecodeError:
        return
    if not isinstance(response, dict) or not isinstance(response.get("id"), str):
        return
    if previous is not None:
        response["previous_response_id"] = previous
    await state.responses.put(StoredResponse(
        id=response["id"], created_at=int(time.time()), response=msgspec.Raw(_encode(response)),
        input_items=items, output_items=output_items_of(body), model=model,
        previous_response_id=previous,
    ))


async def _relay_and_store(routed: RoutedStream, state: GatewayState,
                           items: list[dict[str, object]], model: str,
                           previous: str | None) -> AsyncIterator[bytes]:
    """Relay the stream; its final event carries the whole response, which is stored."""
    stream = routed.stream
    final: bytes | None = None
    try:
        async for event in stream:
            if event.startswith(_FINAL_EVENTS):
                final = event
            yield event
    finally:
        await stream.aclose()
    if final is not None:
        data = final.split(b"\ndata: ", 1)[-1].rstrip(b"\n")
        try:
            response = _final_decoder.decode(data).response
        except msgspec.DecodeError:
            response = None
        if response is not None:
            await _store(state, _encode(response), items, model, previous)


async def get_response(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    response_id = request.path_params["response_id"]
    stored = await state.responses.get(response_id)
    if stored is None:
        # Not one the gateway stored (made at the provider itself, e.g. in the background,
        # or without a model): the pass-through provider's answer, where there is one.
        if (passed := await openai_passthrough.relay(request, serving="responses")) is not None:
            return passed
        raise _unknown_response(response_id)
    return Response(bytes(stored.response), media_type="application/json")


async def delete_response(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    response_id = request.path_params["response_id"]
    if not await state.responses.delete(response_id):
        if (passed := await openai_passthrough.relay(request, serving="responses")) is not None:
            return passed
        raise _unknown_response(response_id)
    return Response(_encode({"id": response_id, "object": "response.deleted",
                             "deleted": True}), media_type="application/json")


def _listed(response_id: str, index: int, item: dict[str, object]) -> dict[str, object]:
    """An input item as OpenAI lists it: with an id, and a message's content as parts."""
    out = dict(item)
    out.setdefault("type", "message")
    if not isinstance(out.get("id"), str):
        out["id"] = f"msg_{response_id.removeprefix('resp_')}{index:04d}"
    content = out.get("content")
    if out["type"] == "message" and isinstance(content, str):
        kind = "output_text" if out.get("role") == "assistant" else "input_text"
        part: dict[str, object] = {"type": kind, "text": content}
        if kind == "output_text":
            part["annotations"] = []
        out["content"] = [part]
        out.setdefault("status", "completed")
    return out


async def list_input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: ``order`` (desc by default, as OpenAI's),
    ``limit`` (1-100, default 20), ``after`` (an item id)."""
    state: GatewayState = request.app.state.gateway
    response_id = request.path_params["response_id"]
    stored = await state.responses.get(response_id)
    if stored is None:
        if (passed := await openai_passthrough.relay(request, serving="responses")) is not None:
            return passed
        raise _unknown_response(response_id)
    q = request.query_params
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be an integer between 1 and 100.", param="limit")
    items = [_listed(response_id, i, it) for i, it in enumerate(stored.input_items)]
    if order == "desc":
        items.reverse()
    after = q.get("after")
    if after:
        ids = [it.get("id") for it in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}'.", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return Response(_encode({
        "object": "list", "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }), media_type="application/json")


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
