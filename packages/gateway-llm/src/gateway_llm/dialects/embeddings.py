"""The Embeddings dialect (https://platform.openai.com/docs/api-reference/embeddings): the
front door of /v1/embeddings, passthrough only. The client's body goes to an OpenAI-kind
provider with only the model replaced (``encoding_format`` untouched) and the answer comes
back unchanged; its ``usage.prompt_tokens`` settles the limiter's reservation. A provider
without embeddings (Anthropic kind) refuses the request with a 400 naming ``input``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import UnsetType

from gateway_core.completions_types import EmbeddingRequest
from gateway_core.errors import GatewayError, InvalidRequest
from gateway_llm.dialects import chat
from gateway_llm.hub import (
    Conversation,
    DialectName,
    EncodeOptions,
    LLMRequest,
    Message,
    Opaque,
    Outbound,
    Result,
    Text,
    Usage,
)

if TYPE_CHECKING:
    from gateway_llm.hub import Dialect, NativeRelay, StreamDecoder, StreamEncoder

__all__ = ["EMBEDDINGS", "EmbeddingsDialect", "input_text", "native_usage", "to_conversation"]

_encode = msgspec.json.Encoder().encode


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    total_tokens: int | None = None


class _UsageOnly(msgspec.Struct):
    usage: _Usage | None = None


_usage_decoder = msgspec.json.Decoder(_UsageOnly, strict=False)

# Marks the conversation so that a translating encoder refuses it with a 400 on `input`.
NO_EMBEDDINGS = Opaque(kind="embeddings", path="input")


def input_text(value: object) -> str:
    """The input as text for the limiter's estimate (four characters a token): strings
    joined, each token id stood in for by four characters."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, list):
                parts.append("    " * len(item))
            else:
                parts.append("    ")
        return "\n".join(parts)
    return ""


def is_empty(value: object) -> bool:
    """Whether an ``input`` has nothing to embed ("", [], [""], [[]])."""
    if value is None or isinstance(value, UnsetType):
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, list):
        return not value or any(
            (isinstance(item, str | list) and len(item) == 0) for item in value
        )
    return False


def to_conversation(req: EmbeddingRequest) -> Conversation:
    text = input_text(req.input)
    return Conversation(messages=[Message(role="user", parts=[Text(text=text)])],
                        unsupported=[NO_EMBEDDINGS])


def native_body(raw: dict[str, object], *, model: str) -> bytes:
    body = dict(raw)
    body["model"] = model
    return _encode(body)


def native_usage(body: bytes) -> Usage | None:
    """``usage.prompt_tokens`` as input tokens: an embedding has no output tokens."""
    usage = _usage_decoder.decode(body).usage
    if usage is None:
        return None
    tokens = usage.prompt_tokens if usage.prompt_tokens is not None else usage.total_tokens
    return Usage(input_tokens=tokens or 0)


def _no_embeddings() -> InvalidRequest:
    return InvalidRequest("This model's provider has no embeddings API; use a model of an "
                          "OpenAI-kind provider.", param="input")


class EmbeddingsDialect:
    """Embeddings for native passthrough only: every translating path refuses."""

    @property
    def name(self) -> DialectName:
        return "embeddings"

    def to_conversation(self, typed: object) -> Conversation:
        if not isinstance(typed, EmbeddingRequest):
            raise TypeError(f"expected an EmbeddingRequest, got {type(typed).__name__}")
        return to_conversation(typed)

    def encode_result(self, result: Result, request: LLMRequest) -> bytes:
        raise _no_embeddings()

    def stream_encoder(self, request: LLMRequest) -> StreamEncoder:
        raise _no_embeddings()

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_json()

    def encode_request(self, conversation: Conversation, *, model: str, stream: bool,
                       options: EncodeOptions) -> Outbound:
        raise _no_embeddings()

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        raise _no_embeddings()

    def stream_decoder(self, outbound: Outbound) -> StreamDecoder:
        raise _no_embeddings()

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        return chat.error_from_openai(status, body, provider)

    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes:
        return native_body(raw, model=model)

    def native_usage(self, body: bytes) -> Usage | None:
        return native_usage(body)

    def native_relay(self, request: LLMRequest) -> NativeRelay:
        raise _no_embeddings()


EMBEDDINGS = EmbeddingsDialect()

if TYPE_CHECKING:
    _check: Dialect = EMBEDDINGS
