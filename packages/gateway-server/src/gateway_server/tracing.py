"""OpenTelemetry traces of the gateway, on when ``[telemetry] enabled = true`` (this module is
imported only then): a server span per request (a client's W3C ``traceparent`` continued),
a client span per upstream attempt with the GenAI semantic conventions' attributes (its
context sent upstream), rate-limit decisions and failovers as events, spans for sandbox
create, execute, command, pause and resume. Spans are exported over OTLP (HTTP/protobuf or
gRPC) in batches by the SDK's background thread; a collector that is down costs a counter.

The router and the sandbox manager report through their observer hooks: the observers here
wrap the Prometheus ones, so with tracing off nothing of this runs."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.re import parse_env_headers
from starlette.types import Scope

from gateway_core.config import ConfigError, LLMConfig, TelemetryConfig
from gateway_llm.hub import LLMRequest, Usage
from gateway_llm.router import RouterObserver
from gateway_sandbox.observer import SandboxObserver
from gateway_server.__about__ import __version__
from gateway_server.metrics import Metrics
from gateway_server.request_record import RequestRecord, current_record

if TYPE_CHECKING:
    from gateway_llm.router import RoutedCompletion, RoutedStream

__all__ = [
    "ContentCapture",
    "RequestSpan",
    "Tracing",
    "TracingRouterObserver",
    "TracingSandboxObserver",
]

_propagator = TraceContextTextMapPropagator()

# gen_ai.operation.name by front door.
_OPERATIONS = {"chat": "chat", "responses": "chat", "messages": "chat",
               "completions": "text_completion", "embeddings": "embeddings"}
# Provider names the GenAI conventions list: a provider configured under one of them is
# named so; any other is named by its kind (openai, anthropic).
_WELL_KNOWN = frozenset({"openai", "anthropic", "groq", "deepseek", "mistral_ai", "perplexity",
                         "x_ai", "cohere", "aws.bedrock", "azure.ai.openai", "gcp.gemini"})


class _ScopeHeaders(Getter[Scope]):
    """Reads traceparent / tracestate from the ASGI scope's raw headers."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.encode()
        values = [v.decode("latin-1") for k, v in carrier["headers"] if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier["headers"]]


_getter = _ScopeHeaders()


# --- content -------------------------------------------------------------------------

# Key-shaped strings: provider keys (sk-, sk-ant-, gsk_, xai-, AKIA...), bearer tokens,
# GitHub and Slack tokens, JWTs.
_KEY_SHAPES = re.compile(
    r"(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}|gsk_[A-Za-z0-9]{8,}|xai-[A-Za-z0-9]{8,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
)
_CONTENT_FIELDS = ("system", "instructions", "messages", "input", "prompt")
_json = msgspec.json.Encoder()


