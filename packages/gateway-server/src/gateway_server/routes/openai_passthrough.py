"""The rest of the OpenAI API (files, batches, images, audio, moderations, vector stores,
assistants, ...) passed through to an OpenAI-kind provider. Routes whose body names a
``model`` go where the alias table sends that model (the model replaced by the deployment's);
the others go to the pass-through provider (the one named "openai", else the first
OpenAI-kind one). One route per template, so metrics are labelled by template, never path."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route

from gateway_core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
)
from gateway_llm.hub import Usage
from gateway_llm.limiter import Admission
from gateway_llm.passthrough import (
    boundary_of,
    find_multipart_field,
    forward,
    forwarded_headers,
    iter_body,
    returned_headers,
)
from gateway_llm.providers.base import HTTPProvider, read_body
from gateway_llm.router import Deployment, Router
from gateway_server.access.records import Principal
from gateway_server.state import GatewayState

__all__ = ["MODEL_ROUTES", "TEMPLATES", "routes"]

log = structlog.get_logger("gateway.passthrough")

# OpenAI's routes (https://platform.openai.com/docs/api-reference) relative to /v1, as the
# openai-python SDK calls them. The gateway's own routes come earlier in the app's list, so
# a path they serve never reaches these; the Admin API (/organization, /projects) is absent.
TEMPLATES = (
    "/assistants", "/assistants/{assistant_id}",
    "/audio/speech", "/audio/transcriptions", "/audio/translations",
    "/audio/voice_consents", "/audio/voice_consents/{consent_id}",
    "/audio/voices", "/audio/voices/{voice_id}",
    "/batches", "/batches/{batch_id}", "/batches/{batch_id}/cancel",
    # GET /chat/completions (listing stored ones) stays the chat route's 405.
    "/chat/completions/{completion_id}",
    "/chat/completions/{completion_id}/messages",
    "/chatkit/sessions", "/chatkit/sessions/{session_id}/cancel", "/chatkit/threads",
    "/chatkit/threads/{thread_id}", "/chatkit/threads/{thread_id}/items",
    "/containers", "/containers/{container_id}", "/containers/{container_id}/files",
    "/containers/{container_id}/files/{file_id}",
    "/containers/{container_id}/files/{file_id}/content",
    "/conversations", "/conversations/{conversation_id}",
    "/conversations/{conversation_id}/items",
    "/conversations/{conversation_id}/items/{item_id}",
    "/evals", "/evals/{eval_id}", "/evals/{eval_id}/runs", "/evals/{eval_id}/runs/{run_id}",
    "/evals/{eval_id}/runs/{run_id}/cancel", "/evals/{eval_id}/runs/{run_id}/output_items",
    "/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}",
    "/files", "/files/{file_id}", "/files/{file_id}/content",
    "/fine_tuning/alpha/graders/run", "/fine_tuning/alpha/graders/validate",
    "/fine_tuning/checkpoints/{checkpoint}/permissions",
    "/fine_tuning/checkpoints/{checkpoint}/permissions/{permission_id}",
    "/fine_tuning/jobs", "/fine_tuning/jobs/{job_id}", "/fine_tuning/jobs/{job_id}/cancel",
    "/fine_tuning/jobs/{job_id}/checkpoints", "/fine_tuning/jobs/{job_id}/events",
    "/fine_tuning/jobs/{job_id}/pause", "/fine_tuning/jobs/{job_id}/resume",
    "/images/edits", "/images/generations", "/images/variations",
    "/models/{model}",
    "/moderations",
    "/realtime/calls", "/realtime/calls/{call_id}/accept", "/realtime/calls/{call_id}/hangup",
    "/realtime/calls/{call_id}/refer", "/realtime/calls/{call_id}/reject",
    "/realtime/client_secrets", "/realtime/sessions", "/realtime/transcription_sessions",
    "/responses/compact", "/responses/input_tokens",
    "/skills", "/skills/{skill_id}", "/skills/{skill_id}/content",
    "/skills/{skill_id}/versions", "/skills/{skill_id}/versions/{version}",
    "/skills/{skill_id}/versions/{version}/content",
    "/threads", "/threads/runs", "/threads/{thread_id}", "/threads/{thread_id}/messages",
    "/threads/{thread_id}/messages/{message_id}", "/threads/{thread_id}/runs",
    "/threads/{thread_id}/runs/{run_id}", "/threads/{thread_id}/runs/{run_id}/cancel",
    "/threads/{thread_id}/runs/{run_id}/steps",
    "/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
    "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
    "/uploads", "/uploads/{upload_id}/cancel", "/uploads/{upload_id}/complete",
    "/uploads/{upload_id}/parts",
    "/vector_stores", "/vector_stores/{vector_store_id}",
    "/vector_stores/{vector_store_id}/file_batches",
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}",
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
    "/vector_stores/{vector_store_id}/files",
    "/vector_stores/{vector_store_id}/files/{file_id}",
    "/vector_stores/{vector_store_id}/files/{file_id}/content",
    "/vector_stores/{vector_store_id}/search",
    "/videos", "/videos/{video_id}", "/videos/{video_id}/content",
    "/videos/{video_id}/remix", "/videos/characters", "/videos/characters/{character_id}",
    "/videos/edits", "/videos/extensions",
)
# POSTs whose body (JSON or multipart) names the model that picks the provider.
MODEL_ROUTES = frozenset({
    "/audio/speech", "/audio/transcriptions", "/audio/translations", "/images/edits",
    "/images/generations", "/images/variations", "/moderations", "/responses/compact",
    "/responses/input_tokens", "/videos", "/videos/edits", "/videos/extensions",
    "/realtime/client_secrets", "/realtime/sessions", "/realtime/transcription_sessions",
})
# Sub-routes the table does not know yet, under a resource it does: passed through too,
# labelled by the catch-all's template. Anything else under /v1 stays a 404.
_ROOTS = frozenset(t.split("/")[1] for t in TEMPLATES) - {"models", "responses"}
_CATCH_ALL = "/v1/{path:path}"
_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]
# A JSON answer up to this size is read whole (usage, object ids); bigger ones stream.
_SMALL_JSON = 1024 * 1024
# How many object ids (created at a provider other than the pass-through one) are remembered.
_AFFINITY_SIZE = 50_000
_json = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(dict[str, object])


@dataclass(slots=True)
class _Target:
    provider: HTTPProvider
    deployment: Deployment | None = None  # where a model picked it
    model: str = ""


class _Affinity:
    """Which provider created an object handed out through the gateway, for the objects
    that live elsewhere than the pass-through provider (bounded, oldest forgotten)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._owner: OrderedDict[str, str] = OrderedDict()

    def note(self, object_id: str, provider: str) -> None:
        self._owner[object_id] = provider
        self._owner.move_to_end(object_id)
        while len(self._owner) > self.size:
            self._owner.popitem(last=False)

    def owner(self, path: str) -> str | None:
        if not self._owner:
            return None
        for segment in path.split("/"):
            if (owner := self._owner.get(segment)) is not None:
                return owner
        return None


