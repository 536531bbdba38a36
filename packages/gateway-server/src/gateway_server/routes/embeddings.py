"""POST /v1/embeddings: decode once, validate, hand to the router (native passthrough to
OpenAI-kind providers; others refuse with a 400)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.completions_types import EmbeddingRequest, prompt_kind
from gateway_core.errors import InvalidRequest
from gateway_llm.dialects.embeddings import EMBEDDINGS, is_empty
from gateway_llm.headers import forwarded_headers
from gateway_llm.hub import LLMRequest
from gateway_server.bodies import decode_raw, decode_typed
from gateway_server.routes.front_door import serve

__all__ = ["embeddings", "routes"]

_request_decoder = msgspec.json.Decoder(EmbeddingRequest, strict=False)


def _validate(req: EmbeddingRequest) -> None:
    if not req.model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    if is_empty(req.input):
        raise InvalidRequest("'input' must not be empty.", param="input")
    if prompt_kind(req.input) is None:
        raise InvalidRequest("'input' must be a string, a list of strings, a list of token "
                             "ids or a list of lists of token ids.", param="input")


async def embeddings(request: Request) -> Response:
    body = await request.body()
    raw = decode_raw(body)
    req = decode_typed(_request_decoder, body)
    _validate(req)
    # An embedding produces no output tokens: the reservation is the input's estimate.
    llm = LLMRequest(EMBEDDINGS, req.model, req, raw, max_output_tokens=0,
                     headers=forwarded_headers(request.headers))
    return await serve(request, llm)


routes = [Route("/v1/embeddings", embeddings, methods=["POST"])]