class ContentCapture:
    """Message contents as span attributes (only with capture_content = true): cut to a
    length, key-shaped strings and the gateway's own keys replaced by [REDACTED]."""

    def __init__(self, max_chars: int, secrets: Sequence[str]) -> None:
        self.max_chars = max_chars
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def clean(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        text = _KEY_SHAPES.sub("[REDACTED]", text)
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + "...[truncated]"
        return text

    def request(self, raw: Mapping[str, object]) -> str:
        fields = {k: raw[k] for k in _CONTENT_FIELDS if k in raw}
        return self.clean(_json.encode(fields).decode("utf-8", "replace"))

    def response(self, answer: _Answer) -> str | None:
        """The answer's messages (Chat choices, Messages content, Responses output)."""
        found = [r for c in answer.choices for r in (c.message, c.text)]
        found.extend((answer.content, answer.output))
        parts = [bytes(r) for r in found if len(r) and bytes(r) != b"null"]
        if not parts:
            return None
        joined = b"[" + b",".join(parts) + b"]"
        return self.clean(joined.decode("utf-8", "replace"))


# --- what a non-streamed answer says of itself -----------------------------------------


_NONE = msgspec.Raw(b"")  # absent


class _Choice(msgspec.Struct):
    finish_reason: str | None = None
    message: msgspec.Raw = _NONE  # Chat
    text: msgspec.Raw = _NONE  # Completions


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Answer(msgspec.Struct):
    """The fields of a Chat, Responses, Messages, Completions or Embeddings answer a span
    carries (every dialect's answer decodes; absent fields stay None)."""

    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = []
    stop_reason: str | None = None  # Messages
    content: msgspec.Raw = _NONE  # Messages
    status: str | None = None  # Responses
    incomplete_details: _Incomplete | None = None
    output: msgspec.Raw = _NONE  # Responses


_answer = msgspec.json.Decoder(_Answer)


def _finish_reasons(a: _Answer) -> list[str]:
    if a.choices:
        return [c.finish_reason or "" for c in a.choices]
    if a.stop_reason is not None:
        return [a.stop_reason]
    if a.status is not None:
        if a.status == "incomplete" and a.incomplete_details and a.incomplete_details.reason:
            return [a.incomplete_details.reason]
        return [a.status]
    return []


# --- export ----------------------------------------------------------------------------


class _CountingExporter(SpanExporter):
    """The OTLP exporter, its results counted (gateway_trace_exports_total) and its last
    error kept for readiness. Runs on the batch processor's thread."""

    def __init__(self, inner: SpanExporter, metrics: Metrics) -> None:
        self._inner = inner
        self._ok = metrics.trace_exports.labels("ok")
        self._failed = metrics.trace_exports.labels("failed")
        self._lock = threading.Lock()
        self.exported_spans = 0
        self.failed_exports = 0
        self.last_ok: bool | None = None
        self.last_error: str | None = None
        self.last_export_at: float | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
            error = None if result is SpanExportResult.SUCCESS else "export failed"
        except Exception as exc:  # noqa: BLE001 - an exporter bug must not kill the thread
            result, error = SpanExportResult.FAILURE, type(exc).__name__
        with self._lock:
            self.last_export_at = time.time()
            self.last_ok = error is None
            if error is None:
                self.exported_spans += len(spans)
            else:
                self.failed_exports += 1
                self.last_error = error
        (self._ok if error is None else self._failed).inc()
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _protocol(cfg: TelemetryConfig, env: Mapping[str, str]) -> str:
    protocol = cfg.protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") \
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigError(f"telemetry.protocol: {protocol!r} is not served; expected "
                          "'http/protobuf' or 'grpc'.")
    return protocol


def _exporter(cfg: TelemetryConfig, protocol: str, env: Mapping[str, str]) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GRPCExporter,
        )

        # The gRPC exporter takes explicit headers instead of the environment's: merge.
        headers = dict(parse_env_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                                         or env.get("OTEL_EXPORTER_OTLP_HEADERS", ""),
                                         liberal=True))
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        return GRPCExporter(endpoint=cfg.endpoint, headers=headers or None,
                            timeout=cfg.export_timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPExporter,
    )

    # Merged over OTEL_EXPORTER_OTLP_(TRACES_)HEADERS by the exporter itself.
    return HTTPExporter(endpoint=cfg.endpoint, headers=cfg.headers or None,
                        timeout=cfg.export_timeout_s)


def _shown_endpoint(endpoint: str | None) -> str | None:
    """The endpoint without user info or query (either may carry a credential)."""
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if not parts.scheme:
        return endpoint.split("@")[-1]
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}" \
        f"{parts.path}"