_affinity = _Affinity(_AFFINITY_SIZE)


def _openai_kind(router: Router) -> list[HTTPProvider]:
    return [p for p in router.providers.values()
            if p.kind == "openai" and isinstance(p, HTTPProvider)]


def _default_provider(router: Router) -> HTTPProvider:
    candidates = _openai_kind(router)
    for p in candidates:
        if p.name == "openai":
            return p
    if not candidates:
        raise NotFound("No OpenAI-kind provider is configured to serve this route.",
                       code="unknown_url")
    return candidates[0]


def _by_path(router: Router, rel: str) -> _Target:
    owner = _affinity.owner(rel)
    if owner is not None:
        p = router.providers.get(owner)
        if isinstance(p, HTTPProvider):
            return _Target(p)
    return _Target(_default_provider(router))


def _by_model(router: Router, model: str) -> list[_Target]:
    """The alias's deployments on OpenAI-kind providers, in chain order."""
    targets = [_Target(d.provider, d, d.model) for d in router.chain(model)
               if d.provider.kind == "openai" and isinstance(d.provider, HTTPProvider)]
    if not targets:
        raise InvalidRequest(f"Model '{model}' is served by a provider without this OpenAI "
                             "API.", param="model", code="unsupported_api")
    return targets


def _not_served(request: Request, known_root: bool) -> None:
    """For the catch-all: what the app would have said without it (405 where a gateway
    route has the path under another method; 404 outside OpenAI's resources), or nothing:
    pass it through."""
    for r in request.app.router.routes:
        if isinstance(r, Route) and r.path != _CATCH_ALL and \
                r.matches(request.scope)[0] == Match.PARTIAL:
            raise HTTPException(405)
    if not known_root:
        raise NotFound(f"Unknown path {request.url.path}.", code="unknown_url")


# --- the request body ---------------------------------------------------------------------


