"""The legacy Completions dialect (https://platform.openai.com/docs/api-reference/completions):
the front door of /v1/completions. OpenAI-kind providers take it natively (the body
forwarded with only the model replaced, streams asked for usage as chat's are); for any
other provider a string prompt is translated to one user message and the answer written
back as a ``text_completion``. No provider is spoken to in this dialect except natively.
Pure: Structs and bytes in, Structs and bytes out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

import msgspec
from msgspec import UnsetType

from gateway_core.completions_types import (
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
    TextCompletion,
)
from gateway_core.errors import GatewayError, InvalidRequest
from gateway_llm.dialects import chat
from gateway_llm.hub import (
    Conversation,
    DialectName,
    EncodeOptions,
    Event,
    Finish,
    FinishReason,
    LLMRequest,
    Message,
    Opaque,
    Outbound,
    Part,
    Result,
    Start,
    Text,
    TextDelta,
    Usage,
    UsageUpdate,
)

if TYPE_CHECKING:
    from gateway_llm.hub import Dialect, StreamDecoder

__all__ = [
    "COMPLETIONS",
    "CompletionsDialect",
    "CompletionsStreamEncoder",
    "encode_result",
    "to_conversation",
]

_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"

_FINISH_OUT: dict[FinishReason, Literal["stop", "length", "content_filter"]] = {
    "stop": "stop", "length": "length", "tool_calls": "stop",
    "content_filter": "content_filter", "refusal": "content_filter",
}


def _set(value: object) -> object:
    return None if isinstance(value, UnsetType) else value


def _prompt_text(req: CompletionRequest) -> tuple[str, Opaque | None]:
    """The prompt as text, and what makes it untranslatable (token ids, several prompts).
    Token ids are stood in for by four characters each, so the limiter's estimate (four
    characters a token) counts one token per id."""
    prompt = _set(req.prompt)
    if prompt is None:
        return "", None
    if isinstance(prompt, str):
        return prompt, None
    assert isinstance(prompt, list)
    if all(isinstance(p, str) for p in prompt):
        text = "\n".join(str(p) for p in prompt)
        if len(prompt) == 1:
            return text, None
        return text, Opaque(kind="prompt:list", path="prompt", value=prompt)
    tokens = sum(len(p) if isinstance(p, list) else 1 for p in prompt)
    return "    " * tokens, Opaque(kind="prompt:tokens", path="prompt", value=prompt)


def to_conversation(req: CompletionRequest) -> Conversation:
    """The prompt as one user message. What only the legacy API has (token-id prompts,
    several prompts, ``echo``, ``logprobs``, ``best_of`` > 1, ``suffix``) is carried as
    `Opaque` in ``unsupported``: a translating encoder refuses it naming the field, while
    the limiter can still estimate the request and a native provider still gets it."""
    text, untranslatable = _prompt_text(req)
    unsupported: list[Opaque] = [] if untranslatable is None else [untranslatable]
    if req.echo is True:
        unsupported.append(Opaque(kind="param:echo", path="echo", value=True))
    if isinstance(req.logprobs, int):
        unsupported.append(Opaque(kind="param:logprobs", path="logprobs", value=req.logprobs))
    if isinstance(req.best_of, int) and req.best_of > 1:
        unsupported.append(Opaque(kind="param:best_of", path="best_of", value=req.best_of))
    if isinstance(req.suffix, str) and req.suffix:
        unsupported.append(Opaque(kind="param:suffix", path="suffix", value=req.suffix))
    stop = _set(req.stop)
    stream = req.stream is True
    return Conversation(
        messages=[Message(role="user", parts=[Text(text=text)])],
        max_output_tokens=req.max_tokens if isinstance(req.max_tokens, int) else None,
        temperature=req.temperature if isinstance(req.temperature, float | int) else None,
        top_p=req.top_p if isinstance(req.top_p, float | int) else None,
        stop=[stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else [],
        seed=req.seed if isinstance(req.seed, int) else None,
        n=req.n if isinstance(req.n, int) else None,
        presence_penalty=(req.presence_penalty
                          if isinstance(req.presence_penalty, float | int) else None),
        frequency_penalty=(req.frequency_penalty
                           if isinstance(req.frequency_penalty, float | int) else None),
        logit_bias=req.logit_bias if isinstance(req.logit_bias, dict) else None,
        user=req.user if isinstance(req.user, str) else None,
        stream=stream,
        unsupported=unsupported,
    )


# --- front door: Result -> text_completion -------------------------------------------------


def _completion_id(upstream_id: str) -> str:
    if upstream_id.startswith("cmpl"):
        return upstream_id
    return f"cmpl-{upstream_id or 'unknown'}"


def _created(*candidates: int) -> int:
    for c in candidates:
        if c:
            return c
    return int(time.time())


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=usage.input_tokens,
                           completion_tokens=usage.output_tokens,
                           total_tokens=usage.total_tokens)


def encode_result(result: Result, request: LLMRequest) -> bytes:
    text = "".join(p.text for p in result.parts if isinstance(p, Text))
    completion = TextCompletion(
        id=_completion_id(result.id),
        created=_created(result.created, request.created),
        model=result.model or request.model,
        choices=[CompletionChoice(text=text, index=0, finish_reason=_FINISH_OUT[result.finish])],
        usage=_usage(result.usage) if result.usage is not None else None,
    )
    return _encode(completion)


class CompletionsStreamEncoder:
    """Hub events as ``data: {text_completion}`` chunks: one per text delta, the finish
    chunk (empty text with its finish_reason); on close the usage chunk (``choices: []``)
    when the client asked for it, then ``[DONE]``."""

    def __init__(self, request: LLMRequest) -> None:
        self._include_usage = request.include_usage
        self._model = request.model
        self._created = _created(request.created)
        self._id = "cmpl-unknown"
        self._finished = False
        self._usage: Usage | None = None

    def _chunk(self, choices: list[CompletionChoice],
               usage: CompletionUsage | None = None) -> bytes:
        chunk = TextCompletion(id=self._id, created=self._created, model=self._model,
                               choices=choices, usage=usage)
        return b"data: " + _encode(chunk) + b"\n\n"

    def feed(self, event: Event) -> list[bytes]:
        if isinstance(event, Start):
            self._id = _completion_id(event.id)
            self._model = event.model or self._model
            self._created = _created(event.created, self._created)
            if event.usage is not None:
                self._usage = event.usage
        elif isinstance(event, TextDelta):
            if event.text:
                return [self._chunk([CompletionChoice(text=event.text)])]
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, Finish) and not self._finished:
            self._finished = True
            return [self._chunk([CompletionChoice(text="",
                                                  finish_reason=_FINISH_OUT[event.reason])])]
        # Reasoning, refusals and tool calls have no place in a text completion.
        return []

    def close(self) -> list[bytes]:
        out: list[bytes] = []
        if not self._finished:
            self._finished = True
            out.append(self._chunk([CompletionChoice(text="", finish_reason="stop")]))
        if self._include_usage and self._usage is not None:
            out.append(self._chunk([], _usage(self._usage)))
        out.append(_DONE)
        return out

    def fail(self, error: GatewayError) -> list[bytes]:
        return [b"data: " + error.to_json() + b"\n\n"]


# --- the dialect ---------------------------------------------------------------------------


class _WholeChoice(msgspec.Struct):
    text: str = ""
    index: int = 0
    finish_reason: str | None = None


class _Whole(msgspec.Struct):
    """A text completion read leniently (logprobs and unknown fields ignored)."""

    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_WholeChoice] = msgspec.field(default_factory=list)
    usage: CompletionUsage | None = None


_whole_decoder = msgspec.json.Decoder(_Whole)


def _not_upstream() -> InvalidRequest:
    return InvalidRequest("The legacy completions API is not a completions upstream of any "
                          "provider kind; it is only passed through natively.")


class CompletionsDialect:
    """Legacy completions as a front door and for native passthrough."""

    @property
    def name(self) -> DialectName:
        return "completions"

    def to_conversation(self, typed: object) -> Conversation:
        if not isinstance(typed, CompletionRequest):
            raise TypeError(f"expected a CompletionRequest, got {type(typed).__name__}")
        return to_conversation(typed)

    def encode_result(self, result: Result, request: LLMRequest) -> bytes:
        return encode_result(result, request)

    def stream_encoder(self, request: LLMRequest) -> CompletionsStreamEncoder:
        return CompletionsStreamEncoder(request)

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_json()

    def encode_request(self, conversation: Conversation, *, model: str, stream: bool,
                       options: EncodeOptions) -> Outbound:
        raise _not_upstream()

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        """A whole text completion, for a native stream the upstream answered as one JSON
        body (it ignored ``stream``): replayed as the stream the client asked for."""
        whole = _whole_decoder.decode(body)
        choice = next((c for c in whole.choices if c.index == 0),
                      whole.choices[0] if whole.choices else None)
        finish: FinishReason = "stop"
        if choice is not None and choice.finish_reason in ("length", "content_filter"):
            finish = "length" if choice.finish_reason == "length" else "content_filter"
        usage = None if whole.usage is None else Usage(
            input_tokens=whole.usage.prompt_tokens, output_tokens=whole.usage.completion_tokens)
        parts: list[Part] = [Text(text=choice.text)] if choice is not None and choice.text else []
        return Result(id=whole.id, model=whole.model, parts=parts, finish=finish,
                      usage=usage, created=whole.created)

    def stream_decoder(self, outbound: Outbound) -> StreamDecoder:
        raise _not_upstream()

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        return chat.error_from_openai(status, body, provider)

    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes:
        return chat.native_body(raw, model=model, stream=stream)

    def native_usage(self, body: bytes) -> Usage | None:
        return chat.native_usage(body)

    def native_relay(self, request: LLMRequest) -> chat.ChatRelay:
        return chat.ChatRelay(request.include_usage)


COMPLETIONS = CompletionsDialect()

if TYPE_CHECKING:
    _check: Dialect = COMPLETIONS
