"""The rest of the OpenAI API (files, batches, images, audio, moderations, vector stores,
assistants, ...) passed through to an OpenAI-kind provider. Routes whose body names a
``model`` go where the alias table sends that model (the model replaced by the deployment's);
the others go to the pass-through provider (``[llm.passthrough] provider``; left out, the
one named "openai", else the first OpenAI-kind one), or to the provider that created the
object their path names. ``enabled``, ``allow`` and ``deny`` there say which paths are
served; the Admin API (/v1/organization/*) only with ``admin = true`` and its own key. One
route per template, so metrics are labelled by template, never path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route

from gateway_core.config import PassthroughConfig
from gateway_core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from gateway_llm.circuit import Permit
from gateway_llm.errors import AttemptFailed, classify_status
from gateway_llm.hub import DialectName, Usage
from gateway_llm.limiter import Admission, Denied
from gateway_llm.passthrough import (
    ForwardFailed,
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

__all__ = ["MODEL_ROUTES", "TEMPLATES", "relay", "routes"]

log = structlog.get_logger("gateway.passthrough")

# OpenAI's routes (https://platform.openai.com/docs/api-reference) relative to /v1, as the
# openai-python SDK calls them. The gateway's own routes come earlier in the app's list, so
# a path they serve never reaches these; the Admin API (/organization, /projects) has its own
# route (_admin), off unless configured.
TEMPLATES = (
    "/assistants", "/assistants/{assistant_id}",
    "/audio/speech", "/audio/transcriptions", "/audio/translations",
    "/audio/voice_consents", "/audio/voice_consents/{consent_id}",
    "/audio/voices", "/audio/voices/{voice_id}",
    "/batches", "/batches/{batch_id}", "/batches/{batch_id}/cancel",
    "/chat/completions/{completion_id}",
    "/chat/completions/{completion_id}/messages",
    "/content_provenance_checks",
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
    "/realtime/translations/client_secrets",
    "/responses/compact", "/responses/input_tokens", "/responses/{response_id}/cancel",
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
_ADMIN = ("/v1/organization/{path:path}", "/v1/projects/{path:path}")
# A JSON answer up to this size is read whole (usage, object ids); bigger ones stream.
_SMALL_JSON = 1024 * 1024
# Path segments that are a template's own words, never an object id.
_WORDS = frozenset(seg for t in TEMPLATES for seg in t.split("/")
                   if seg and not seg.startswith("{"))
# Methods that may be sent again after the upstream saw them. A POST may be too when it
# carries an Idempotency-Key, or when the upstream said it did not act on it (429, 401, 403).
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "PUT", "OPTIONS"})
_NOT_ACTED_ON = frozenset({429, 401, 403})
_json = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(dict[str, object])


@dataclass(slots=True)
class _Target:
    provider: HTTPProvider
    deployment: Deployment | None = None  # where a model picked it
    model: str = ""


def _openai_kind(router: Router) -> list[HTTPProvider]:
    return [p for p in router.providers.values()
            if p.kind == "openai" and isinstance(p, HTTPProvider)]


def _default_provider(router: Router, pt: PassthroughConfig) -> HTTPProvider:
    if pt.provider is not None:
        p = router.providers.get(pt.provider)
        if isinstance(p, HTTPProvider) and p.kind == "openai":
            return p
        raise NotFound(f"The pass-through provider {pt.provider!r} is not enabled.",
                       code="unknown_url")
    candidates = _openai_kind(router)
    for p in candidates:
        if p.name == "openai":
            return p
    if not candidates:
        raise NotFound("No OpenAI-kind provider is configured to serve this route.",
                       code="unknown_url")
    return candidates[0]


def _object_ids(rel: str) -> list[str]:
    return [seg for seg in rel.split("/")[2:] if seg and seg not in _WORDS]


async def _by_path(state: GatewayState, rel: str) -> _Target:
    router, pt = state.router, state.config.llm.passthrough
    ids = _object_ids(rel)
    owner = await state.object_owners.owner(ids) if ids else None
    if owner is not None:
        p = router.providers.get(owner)
        if isinstance(p, HTTPProvider):
            return _Target(p)
    return _Target(_default_provider(router, pt))


def _by_model(router: Router, model: str) -> list[_Target]:
    """The alias's deployments on OpenAI-kind providers, in chain order."""
    targets = [_Target(d.provider, d, d.model) for d in router.chain(model)
               if d.provider.kind == "openai" and isinstance(d.provider, HTTPProvider)]
    if not targets:
        raise InvalidRequest(f"Model '{model}' is served by a provider without this OpenAI "
                             "API.", param="model", code="unsupported_api")
    return targets


