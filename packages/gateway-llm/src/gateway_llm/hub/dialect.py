"""What a dialect (Chat Completions, Responses, Messages) offers the hub, on both sides:

- as a **front door**: its decoded request as a `Conversation`, a `Result` as its response
  body, hub events as its SSE stream, errors in its own shape;
- as an **upstream**: a `Conversation` as its request body, its response body as a
  `Result`, its SSE stream as hub events, its error bodies as `GatewayError`;
- for **native passthrough** (front door and upstream speak it alike): the client's raw
  body with only the model replaced, and a relay of the upstream's stream events that reads
  usage on the way without re-encoding anything.

Each dialect is one module in `gateway_llm.dialects` exposing one object of this shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from gateway_llm.hub.conversation import Conversation, Result, Usage
from gateway_llm.hub.events import Event

if TYPE_CHECKING:
    from gateway_core.errors import GatewayError

__all__ = [
    "Dialect",
    "DialectName",
    "EncodeOptions",
    "LLMRequest",
    "NativeRelay",
    "Outbound",
    "StreamDecoder",
    "StreamEncoder",
]

DialectName = Literal["chat", "responses", "messages", "completions", "embeddings"]


@dataclass(slots=True)
class LLMRequest:
    """One client request as the router sees it, whatever front door it came through.

    ``typed`` is the front door's decoded request Struct (validated), ``raw`` the client's
    JSON object with unknown fields kept (what a native passthrough forwards). The
    conversation is built from ``typed`` only when something needs it (a translating
    provider, the limiter's estimate) and then kept."""

    dialect: Dialect
    model: str
    typed: object
    raw: dict[str, object]
    stream: bool = False
    include_usage: bool = False  # chat: the client asked for the usage chunk
    # The output the client allows (max_tokens, max_output_tokens, ...), and choices asked.
    max_output_tokens: int | None = None
    n: int = 1
    headers: dict[str, str] = field(default_factory=dict)  # forwarded to native upstreams
    created: int = 0
    _conversation: Conversation | None = None

    def conversation(self) -> Conversation:
        if self._conversation is None:
            self._conversation = self.dialect.to_conversation(self.typed)
        return self._conversation


@dataclass(slots=True)
class EncodeOptions:
    """Per-deployment choices an upstream encoder needs."""

    default_max_tokens: int = 4096
    # Anthropic: how reasoning effort becomes thinking ("adaptive" | "budget" | "off").
    thinking: Literal["adaptive", "budget", "off"] = "budget"
    # Sampling parameters the model refuses, removed before sending.
    drop_params: tuple[str, ...] = ()
    # Hosted tools (web_search, ...) where the upstream has none: drop them or refuse.
    hosted_tools: Literal["drop", "reject"] = "drop"


@dataclass(slots=True)
class Outbound:
    """An encoded upstream request, with what decoding its answer needs to know."""

    body: bytes
    # Messages: the tool that carries a json_schema response format, whose input is the answer.
    json_tool: str | None = None
    # Tools left out because the upstream cannot run them (said in x-gateway-dropped-tools).
    dropped_tools: list[str] = field(default_factory=list)
    # Request params removed for this model (said in x-gateway-dropped-params).
    dropped_params: list[str] = field(default_factory=list)


class StreamEncoder(Protocol):
    """Front door: hub events in, this dialect's SSE event bytes out (each item is one whole
    ``event:``/``data:`` block ending in a blank line)."""

    def feed(self, event: Event) -> list[bytes]: ...

    def close(self) -> list[bytes]:
        """The upstream stream ended normally: whatever ends this dialect's stream."""
        ...

    def fail(self, error: GatewayError) -> list[bytes]:
        """The upstream failed mid-stream: the error as this dialect's terminal event."""
        ...


class StreamDecoder(Protocol):
    """Upstream: this dialect's SSE events in, hub events out. Raises GatewayError for an
    error event. ``done`` once the dialect's terminal event was seen."""

    @property
    def done(self) -> bool: ...

    def feed(self, event: bytes, data: bytes) -> list[Event]: ...


class NativeRelay(Protocol):
    """Native passthrough of a stream: returns the bytes to forward for one upstream SSE
    event (None to drop it), keeping the usage it reports. Raises GatewayError for an
    upstream error event."""

    @property
    def done(self) -> bool: ...

    @property
    def usage(self) -> Usage | None: ...

    def relay(self, event: bytes, data: bytes) -> bytes | None: ...


class Dialect(Protocol):
    @property
    def name(self) -> DialectName: ...

    # --- front door ---
    def to_conversation(self, typed: object) -> Conversation:
        """The decoded request as a Conversation; InvalidRequest naming the field for what
        cannot be represented."""
        ...

    def encode_result(self, result: Result, request: LLMRequest) -> bytes: ...

    def stream_encoder(self, request: LLMRequest) -> StreamEncoder: ...

    def error_body(self, error: GatewayError) -> bytes: ...

    # --- upstream ---
    def encode_request(
        self, conversation: Conversation, *, model: str, stream: bool, options: EncodeOptions
    ) -> Outbound:
        """InvalidRequest naming the field for what this dialect cannot send."""
        ...

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        """Raises msgspec.DecodeError / ValidationError for a body that is not an answer."""
        ...

    def stream_decoder(self, outbound: Outbound) -> StreamDecoder: ...

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        """An upstream error body of this dialect as a client-facing error (keys redacted)."""
        ...

    # --- native passthrough ---
    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes: ...

    def native_usage(self, body: bytes) -> Usage | None: ...

    def native_relay(self, request: LLMRequest) -> NativeRelay: ...
