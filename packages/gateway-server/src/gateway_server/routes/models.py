"""GET /v1/models and /v1/models/{id}: the configured aliases, in OpenAI's list format."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.errors import NotFound
from gateway_core.openai_types import Model, ModelList
from gateway_server.state import GatewayState

_encode = msgspec.json.Encoder().encode


def _models(state: GatewayState) -> list[Model]:
    return [Model(id=alias, created=state.started_at, owned_by=provider)
            for alias, provider in state.router.models()]


async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    return Response(_encode(ModelList(_models(state))), media_type="application/json")


async def get_model(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    model_id = request.path_params["model"]
    for m in _models(state):
        if m.id == model_id:
            return Response(_encode(m), media_type="application/json")
    raise NotFound(f"The model '{model_id}' does not exist.", param="model",
                   code="model_not_found")


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
