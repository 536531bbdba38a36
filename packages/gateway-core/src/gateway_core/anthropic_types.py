"""Anthropic Messages API wire types (https://docs.anthropic.com/en/api/messages): the request
we send, the Message we get back, the stream events and the error body, plus tolerant decoders
that skip block, delta and event types this gateway does not know yet instead of failing."""

from __future__ import annotations

from typing import Literal, Union

import msgspec
from msgspec import UNSET, UnsetType

# --- content blocks (tagged by "type") -------------------------------------------------
# Used in requests and responses alike. Decoding ignores unknown fields (msgspec's default),
# so new fields such as ``citations`` or ``caller`` do not break us.


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class Base64ImageSource(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class URLImageSource(msgspec.Struct, tag="url", tag_field="type"):
    url: str


ImageSource = Union[Base64ImageSource, URLImageSource]


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: ImageSource


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, object]


ToolResultContent = Union[TextBlock, ImageBlock]


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", omit_defaults=True):
    tool_use_id: str
    content: str | list[ToolResultContent] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


ContentBlock = Union[
    TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, RedactedThinkingBlock
]
CONTENT_BLOCK_TYPES = frozenset(
    {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)

# --- the request -----------------------------------------------------------------------


class MessageParam(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(msgspec.Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, object]
    description: str | UnsetType = UNSET


class ToolChoiceAuto(msgspec.Struct, tag="auto", tag_field="type", omit_defaults=True):
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceAny(msgspec.Struct, tag="any", tag_field="type", omit_defaults=True):
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceTool(msgspec.Struct, tag="tool", tag_field="type", omit_defaults=True):
    name: str
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceNone(msgspec.Struct, tag="none", tag_field="type"):
    pass


ToolChoice = Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone]


class Metadata(msgspec.Struct, omit_defaults=True):
    user_id: str | UnsetType = UNSET


class ThinkingEnabled(msgspec.Struct, tag="enabled", tag_field="type"):
    budget_tokens: int


class ThinkingDisabled(msgspec.Struct, tag="disabled", tag_field="type"):
    pass


class ThinkingAdaptive(msgspec.Struct, tag="adaptive", tag_field="type"):
    pass


ThinkingConfig = Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive]


class MessagesRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/messages. Every optional field is UNSET unless set, so nothing unset is sent."""

    model: str
    messages: list[MessageParam]
    max_tokens: int
    system: str | list[TextBlock] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET


# --- the response ----------------------------------------------------------------------


class OutputTokensDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None


class Message(msgspec.Struct):
    """A complete answer. ``stop_reason`` stays a plain string so new reasons still decode."""

    id: str
    model: str
    content: list[ContentBlock] = []
    role: Literal["assistant"] = "assistant"
    type: Literal["message"] = "message"
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


# --- stream events (tagged by "type") --------------------------------------------------


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type"):
    text: str


class InputJSONDelta(msgspec.Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="type"):
    thinking: str


class SignatureDelta(msgspec.Struct, tag="signature_delta", tag_field="type"):
    signature: str


BlockDelta = Union[TextDelta, InputJSONDelta, ThinkingDelta, SignatureDelta]
BLOCK_DELTA_TYPES = frozenset({"text_delta", "input_json_delta", "thinking_delta",
                               "signature_delta"})


class MessageStartEvent(msgspec.Struct, tag="message_start", tag_field="type"):
    message: Message


class ContentBlockStartEvent(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ContentBlock


class ContentBlockDeltaEvent(msgspec.Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: BlockDelta


class ContentBlockStopEvent(msgspec.Struct, tag="content_block_stop", tag_field="type"):
    index: int


class MessageDelta(msgspec.Struct):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDeltaUsage(msgspec.Struct):
    """Cumulative counts at the end of the stream; the input counts are sent by newer API
    versions only."""

    output_tokens: int = 0
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None


class MessageDeltaEvent(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: MessageDelta = msgspec.field(default_factory=MessageDelta)
    usage: MessageDeltaUsage = msgspec.field(default_factory=MessageDeltaUsage)


class MessageStopEvent(msgspec.Struct, tag="message_stop", tag_field="type"):
    pass


class PingEvent(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class ErrorObject(msgspec.Struct):
    type: str | None = None
    message: str = ""


class ErrorEvent(msgspec.Struct, tag="error", tag_field="type"):
    error: ErrorObject = msgspec.field(default_factory=ErrorObject)


StreamEvent = Union[
    MessageStartEvent,
    ContentBlockStartEvent,
    ContentBlockDeltaEvent,
    ContentBlockStopEvent,
    MessageDeltaEvent,
    MessageStopEvent,
    PingEvent,
    ErrorEvent,
]
STREAM_EVENT_TYPES = frozenset({"message_start", "content_block_start", "content_block_delta",
                                "content_block_stop", "message_delta", "message_stop", "ping",
                                "error"})


class ErrorResponse(msgspec.Struct):
    """The body of a non-2xx answer: ``{"type": "error", "error": {"type", "message"}}``."""

    error: ErrorObject
    type: str = "error"
    request_id: str | None = None


# --- tolerant decoding -----------------------------------------------------------------


class _Typed(msgspec.Struct):
    type: str = ""


class _EventHead(msgspec.Struct):
    """Just the discriminators of an event: its type and, where present, that of its block
    or delta (message_delta's delta has no type, hence the default)."""

    type: str = ""
    content_block: _Typed | None = None
    delta: _Typed | None = None


_head_decoder = msgspec.json.Decoder(_EventHead)
_event_decoder: msgspec.json.Decoder[StreamEvent] = msgspec.json.Decoder(StreamEvent)
_message_decoder = msgspec.json.Decoder(Message)
_generic_decoder = msgspec.json.Decoder()


def decode_event(data: bytes) -> StreamEvent | None:
    """Decode one SSE ``data:`` payload. Returns None for an event, block or delta type this
    module does not know (the API adds them over time: citations_delta, server_tool_use, ...),
    so one new kind of event never breaks a whole stream. Malformed known events raise
    ``msgspec.DecodeError`` / ``msgspec.ValidationError``."""
    head = _head_decoder.decode(data)
    if head.type not in STREAM_EVENT_TYPES:
        return None
    if head.type == "content_block_start" and (
        head.content_block is None or head.content_block.type not in CONTENT_BLOCK_TYPES
    ):
        return None
    if head.type == "content_block_delta" and (
        head.delta is None or head.delta.type not in BLOCK_DELTA_TYPES
    ):
        return None
    return _event_decoder.decode(data)


def decode_message(data: bytes) -> Message:
    """Decode a Messages API response body, dropping content blocks of unknown types
    (server tool results and the like) rather than rejecting the whole answer."""
    try:
        return _message_decoder.decode(data)
    except msgspec.ValidationError:
        raw = _generic_decoder.decode(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
            raise
        blocks = raw["content"]
        known = [b for b in blocks if isinstance(b, dict) and b.get("type") in CONTENT_BLOCK_TYPES]
        if len(known) == len(blocks):
            raise  # nothing unknown to drop: the error is real
        raw["content"] = known
        return msgspec.convert(raw, Message)

