"""GET /v1/models and /v1/models/{id}: the configured aliases, in OpenAI's list format, or
in Anthropic's when the request carries ``anthropic-version`` (the anthropic SDK and
Claude Code send it)."""

from __future__ import annotations

import datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.errors import NotFound
from gateway_core.openai_types import Model, ModelList
from gateway_server.access.records import Principal
from gateway_server.state import GatewayState

__all__ = ["get_model", "list_models", "routes"]

_encode = msgspec.json.Encoder().encode


class AnthropicModel(msgspec.Struct):
    id: str
    display_name: str
    created_at: str  # RFC 3339
    lifecycle: str = "active"
    type: str = "model"


class AnthropicModelList(msgspec.Struct):
    data: list[AnthropicModel]
    has_more: bool
    first_id: str | None
    last_id: str | None


def _models(request: Request) -> list[Model]:
    """The aliases served, those the caller's key allows."""
    state: GatewayState = request.app.state.gateway
    principal = request.scope.get("state", {}).get("principal")
    allows = principal.allows if isinstance(principal, Principal) else None
    return [Model(id=alias, created=state.started_at, owned_by=provider)
            for alias, provider in state.router.models() if allows is None or allows(alias)]


def _anthropic(model: Model) -> AnthropicModel:
    created = datetime.datetime.fromtimestamp(model.created, datetime.UTC)
    return AnthropicModel(id=model.id, display_name=model.id,
                          created_at=created.isoformat().replace("+00:00", "Z"))


def _wants_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


async def list_models(request: Request) -> Response:
    models = _models(request)
    if _wants_anthropic(request):
        data = [_anthropic(m) for m in models]
        body = _encode(AnthropicModelList(data, False, data[0].id if data else None,
                                          data[-1].id if data else None))
    else:
        body = _encode(ModelList(models))
    return Response(body, media_type="application/json")


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model"]
    for m in _models(request):
        if m.id == model_id:
            body = _encode(_anthropic(m)) if _wants_anthropic(request) else _encode(m)
            return Response(body, media_type="application/json")
    raise NotFound(f"The model '{model_id}' does not exist.", param="model",
                   code="model_not_found")


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
