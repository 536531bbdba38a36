"""POST /v1/completions (the legacy text completions API): decode once, validate, hand to
the router through the hub."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.completions_types import CompletionRequest, prompt_kind
from gateway_core.errors import InvalidRequest
from gateway_core.openai_types import StreamOptions
from gateway_llm.dialects.completions import COMPLETIONS
from gateway_llm.headers import forwarded_headers
from gateway_llm.hub import LLMRequest
from gateway_server.bodies import decode_raw, decode_typed
from gateway_server.routes.front_door import serve

__all__ = ["completions", "llm_request", "routes"]

_request_decoder = msgspec.json.Decoder(CompletionRequest, strict=False)


def _validate(req: CompletionRequest) -> None:
    if not req.model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    prompt = req.prompt
    if prompt is None or isinstance(prompt, msgspec.UnsetType):
        raise InvalidRequest("'prompt' is required.", param="prompt")
    if prompt_kind(prompt) is None:
        raise InvalidRequest("'prompt' must be a string, a list of strings, a list of token "
                             "ids or a list of lists of token ids, not empty.", param="prompt")
    if isinstance(req.n, int) and req.n < 1:
        raise InvalidRequest("'n' must be at least 1.", param="n")


def llm_request(req: CompletionRequest, raw: dict[str, object],
                headers: dict[str, str] | None = None) -> LLMRequest:
    include_usage = (isinstance(req.stream_options, StreamOptions)
                     and req.stream_options.include_usage is True)
    n = req.n if isinstance(req.n, int) else 1
    kind = prompt_kind(req.prompt)
    prompts = len(req.prompt) if isinstance(req.prompt, list) and kind != "tokens" else 1
    return LLMRequest(COMPLETIONS, req.model, req, raw, stream=req.stream is True,
                      include_usage=include_usage,
                      max_output_tokens=req.max_tokens if isinstance(req.max_tokens, int)
                      else None, n=n * prompts, headers=headers or {})


async def completions(request: Request) -> Response:
    body = await request.body()
    raw = decode_raw(body)
    req = decode_typed(_request_decoder, body)
    _validate(req)
    return await serve(request, llm_request(req, raw, forwarded_headers(request.headers)))


routes = [Route("/v1/completions", completions, methods=["POST"])]