class _Body:
    """The client's body as it streams in; a body over the gateway's cap is remembered so
    the 413 wins over the transport error aiohttp makes of it."""

    def __init__(self, request: Request) -> None:
        self._chunks = request.stream().__aiter__()
        self.too_large: PayloadTooLarge | None = None

    async def next(self) -> bytes | None:
        try:
            while True:
                chunk = await self._chunks.__anext__()
                if chunk:
                    return chunk
        except StopAsyncIteration:
            return None
        except PayloadTooLarge as exc:
            self.too_large = exc
            raise

    async def rest(self, head: bytes) -> AsyncIterator[bytes]:
        if head:
            yield head
        while (chunk := await self.next()) is not None:
            yield chunk


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


@dataclass(slots=True)
class _Outgoing:
    body: bytes | AsyncIterator[bytes] | None
    headers: dict[str, str]
    targets: list[_Target]
    replayable: bool


def _client_headers(request: Request, *, keep_length: bool) -> dict[str, str]:
    headers = forwarded_headers(request.headers)
    for name in ("content-type", "accept"):
        if (value := request.headers.get(name)) is not None:
            headers[name] = value
    if keep_length and (length := request.headers.get("content-length")) is not None:
        headers["content-length"] = length
    return headers


async def _outgoing(request: Request, router: Router, rel: str, by_model: bool,
                    body: _Body) -> _Outgoing:
    if not _has_body(request):
        return _Outgoing(None, _client_headers(request, keep_length=False),
                         [_by_path(router, rel)], True)
    content_type = request.headers.get("content-type", "")
    if by_model and content_type.lower().startswith("application/json"):
        data = await request.body()
        try:
            raw = _raw_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raw = None  # the provider says what is wrong with it
        model = raw.get("model") if raw is not None else None
        headers = _client_headers(request, keep_length=False)
        if raw is None or not isinstance(model, str):
            return _Outgoing(data, headers, [_by_path(router, rel)], True)
        targets = _by_model(router, model)
        raw["model"] = targets[0].model
        return _Outgoing(_json.encode(raw), headers, targets, True)
    boundary = boundary_of(content_type) if by_model else None
    if boundary is None:
        return _Outgoing(body.rest(b""), _client_headers(request, keep_length=True),
                         [_by_path(router, rel)], False)
    # Multipart: read just far enough to find the model field (the SDK sends it before the
    # file), swap in the deployment's model, stream the rest as it comes.
    head = b""
    found = find_multipart_field(head, boundary, b"model")
    while found == "more":
        chunk = await body.next()
        if chunk is None:
            found = "absent"
            break
        head += chunk
        found = find_multipart_field(head, boundary, b"model")
    headers = _client_headers(request, keep_length=True)
    if isinstance(found, str):
        return _Outgoing(body.rest(head), headers, [_by_path(router, rel)], False)
    start, end = found
    model = head[start:end].decode(errors="replace")
    targets = _by_model(router, model)
    upstream = targets[0].model.encode()
    head = head[:start] + upstream + head[end:]
    if "content-length" in headers:
        headers["content-length"] = str(int(headers["content-length"])
                                        + len(upstream) - (end - start))
    return _Outgoing(body.rest(head), headers, targets[:1], False)


# --- the answer ---------------------------------------------------------------------------


def _usage_of(data: object) -> Usage | None:
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    into = usage.get("input_tokens", usage.get("prompt_tokens"))
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    if not isinstance(into, int) and not isinstance(out, int):
        return None
    return Usage(input_tokens=into if isinstance(into, int) else 0,
                 output_tokens=out if isinstance(out, int) else 0)


def _outcome(status: int) -> str:
    return "ok" if status < 400 else f"status_{status // 100}xx"


async def _admit(router: Router, target: _Target) -> Admission | None:
    limiter = router.limiter
    if limiter is None:
        return None
    d = target.deployment
    decision = await limiter.acquire(target.provider.name, d.alias if d else None, 0,
                                     deployment=d.name if d else None)
    if isinstance(decision, Admission):
        return decision
    if router.observer is not None:
        router.observer.ratelimited(decision.provider, decision.limit)
    headers = dict(decision.headers)
    headers["retry-after"] = str(max(1, int(decision.retry_after_s + 0.999)))
    raise RateLimited(decision.message, headers=headers)