def _served(pt: PassthroughConfig, rel: str) -> bool:
    """Whether ``[llm.passthrough]`` passes this path (relative to /v1) through."""
    def under(prefix: str) -> bool:
        prefix = prefix.rstrip("/")
        return rel == prefix or rel.startswith(prefix + "/")
    if not pt.enabled:
        return False
    if pt.allow and not any(under(p) for p in pt.allow):
        return False
    return not any(under(p) for p in pt.deny)


def _not_served(request: Request, known_root: bool) -> None:
    """For the catch-all: what the app would have said without it (405 where a gateway
    route has the path under another method; 404 outside OpenAI's resources), or nothing:
    pass it through."""
    for r in request.app.router.routes:
        if isinstance(r, Route) and r.path not in (_CATCH_ALL, *_ADMIN) and \
                r.matches(request.scope)[0] == Match.PARTIAL:
            raise HTTPException(405)
    if not known_root:
        raise NotFound(f"Unknown path {request.url.path}.", code="unknown_url")


# --- the request body ---------------------------------------------------------------------


class _Body:
    """The client's body as it streams in; a body over the gateway's cap is remembered so
    the 413 wins over the transport error aiohttp makes of it. ``started``: whether any of
    it went to an upstream (after which it cannot be sent again)."""

    def __init__(self, request: Request) -> None:
        self._chunks = request.stream().__aiter__()
        self.too_large: PayloadTooLarge | None = None
        self.started = False

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
        self.started = True
        if head:
            yield head
        while (chunk := await self.next()) is not None:
            yield chunk


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


BodyFor = Callable[[_Target], "bytes | AsyncIterator[bytes] | None"]


@dataclass(slots=True)
class _Outgoing:
    body_for: BodyFor  # the body to send to one target (its model swapped in)
    headers: dict[str, str]  # content headers
    targets: list[_Target]
    replayable: bool  # the body is whole in memory: it can be sent again