class Tracing:
    """The tracer provider, its batch processor and exporter; started with the app, shut
    down (flushing what is queued, within the export timeout) when it stops."""

    def __init__(self, cfg: TelemetryConfig, metrics: Metrics, llm: LLMConfig, *,
                 secrets: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.cfg = cfg
        self.protocol = _protocol(cfg, env)
        self.endpoint = cfg.endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") \
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        # A collector that is down is shown in readiness and counted, not logged per batch
        # (the exporters' retries) nor per span (the batch processor's "Queue full").
        logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
        logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
        attributes: dict[str, str] = {"service.version": __version__}
        service = cfg.service_name or env.get("OTEL_SERVICE_NAME")
        attributes["service.name"] = service or "agentic-gateway"
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES.
        self.provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        )
        self.exporter = _CountingExporter(_exporter(cfg, self.protocol, env), metrics)
        self.processor = BatchSpanProcessor(
            self.exporter, max_queue_size=cfg.max_queue_size,
            max_export_batch_size=min(512, cfg.max_queue_size),
            export_timeout_millis=cfg.export_timeout_s * 1000,
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("gateway_server", __version__)
        self.capture = ContentCapture(cfg.capture_max_chars, secrets) \
            if cfg.capture_content else None
        self._providers = {name: _provider_facts(name, pc.kind or name, pc.base_url)
                           for name, pc in llm.providers.items()}

    def provider_facts(self, name: str) -> tuple[str, dict[str, str | int]]:
        """(gen_ai.provider.name, server.* attributes) of a configured provider."""
        return self._providers.get(name, (name, {}))

    def shutdown(self) -> None:
        """Blocking: flushes the queue (within the export timeout), stops the thread."""
        self.provider.shutdown()

    def health(self) -> dict[str, object]:
        e = self.exporter
        with e._lock:
            return {"enabled": True, "protocol": self.protocol,
                    "endpoint": _shown_endpoint(self.endpoint),
                    "exported_spans": e.exported_spans, "failed_exports": e.failed_exports,
                    "last_export_ok": e.last_ok, "last_error": e.last_error,
                    "capture_content": self.capture is not None}

    # --- the request's span ----------------------------------------------------------

    def begin(self, scope: Scope, record: RequestRecord, request_id: str) -> RequestSpan:
        """Open the server span (continuing the client's trace) and make it current."""
        # Most requests carry no trace context: the propagator only runs when one does.
        parent = None
        for name, _ in scope["headers"]:
            if name == b"traceparent":
                parent = _propagator.extract(scope, getter=_getter)
                break
        method = scope["method"]
        attributes: dict[str, str | int] = {
            "http.request.method": method, "url.path": scope["path"],
            "gateway.request_id": request_id,
        }
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes)
        rs = RequestSpan(self, span)
        rs.token = otel_context.attach(rs.context)
        record.span = rs
        return rs


def _provider_facts(name: str, kind: str, base_url: str | None,
                    ) -> tuple[str, dict[str, str | int]]:
    server: dict[str, str | int] = {}
    if base_url:
        parts = urlsplit(base_url)
        if parts.hostname:
            server["server.address"] = parts.hostname
    return (name if name in _WELL_KNOWN else kind), server


def _ns(seconds_ago: float = 0.0) -> int:
    return time.time_ns() - int(seconds_ago * 1e9)


Attributes = dict[str, "str | int | float | bool | list[str]"]


