"""What one HTTP request did, gathered while it runs: who asked (the key's name), which
alias, provider and upstream model answered after how many attempts, the tokens, the time
spent upstream, the sandbox it touched. The middleware creates the record and binds it to the
request's context; the observers and the front doors fill it in; the access line, the
``x-gateway-overhead-ms`` header and the request's span read it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway_llm.router import RoutedCompletion

if TYPE_CHECKING:
    from gateway_llm.hub import LLMRequest
    from gateway_llm.router import RoutedStream
    from gateway_server.tracing import RequestSpan

__all__ = ["RequestRecord", "bind_record", "current_record", "note_request", "note_routed",
           "set_key_name"]


@dataclass(slots=True, eq=False)
class RequestRecord:
    start: float  # time.perf_counter() when the request arrived
    # The caller's key as a name (never the key itself): "key-<index>" for the static
    # server.api_keys; set_key_name() lets another key scheme name it.
    key_name: str | None = None
    api: str | None = None  # the LLM front door (chat, responses, messages, ...)
    stream: bool = False
    alias: str | None = None  # the model the client asked for
    provider: str | None = None
    model: str | None = None  # the upstream model of the last attempt
    deployment: str | None = None
    attempts: int = 0
    upstream_outcome: str | None = None  # the last attempt's outcome (ok, 429, cancelled...)
    # Time spent waiting on upstreams, every attempt together: to the whole answer, or for
    # a stream to its first output.
    upstream_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    overhead_ms: float | None = None
    sandbox_id: str | None = None
    runtime: str | None = None
    backend: str | None = None
    sandbox_outcome: str | None = None
    span: RequestSpan | None = None  # the request's trace while tracing is on

    def attempted(self, api: str, provider: str, model: str, deployment: str, outcome: str,
                  seconds: float) -> None:
        if self.api is None:  # a route that calls upstreams without a front door
            self.api = api
        self.attempts += 1
        self.provider = provider
        self.model = model
        self.deployment = deployment
        self.upstream_outcome = outcome
        self.upstream_s += seconds

    def add_tokens(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens = (self.input_tokens or 0) + input_tokens
        self.output_tokens = (self.output_tokens or 0) + output_tokens

    def overhead_s(self, now: float) -> float | None:
        """The gateway's own share of the time to the response (None: not an LLM request:
        no front door routed it and no upstream was called)."""
        if self.api is None:
            return None
        return max(0.0, now - self.start - self.upstream_s)

    def log_fields(self) -> dict[str, object]:
        """The access line's fields for what is known (nothing for a plain request)."""
        out: dict[str, object] = {}
        if self.key_name is not None:
            out["key"] = self.key_name
        if self.alias is not None:
            out["alias"] = self.alias
        if self.api is not None:
            out["api"] = self.api
        if self.attempts:
            out["provider"] = self.provider
            out["model"] = self.model
            out["deployment"] = self.deployment
            out["attempts"] = self.attempts
            out["upstream_outcome"] = self.upstream_outcome
            out["upstream_ms"] = round(self.upstream_s * 1000, 3)
        if self.input_tokens is not None:
            out["input_tokens"] = self.input_tokens
            out["output_tokens"] = self.output_tokens
        if self.overhead_ms is not None:
            out["overhead_ms"] = self.overhead_ms
        if self.sandbox_id is not None:
            out["sandbox_id"] = self.sandbox_id
        if self.runtime is not None:
            out["runtime"] = self.runtime
        if self.backend is not None:
            out["backend"] = self.backend
        if self.sandbox_outcome is not None:
            out["outcome"] = self.sandbox_outcome
        return out


_current: ContextVar[RequestRecord | None] = ContextVar("gateway_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request this code runs for (None outside a request)."""
    return _current.get()


def bind_record(record: RequestRecord) -> None:
    """Make ``record`` the current one for this request's task (and the tasks it starts)."""
    _current.set(record)


def set_key_name(name: str) -> None:
    """Name the caller's key on the access line and the span: the hook for key schemes
    other than the static list (never pass the key itself)."""
    record = _current.get()
    if record is not None:
        record.key_name = name


def note_request(llm: LLMRequest) -> None:
    """A front door decoded an LLM request: the alias and front door, for the access line
    and the span (and, with capture_content, the messages)."""
    record = _current.get()
    if record is not None:
        record.alias = llm.model
        record.api = llm.dialect.name
        record.stream = llm.stream
        if record.span is not None:
            record.span.request(llm)


def note_routed(routed: RoutedCompletion | RoutedStream) -> None:
    """The router answered: with tracing on, the answer's model, id and finish reasons go
    on the spans (a stream's are not read)."""
    record = _current.get()
    if record is not None and record.span is not None:
        body = routed.completion.body if isinstance(routed, RoutedCompletion) else None
        record.span.routed(routed, body)