def _content_headers(request: Request, *, keep_length: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name in ("content-type", "accept"):
        if (value := request.headers.get(name)) is not None:
            headers[name] = value
    if keep_length and (length := request.headers.get("content-length")) is not None:
        headers["content-length"] = length
    return headers


def _fixed(body: bytes | None) -> BodyFor:
    return lambda target: body


async def _outgoing(request: Request, state: GatewayState, rel: str, by_model: bool,
                    body: _Body) -> _Outgoing:
    router = state.router
    if not _has_body(request):
        return _Outgoing(_fixed(None), _content_headers(request, keep_length=False),
                         [await _by_path(state, rel)], True)
    content_type = request.headers.get("content-type", "")
    if by_model and content_type.lower().startswith("application/json"):
        data = await request.body()
        try:
            raw = _raw_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raw = None  # the provider says what is wrong with it
        model = raw.get("model") if raw is not None else None
        headers = _content_headers(request, keep_length=False)
        if raw is None or not isinstance(model, str):
            return _Outgoing(_fixed(data), headers, [await _by_path(state, rel)], True)
        targets = _by_model(router, model)
        parsed = raw

        def json_for(target: _Target) -> bytes:
            parsed["model"] = target.model
            return _json.encode(parsed)
        return _Outgoing(json_for, headers, targets, True)
    boundary = boundary_of(content_type) if by_model else None
    if boundary is None:
        headers = _content_headers(request, keep_length=True)
        rest = body.rest(b"")
        return _Outgoing(lambda target: rest, headers, [await _by_path(state, rel)], False)
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
    headers = _content_headers(request, keep_length=True)
    if isinstance(found, str):
        whole = head
        return _Outgoing(lambda target: body.rest(whole), headers,
                         [await _by_path(state, rel)], False)
    start, end = found
    model = head[start:end].decode(errors="replace")
    targets = _by_model(router, model)
    length = headers.pop("content-length", None)
    prefix, suffix = head[:start], head[end:]

    def multipart_for(target: _Target) -> AsyncIterator[bytes]:
        upstream = target.model.encode()
        if length is not None:
            headers["content-length"] = str(int(length) + len(upstream) - (end - start))
        return body.rest(prefix + upstream + suffix)
    return _Outgoing(multipart_for, headers, targets, False)


# --- the answer ---------------------------------------------------------------------------


def _usage_of(data: object) -> Usage | None:
    """Token usage from a JSON answer that reports it: Chat/Responses style
    (``prompt_tokens``/``input_tokens`` ...), images and audio (``input_tokens``,
    ``output_tokens``, ``total_tokens``)."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    into = usage.get("input_tokens", usage.get("prompt_tokens"))
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    if not isinstance(into, int) and not isinstance(out, int):
        if not isinstance(total, int):
            return None
        into = total  # reported as one figure (e.g. audio seconds-priced models)
    return Usage(input_tokens=into if isinstance(into, int) else 0,
                 output_tokens=out if isinstance(out, int) else 0)


def _outcome(status: int) -> str:
    return "ok" if status < 400 else f"status_{status // 100}xx"


async def _admit(router: Router, target: _Target) -> Admission | Denied | None:
    limiter = router.limiter
    if limiter is None:
        return None
    d = target.deployment
    decision = await limiter.acquire(target.provider.name, d.alias if d else None, 0,
                                     deployment=d.name if d else None)
    if isinstance(decision, Denied) and router.observer is not None:
        router.observer.ratelimited(decision.provider, decision.limit)
    return decision


def _refusal(decision: Denied) -> RateLimited:
    headers = dict(decision.headers)
    headers["retry-after"] = str(max(1, int(decision.retry_after_s + 0.999)))
    return RateLimited(decision.message, headers=headers)


@dataclass(slots=True)
class _Attempt:
    """One try of one target: its breaker permit and limiter admission while in flight."""

    target: _Target
    permit: Permit | None
    admission: Admission | None
    started: float
    count: bool  # the first attempt of this request at the deployment: counts in its breaker


@dataclass(slots=True)
class _Refused:
    """An upstream's error answer kept (read whole) while another attempt is made."""

    target: _Target
    status: int
    headers: dict[str, str]
    body: bytes


async def _walk(state: GatewayState, request: Request, rel: str, out: _Outgoing,
                body: _Body, authorization: str | None = None) -> Response:
    """Try the targets in order and, where sending again is safe (an idempotent request
    with its body in memory, an answer saying the upstream did not act on it, or a failure
    before any byte left), the next one or the same one again after its backoff, within the
    request deadline. Each attempt at a model's deployment goes through that deployment's
    breaker and limits; when none succeeds, the last failure is the client's answer."""
    router = state.router
    query = request.scope.get("query_string", b"").decode("latin-1")
    forwarded = forwarded_headers(request.headers)
    idempotent = request.method in _IDEMPOTENT or "idempotency-key" in request.headers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + router.config.request_timeout_s
    last: GatewayError | _Refused | None = None
    denied: Denied | None = None
    counted: set[str] = set()
    previous: _Target | None = None
    targets = out.targets
    spent: set[int] = set()  # targets whose failure would not pass on a retry
    for round_no in range(router.config.max_retries + 1):
        for i, target in enumerate(targets):
            if loop.time() >= deadline:
                break
            if i in spent:
                continue
            d = target.deployment
            permit: Permit | None = None
            if d is not None:
                if round_no > router.max_retries(d):
                    continue
                permit = router.raw_admit(d)
                if permit is None:
                    if previous is not None or i + 1 < len(targets):
                        continue
                    # Every circuit is open and nothing was tried: never shut the last door.
                    log.warning("circuit_last_door", deployment=d.name)
                    permit = d.breaker.force()
            elif round_no > (target.provider.config.max_retries
                             if target.provider.config.max_retries is not None
                             else router.config.max_retries):
                continue
            decision = await _admit(router, target)
            if isinstance(decision, Denied):
                if d is not None and permit is not None:
                    d.breaker.release(permit)
                denied = decision
                continue
            if previous is not None and previous is not target and router.observer and \
                    previous.deployment is not None and d is not None:
                router.observer.failover(previous.deployment.key, d.key, "passthrough")
            previous = target
            count = d is not None and d.name not in counted
            if d is not None:
                counted.add(d.name)
            attempt = _Attempt(target, permit, decision, time.perf_counter(), count)
            try:
                resp = await forward(target.provider, request.method, rel, query,
                                     out.headers, out.body_for(target),
                                     forwarded=forwarded, authorization=authorization)
            except ForwardFailed as exc:
                if body.too_large is not None:
                    _release(router, attempt)
                    await _settle(router, decision, 0)
                    raise body.too_large from None
                _failed(router, attempt, exc.failure)
                await _settle(router, decision, 0)
                last = exc.failure.error
                if not exc.failure.retryable:
                    spent.add(i)
                if (out.replayable and idempotent) or not (exc.body_sent or body.started):
                    await _pause(router, exc.failure, round_no, i, targets, deadline)
                    continue
                raise last from None
            if resp.status == 429 or resp.status >= 500 or resp.status in (401, 403):
                failure = classify_status(resp.status, UpstreamError("upstream error"),
                                          resp.headers)
                _failed(router, attempt, failure)
                if not failure.retryable:
                    spent.add(i)
                if failure.failover and out.replayable and \
                        (idempotent or resp.status in _NOT_ACTED_ON):
                    try:
                        data = await read_body(resp, target.provider.name,
                                               target.provider.config.total_timeout_s)
                    except AttemptFailed as exc:
                        last = exc.error
                    else:
                        last = _Refused(target, resp.status, dict(resp.headers), data)
                    finally:
                        resp.release()
                    await _settle(router, decision, 0)
                    await _pause(router, failure, round_no, i, targets, deadline)
                    continue
            elif d is not None and permit is not None:
                took = time.perf_counter() - attempt.started
                if resp.status < 400:
                    router.raw_succeeded(d, permit, took, count=count, api="passthrough")
                else:
                    d.breaker.release(permit)  # the request itself was refused
                    _report(router, target, _outcome(resp.status), attempt.started)
            else:
                _report(router, target, _outcome(resp.status), attempt.started)
            return await _answer(state, target, resp, decision)
    if isinstance(last, _Refused):
        headers = returned_headers(last.headers, gateway_limits=False, content=True)
        headers.pop("content-length", None)
        headers["x-gateway-provider"] = last.target.provider.name
        return Response(last.body, status_code=last.status, headers=headers)
    if last is not None:
        raise last
    if denied is not None:
        raise _refusal(denied)
    raise ServiceUnavailable("No deployment can take the request now: every circuit is "
                             "open.", code="no_deployment_available")


async def _pause(router: Router, failure: AttemptFailed, round_no: int, i: int,
                 targets: list[_Target], deadline: float) -> None:
    """Before the next round (the last target of this one failed): its backoff."""
    if failure.retryable and i + 1 == len(targets) and round_no < router.config.max_retries:
        left = deadline - asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, min(router.backoff(round_no, failure.retry_after_s),
                                         left)))