class RequestSpan:
    """One request's spans: the server span, and the upstream attempt now open (kept open
    after its answer until the tokens and the answer's facts are on it). What is learnt
    along the way is gathered in dicts and set once per span (each set costs a lock and a
    check per value in the SDK)."""

    __slots__ = ("_attempt", "_attempt_end", "_last", "_later", "_pending", "_reason",
                 "context", "span", "token", "tracing")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span
        self.context = trace.set_span_in_context(span)  # the parent of the request's spans
        self.token: Token[Context] | None = None
        self._later: Attributes = {}  # the server span's, set when it ends
        self._attempt: Span | None = None
        self._pending: Attributes = {}  # the open attempt's, set when it ends
        self._attempt_end: int | None = None  # when a non-streamed attempt's answer came
        self._last: tuple[str, str] | None = None  # (deployment, outcome) of the last attempt
        self._reason: str | None = None  # why the coming attempt moved to another deployment

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    # --- attempts (from the router's observer, in the request's task) ----------------

    def attempt_start(self, provider: str, model: str, api: str, deployment: str,
                      attempt: int, *, start_time: int | None = None) -> dict[str, str]:
        self._end_attempt()
        gen_provider, server = self.tracing.provider_facts(provider)
        operation = _OPERATIONS.get(api, api)
        attributes: Attributes = {
            "gen_ai.operation.name": operation, "gen_ai.provider.name": gen_provider,
            "gen_ai.request.model": model, "gateway.provider": provider,
            "gateway.deployment": deployment, "gateway.attempt": attempt, **server,
        }
        if self._last is not None:
            last_deployment, last_outcome = self._last
            if last_deployment == deployment:
                attributes["gateway.retry_reason"] = last_outcome
            else:
                attributes["gateway.failover_reason"] = self._reason or last_outcome
        self._reason = None
        self._attempt = span = self.tracing.tracer.start_span(
            f"{operation} {model}", context=self.context,
            kind=SpanKind.CLIENT, attributes=attributes, start_time=start_time)
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def attempt(self, provider: str, model: str, outcome: str, seconds: float, api: str,
                deployment: str, stream: bool) -> None:
        span = self._attempt
        if span is None:  # reported without a start (the OpenAI passthrough routes)
            self.attempt_start(provider, model, api, deployment, 0, start_time=_ns(seconds))
            span = self._attempt
            assert span is not None
        pending = self._pending
        pending["gateway.outcome"] = outcome
        self._last = (deployment, outcome)
        if outcome == "ok":
            if stream:
                pending["gen_ai.response.time_to_first_chunk"] = seconds
            else:
                self._attempt_end = _ns()
            return  # left open for the tokens and the answer
        pending["error.type"] = outcome
        if outcome != "cancelled":
            span.set_status(Status(StatusCode.ERROR))
        self._end_attempt()

    def tokens(self, usage: Usage) -> None:
        if self._attempt is not None:
            self._pending["gen_ai.usage.input_tokens"] = usage.input_tokens
            self._pending["gen_ai.usage.output_tokens"] = usage.output_tokens

    def event(self, name: str, attributes: dict[str, str | int]) -> None:
        self.span.add_event(name, attributes)

    def failover(self, from_: str, to: str, reason: str) -> None:
        self._reason = reason
        self.span.add_event("gateway.failover", {"from": from_, "to": to, "reason": reason})

    def _end_attempt(self) -> None:
        span, self._attempt = self._attempt, None
        if span is not None:
            if self._pending:
                span.set_attributes(self._pending)
                self._pending = {}
            end, self._attempt_end = self._attempt_end, None
            span.end(end_time=end)

    # --- the front door's facts ----------------------------------------------------------

    def request(self, llm: LLMRequest) -> None:
        later = self._later
        later["gen_ai.operation.name"] = _OPERATIONS.get(llm.dialect.name, llm.dialect.name)
        later["gen_ai.request.model"] = llm.model
        later["gen_ai.request.stream"] = llm.stream
        capture = self.tracing.capture
        if capture is not None:
            later["gen_ai.input.messages"] = capture.request(llm.raw)

    def routed(self, routed: RoutedCompletion | RoutedStream, body: bytes | None) -> None:
        if body is None:
            return
        try:
            answer = _answer.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        # The answer's facts belong to the attempt that gave it (the GenAI span).
        facts = self._pending if self._attempt is not None else self._later
        if answer.model:
            facts["gen_ai.response.model"] = answer.model
        if answer.id:
            facts["gen_ai.response.id"] = answer.id
        reasons = _finish_reasons(answer)
        if reasons:
            facts["gen_ai.response.finish_reasons"] = reasons
        capture = self.tracing.capture
        if capture is not None:
            output = capture.response(answer)
            if output is not None:
                self._later["gen_ai.output.messages"] = output

    # --- the end -----------------------------------------------------------------------

    def finish(self, record: RequestRecord, method: str, route: str, status: int) -> None:
        self._end_attempt()
        span = self.span
        later = self._later
        if route != "<unmatched>":
            span.update_name(f"{method} {route}")
            later["http.route"] = route
        later["http.response.status_code"] = status
        if record.key_name is not None:
            later["gateway.key"] = record.key_name
        if record.attempts:
            later["gateway.attempts"] = record.attempts
            later["gateway.upstream_outcome"] = record.upstream_outcome or ""
        if record.overhead_ms is not None:
            later["gateway.overhead_ms"] = record.overhead_ms
        if record.sandbox_id is not None:
            later["gateway.sandbox.id"] = record.sandbox_id
        if status >= 500:
            later["error.type"] = str(status)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(later)
        span.end()
        if self.token is not None:
            # Detached in another context: nothing to restore there.
            with contextlib.suppress(ValueError):
                otel_context.detach(self.token)
            self.token = None


# --- observers -------------------------------------------------------------------------