def _endpoint(template: str, by_model: bool) -> Callable[[Request], Awaitable[Response]]:
    rel_template = template.removeprefix("/v1")

    async def passthrough(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        router = state.router
        rel = request.url.path.removeprefix("/v1")
        if rel_template == "/{path:path}":
            _not_served(request, rel.split("/")[1] in _ROOTS)
        principal = request.scope.get("state", {}).get("principal")
        if isinstance(principal, Principal) and principal.limited:
            # Spend here is neither reserved nor metered per key: not for virtual keys.
            raise PermissionDenied("Virtual keys cannot use the pass-through OpenAI "
                                   f"endpoints ({rel_template}).", code="not_allowed_for_key")
        body = _Body(request)
        out = await _outgoing(request, router, rel, by_model and request.method == "POST",
                              body)
        query = request.scope.get("query_string", b"").decode("latin-1")
        last: GatewayError | None = None
        for i, target in enumerate(out.targets):
            before = out.targets[i - 1].deployment if i else None
            if before is not None and target.deployment is not None and router.observer:
                router.observer.failover(before.label, target.deployment.label, "passthrough")
            admission = await _admit(router, target)
            started = time.perf_counter()
            try:
                resp = await forward(target.provider, request.method, rel, query,
                                     out.headers, out.body)
            except GatewayError as exc:
                if body.too_large is not None:
                    raise body.too_large from None
                _report(router, target, type(exc).__name__, started)
                await _settle(router, admission, None)
                last = exc
                if out.replayable:
                    continue
                raise
            more = out.replayable and i + 1 < len(out.targets)
            if more and (resp.status == 429 or resp.status >= 500):
                resp.release()
                _report(router, target, _outcome(resp.status), started)
                await _settle(router, admission, None)
                continue
            return await _answer(router, target, resp, admission, started)
        assert last is not None
        raise last

    passthrough.__name__ = f"passthrough {template}"
    return passthrough


def _report(router: Router, target: _Target, outcome: str, started: float) -> None:
    if router.observer is not None:
        d = target.deployment
        router.observer.attempt(target.provider.name, target.model or "-", outcome,
                                time.perf_counter() - started, "passthrough",
                                d.label if d else target.provider.name)


async def _settle(router: Router, admission: Admission | None, usage: Usage | None) -> None:
    if router.limiter is not None and admission is not None:
        await router.limiter.settle(admission, usage.total_tokens if usage else None)


async def _answer(router: Router, target: _Target, resp: aiohttp.ClientResponse,
                  admission: Admission | None, started: float) -> Response:
    provider = target.provider
    limited = admission is not None and bool(admission.limits)
    headers = returned_headers(resp.headers, gateway_limits=limited, content=True)
    if limited and router.limiter is not None and admission is not None:
        headers.update(router.limiter.headers(admission))
    headers["x-gateway-provider"] = provider.name
    if target.deployment is not None:
        headers["x-gateway-model"] = target.model
        headers["x-gateway-deployment"] = target.deployment.name
    _report(router, target, _outcome(resp.status), started)
    content_type = resp.headers.get("content-type", "").lower()
    length = resp.content_length
    if content_type.startswith("application/json") and length is not None \
            and length <= _SMALL_JSON and "content-encoding" not in resp.headers:
        try:
            data = await read_body(resp, provider.name, provider.config.total_timeout_s)
        except Exception:
            await _settle(router, admission, None)
            raise
        finally:
            resp.release()
        usage = _note(router, target, resp.status, data)
        await _settle(router, admission, usage)
        headers.pop("content-length", None)
        return Response(data, status_code=resp.status, headers=headers)
    await _settle(router, admission, None)
    return StreamingResponse(
        iter_body(resp, provider.name, provider.config.first_byte_timeout_s),
        status_code=resp.status, headers=headers)


def _note(router: Router, target: _Target, status: int, data: bytes) -> Usage | None:
    """Usage counted like any call's; the id of an object created away from the
    pass-through provider remembered, so its later routes go back there."""
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    usage = _usage_of(obj) if status < 400 else None
    if usage is not None and router.observer is not None:
        router.observer.tokens(target.provider.name, target.model or "-", usage)
    if status < 400 and isinstance(obj, dict) and isinstance(oid := obj.get("id"), str):
        try:
            default = _default_provider(router).name
        except NotFound:
            default = ""
        if target.provider.name != default:
            _affinity.note(oid, target.provider.name)
    return usage


routes = [Route("/v1" + t, _endpoint("/v1" + t, t in MODEL_ROUTES), methods=_METHODS)
          for t in TEMPLATES]
routes.append(Route(_CATCH_ALL, _endpoint(_CATCH_ALL, False), methods=_METHODS))