def _release(router: Router, attempt: _Attempt) -> None:
    d = attempt.target.deployment
    if d is not None and attempt.permit is not None:
        d.breaker.release(attempt.permit)


def _failed(router: Router, attempt: _Attempt, failure: AttemptFailed) -> None:
    d = attempt.target.deployment
    took = time.perf_counter() - attempt.started
    if d is not None and attempt.permit is not None:
        router.raw_failed(d, attempt.permit, failure, took, count=attempt.count,
                          api="passthrough")
    else:
        _report(router, attempt.target, failure.reason, attempt.started)


def _endpoint(template: str, by_model: bool) -> Callable[[Request], Awaitable[Response]]:
    rel_template = template.removeprefix("/v1")

    async def passthrough(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        rel = request.url.path.removeprefix("/v1")
        if rel_template == "/{path:path}":
            _not_served(request, rel.split("/")[1] in _ROOTS)
        if not _served(state.config.llm.passthrough, rel):
            raise NotFound(f"Unknown path {request.url.path}.", code="unknown_url")
        principal = request.scope.get("state", {}).get("principal")
        if isinstance(principal, Principal) and principal.limited:
            # Spend here is neither reserved nor metered per key: not for virtual keys.
            raise PermissionDenied("Virtual keys cannot use the pass-through OpenAI "
                                   f"endpoints ({rel_template}).", code="not_allowed_for_key")
        body = _Body(request)
        out = await _outgoing(request, state, rel, by_model and request.method == "POST",
                              body)
        return await _walk(state, request, rel, out, body)

    passthrough.__name__ = f"passthrough {template}"
    return passthrough


async def relay(request: Request, *, serving: DialectName | None = None) -> Response | None:
    """This request passed through as the pass-through routes pass theirs (to the provider
    that created the object its path names, else the pass-through provider), or None when
    ``[llm.passthrough]`` does not serve its path or the pass-through provider does not
    serve API ``serving`` natively: for a gateway route that serves what it knows itself
    (stored responses) and hands the rest on."""
    state: GatewayState = request.app.state.gateway
    rel = request.url.path.removeprefix("/v1")
    pt = state.config.llm.passthrough
    if not _served(pt, rel):
        return None
    try:
        default = _default_provider(state.router, pt)
    except NotFound:
        return None
    if serving is not None and not default.serves(serving):
        return None
    body = _Body(request)
    out = await _outgoing(request, state, rel, False, body)
    return await _walk(state, request, rel, out, body)


async def _admin(request: Request) -> Response:
    """The Admin API (/organization, /projects), only with ``[llm.passthrough] admin =
    true`` and its own key."""
    state: GatewayState = request.app.state.gateway
    pt = state.config.llm.passthrough
    rel = request.url.path.removeprefix("/v1")
    if not (pt.admin and pt.admin_key and pt.enabled) or not _served(pt, rel):
        raise NotFound(f"Unknown path {request.url.path}.", code="unknown_url")
    body = _Body(request)
    target = _Target(_default_provider(state.router, pt))
    if _has_body(request):
        rest = body.rest(b"")
        out = _Outgoing(lambda t: rest, _content_headers(request, keep_length=True),
                        [target], False)
    else:
        out = _Outgoing(_fixed(None), _content_headers(request, keep_length=False),
                        [target], True)
    return await _walk(state, request, rel, out, body, authorization=f"Bearer {pt.admin_key}")


def _report(router: Router, target: _Target, outcome: str, started: float) -> None:
    if router.observer is not None:
        d = target.deployment
        router.observer.attempt(target.provider.name, target.model or "-", outcome,
                                time.perf_counter() - started, "passthrough",
                                d.label if d else target.provider.name)


async def _settle(router: Router, admission: Admission | Denied | None,
                  tokens: int | None) -> None:
    if router.limiter is not None and isinstance(admission, Admission):
        await router.limiter.settle(admission, tokens)


async def _answer(state: GatewayState, target: _Target, resp: aiohttp.ClientResponse,
                  admission: Admission | Denied | None) -> Response:
    router = state.router
    provider = target.provider
    admitted = admission if isinstance(admission, Admission) else None
    limited = admitted is not None and bool(admitted.limits)
    headers = returned_headers(resp.headers, gateway_limits=limited, content=True)
    if limited and router.limiter is not None and admitted is not None:
        headers.update(router.limiter.headers(admitted))
    headers["x-gateway-provider"] = provider.name
    if target.deployment is not None:
        headers["x-gateway-model"] = target.model
        headers["x-gateway-deployment"] = target.deployment.name
    content_type = resp.headers.get("content-type", "").lower()
    length = resp.content_length
    if content_type.startswith("application/json") and length is not None \
            and length <= _SMALL_JSON and "content-encoding" not in resp.headers:
        try:
            data = await read_body(resp, provider.name, provider.config.total_timeout_s)
        except Exception:
            await _settle(router, admitted, None)
            raise
        finally:
            resp.release()
        usage = await _note(state, target, resp.status, data)
        await _settle(router, admitted, usage.total_tokens if usage else None)
        headers.pop("content-length", None)
        return Response(data, status_code=resp.status, headers=headers)
    await _settle(router, admitted, None)
    return StreamingResponse(
        iter_body(resp, provider.name, provider.config.first_byte_timeout_s),
        status_code=resp.status, headers=headers)


async def _note(state: GatewayState, target: _Target, status: int,
                data: bytes) -> Usage | None:
    """Usage counted like any call's; the id of an object created away from the
    pass-through provider remembered, so its later routes go back there."""
    router = state.router
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    usage = _usage_of(obj) if status < 400 else None
    if usage is not None and router.observer is not None:
        router.observer.tokens(target.provider.name, target.model or "-", usage)
    if status < 400 and isinstance(obj, dict) and isinstance(oid := obj.get("id"), str):
        try:
            default = _default_provider(router, state.config.llm.passthrough).name
        except NotFound:
            default = ""
        if target.provider.name != default:
            await state.object_owners.note(oid, target.provider.name)
    return usage


routes = [Route("/v1" + t, _endpoint("/v1" + t, t in MODEL_ROUTES), methods=_METHODS)
          for t in TEMPLATES]
# Listing stored chat completions: the chat route serves POST only.
routes.append(Route("/v1/chat/completions", _endpoint("/v1/chat/completions", False),
                    methods=["GET"]))
routes.extend(Route(t, _admin, methods=_METHODS) for t in _ADMIN)
routes.append(Route(_CATCH_ALL, _endpoint(_CATCH_ALL, False), methods=_METHODS))