class TracingRouterObserver:
    """The router's observer with spans: every call goes to ``inner`` (the metrics) too."""

    def __init__(self, inner: RouterObserver) -> None:
        self.inner = inner

    def attempt_start(self, provider: str, model: str, api: str, deployment: str,
                      attempt: int) -> Mapping[str, str]:
        self.inner.attempt_start(provider, model, api, deployment, attempt)
        record = current_record()
        if record is None or record.span is None:
            return {}
        return record.span.attempt_start(provider, model, api, deployment, attempt)

    def attempt(self, provider: str, model: str, outcome: str, seconds: float,
                api: str, deployment: str) -> None:
        self.inner.attempt(provider, model, outcome, seconds, api, deployment)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.attempt(provider, model, outcome, seconds, api, deployment,
                                record.stream)

    def failover(self, from_: str, to: str, reason: str) -> None:
        self.inner.failover(from_, to, reason)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.failover(from_, to, reason)

    def tokens(self, provider: str, model: str, usage: Usage) -> None:
        self.inner.tokens(provider, model, usage)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.tokens(usage)

    def circuit(self, provider: str, model: str, deployment: str, is_open: bool) -> None:
        self.inner.circuit(provider, model, deployment, is_open)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.event("gateway.circuit", {"deployment": deployment,
                                                  "state": "open" if is_open else "closed"})

    def open_circuit(self, alias: str, is_open: bool) -> None:
        self.inner.open_circuit(alias, is_open)

    def ratelimited(self, provider: str, limit: str) -> None:
        self.inner.ratelimited(provider, limit)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.event("gateway.rate_limit", {"provider": provider, "limit": limit,
                                                     "decision": "denied"})

    def remaining(self, provider: str, limit: str, value: int) -> None:
        self.inner.remaining(provider, limit, value)
        record = current_record()
        if record is not None and record.span is not None:
            record.span.event("gateway.rate_limit", {"provider": provider, "limit": limit,
                                                     "decision": "admitted",
                                                     "remaining": value})


class TracingSandboxObserver:
    """The sandbox manager's observer with spans, children of the request's span (a root
    span for what the gateway does on its own, such as a pause at the sandbox's timeout)."""

    def __init__(self, inner: SandboxObserver, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    def _span(self, name: str, seconds: float, attributes: dict[str, str | int | bool | float],
              error: bool) -> None:
        record = current_record()
        parent = None
        if record is not None and record.span is not None:
            parent = record.span.context
        span = self.tracing.tracer.start_span(name, context=parent, kind=SpanKind.INTERNAL,
                                              attributes=attributes, start_time=_ns(seconds))
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def on_start(self, backend: str, kind: str, seconds: float, *, sandbox_id: str,
                 runtime: str) -> None:
        self.inner.on_start(backend, kind, seconds, sandbox_id=sandbox_id, runtime=runtime)
        self._span("sandbox.create", seconds, {
            "gateway.sandbox.id": sandbox_id, "gateway.sandbox.runtime": runtime,
            "gateway.sandbox.backend": backend, "gateway.sandbox.start": kind,
            "gateway.sandbox.duration_s": seconds}, False)

    def on_execute(self, runtime: str, outcome: str, seconds: float, *, sandbox_id: str,
                   exit_code: int | None, timed_out: bool) -> None:
        self.inner.on_execute(runtime, outcome, seconds, sandbox_id=sandbox_id,
                              exit_code=exit_code, timed_out=timed_out)
        attributes: dict[str, str | int | bool | float] = {
            "gateway.sandbox.id": sandbox_id, "gateway.sandbox.outcome": outcome,
            "gateway.sandbox.timed_out": timed_out, "gateway.sandbox.duration_s": seconds}
        if runtime != "command":
            attributes["gateway.sandbox.runtime"] = runtime
        if exit_code is not None:
            attributes["process.exit.code"] = exit_code
        self._span("sandbox.command" if runtime == "command" else "sandbox.execute",
                   seconds, attributes, outcome == "failed")

    def on_lifecycle(self, action: str, outcome: str, seconds: float, *,
                     sandbox_id: str) -> None:
        self.inner.on_lifecycle(action, outcome, seconds, sandbox_id=sandbox_id)
        self._span(f"sandbox.{action}", seconds, {
            "gateway.sandbox.id": sandbox_id, "gateway.sandbox.outcome": outcome,
            "gateway.sandbox.duration_s": seconds}, outcome not in ("ok", "cancelled"))
