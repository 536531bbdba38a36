"""Anthropic Messages API wire types (https://docs.anthropic.com/en/api/messages): the request
we send, the Message we get back, the stream events and the error body, plus tolerant decoders
that skip block, delta and event types this gateway does not know yet instead of failing;
and the client request side (`CreateMessageRequest`, `CountTokensRequest`), whose decoders
keep block types they do not know instead of failing."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "BLOCK_DELTA_TYPES",
    "CONTENT_BLOCK_PARAM_TYPES",
    "CONTENT_BLOCK_TYPES",
    "STREAM_EVENT_TYPES",
    "TOOL_RESULT_CONTENT_TYPES",
    "Base64ImageSource",
    "Base64SourceParam",
    "BlockDelta",
    "CacheControl",
    "CitationsConfigParam",
    "ContentBlock",
    "ContentBlockDeltaEvent",
    "ContentBlockParam",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "ContentSourceParam",
    "convert_count_tokens",
    "convert_create_message",
    "CountTokensRequest",
    "CreateMessageRequest",
    "decode_count_tokens",
    "decode_create_message",
    "decode_event",
    "decode_message",
    "DocumentBlockParam",
    "DocumentSourceParam",
    "ErrorEvent",
    "ErrorObject",
    "ErrorResponse",
    "FileSourceParam",
    "ImageBlock",
    "ImageBlockParam",
    "ImageSource",
    "ImageSourceParam",
    "InputJSONDelta",
    "InputMessage",
    "JSONOutputFormatParam",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageDeltaUsage",
    "MessageParam",
    "MessagesRequest",
    "MessageStartEvent",
    "MessageStopEvent",
    "MessageTokensCount",
    "Metadata",
    "MetadataParam",
    "OutputConfigParam",
    "OutputTokensDetails",
    "PingEvent",
    "PlainTextSourceParam",
    "RedactedThinkingBlock",
    "RedactedThinkingBlockParam",
    "SearchResultBlockParam",
    "ServerToolUseBlockParam",
    "SignatureDelta",
    "StreamEvent",
    "TextBlock",
    "TextBlockParam",
    "TextDelta",
    "ThinkingAdaptive",
    "ThinkingAdaptiveParam",
    "ThinkingBetweenToolsParam",
    "ThinkingBlock",
    "ThinkingBlockParam",
    "ThinkingConfig",
    "ThinkingConfigParam",
    "ThinkingDelta",
    "ThinkingDisabled",
    "ThinkingDisabledParam",
    "ThinkingEnabled",
    "ThinkingEnabledParam",
    "Tool",
    "ToolChoice",
    "ToolChoiceAny",
    "ToolChoiceAuto",
    "ToolChoiceNone",
    "ToolChoiceTool",
    "ToolParam",
    "ToolResultBlock",
    "ToolResultBlockParam",
    "ToolResultContent",
    "ToolResultContentParam",
    "ToolUseBlock",
    "ToolUseBlockParam",
    "UnknownBlockParam",
    "URLImageSource",
    "URLSourceParam",
    "Usage",
    "WebSearchToolResultBlockParam",
]

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


ImageSource = Base64ImageSource | URLImageSource


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: ImageSource


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, object]


ToolResultContent = TextBlock | ImageBlock


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", omit_defaults=True):
    tool_use_id: str
    content: str | list[ToolResultContent] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


ContentBlock = (
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock |
    RedactedThinkingBlock
)
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


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class Metadata(msgspec.Struct, omit_defaults=True):
    user_id: str | UnsetType = UNSET


class ThinkingEnabled(msgspec.Struct, tag="enabled", tag_field="type"):
    budget_tokens: int


class ThinkingDisabled(msgspec.Struct, tag="disabled", tag_field="type"):
    pass


class ThinkingAdaptive(msgspec.Struct, tag="adaptive", tag_field="type"):
    pass


ThinkingConfig = ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive


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


BlockDelta = TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta
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


StreamEvent = (
    MessageStartEvent | ContentBlockStartEvent | ContentBlockDeltaEvent | ContentBlockStopEvent |
    MessageDeltaEvent | MessageStopEvent | PingEvent | ErrorEvent
)
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



# --- the client request side (POST /v1/messages, /v1/messages/count_tokens) -------------
# What clients (Claude Code, the anthropic SDK) send, as the newest SDK defines it
# (anthropic 2.15: message_create_params.py and the *_param.py types). The same Structs
# encode the requests the gateway sends upstream. Unknown fields are ignored (the route
# keeps the raw body for native passthrough); block types this module does not model are
# kept as `UnknownBlockParam` by `convert_create_message` / `decode_create_message`, so that
# decoding is never narrower than the API. Optional fields default to UNSET so that
# encoding leaves out what was not set.


class CacheControl(msgspec.Struct, omit_defaults=True):
    type: str = "ephemeral"
    ttl: str | UnsetType = UNSET


class TextBlockParam(msgspec.Struct, tag="text", tag_field="type", omit_defaults=True):
    text: str
    cache_control: CacheControl | UnsetType | None = UNSET
    citations: list[object] | UnsetType | None = UNSET


class Base64SourceParam(msgspec.Struct, tag="base64", tag_field="type"):
    """Base64 image (image/jpeg, png, gif, webp) or PDF (application/pdf) data."""

    media_type: str
    data: str


class URLSourceParam(msgspec.Struct, tag="url", tag_field="type"):
    url: str


class FileSourceParam(msgspec.Struct, tag="file", tag_field="type"):
    """A file uploaded to Anthropic's Files API."""

    file_id: str


class PlainTextSourceParam(msgspec.Struct, tag="text", tag_field="type"):
    data: str
    media_type: str = "text/plain"


ImageSourceParam = Base64SourceParam | URLSourceParam | FileSourceParam


class ImageBlockParam(msgspec.Struct, tag="image", tag_field="type", omit_defaults=True):
    source: ImageSourceParam
    cache_control: CacheControl | UnsetType | None = UNSET


class ContentSourceParam(msgspec.Struct, tag="content", tag_field="type"):
    """A document made of text and image blocks (custom content documents)."""

    content: str | list[TextBlockParam | ImageBlockParam]


DocumentSourceParam = (
    Base64SourceParam | PlainTextSourceParam | ContentSourceParam | URLSourceParam |
    FileSourceParam
)


class CitationsConfigParam(msgspec.Struct, omit_defaults=True):
    enabled: bool | UnsetType = UNSET


class DocumentBlockParam(msgspec.Struct, tag="document", tag_field="type", omit_defaults=True):
    source: DocumentSourceParam
    title: str | UnsetType | None = UNSET
    context: str | UnsetType | None = UNSET
    citations: CitationsConfigParam | UnsetType | None = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET


class SearchResultBlockParam(msgspec.Struct, tag="search_result", tag_field="type",
                             omit_defaults=True):
    source: str
    title: str
    content: list[TextBlockParam]
    citations: CitationsConfigParam | UnsetType = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET


class ThinkingBlockParam(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlockParam(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


class ToolUseBlockParam(msgspec.Struct, tag="tool_use", tag_field="type", omit_defaults=True):
    id: str
    name: str
    input: dict[str, object]
    cache_control: CacheControl | UnsetType | None = UNSET


class UnknownBlockParam(msgspec.Struct, tag="unknown_block", tag_field="type"):
    """A content block of a type this module does not model (tool_reference,
    container_upload, code_execution_tool_result, ...): its type and JSON object, kept so
    a translation can refuse it naming the field. Made by `convert_create_message`."""

    block_type: str
    value: dict[str, object]


ToolResultContentParam = (
    TextBlockParam | ImageBlockParam | DocumentBlockParam | SearchResultBlockParam |
    UnknownBlockParam
)


class ToolResultBlockParam(msgspec.Struct, tag="tool_result", tag_field="type",
                           omit_defaults=True):
    tool_use_id: str
    content: str | list[ToolResultContentParam] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET


class ServerToolUseBlockParam(msgspec.Struct, tag="server_tool_use", tag_field="type",
                              omit_defaults=True):
    id: str
    name: str
    input: dict[str, object]
    cache_control: CacheControl | UnsetType | None = UNSET


class WebSearchToolResultBlockParam(msgspec.Struct, tag="web_search_tool_result",
                                    tag_field="type", omit_defaults=True):
    tool_use_id: str
    content: object  # a list of results or an error object, passed on as it is
    cache_control: CacheControl | UnsetType | None = UNSET


ContentBlockParam = (
    TextBlockParam | ImageBlockParam | DocumentBlockParam | SearchResultBlockParam |
    ThinkingBlockParam | RedactedThinkingBlockParam | ToolUseBlockParam | ToolResultBlockParam |
    ServerToolUseBlockParam | WebSearchToolResultBlockParam | UnknownBlockParam
)
CONTENT_BLOCK_PARAM_TYPES = frozenset({
    "text", "image", "document", "search_result", "thinking", "redacted_thinking",
    "tool_use", "tool_result", "server_tool_use", "web_search_tool_result",
})
TOOL_RESULT_CONTENT_TYPES = frozenset({"text", "image", "document", "search_result"})


class InputMessage(msgspec.Struct):
    """One turn. ``system`` turns (newer API versions) hold text only."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlockParam]


class ToolParam(msgspec.Struct, omit_defaults=True):
    """Any tool definition. A custom (client) tool has no type or type "custom" and an
    ``input_schema``; every other type is a server tool (web_search_20250305, bash_20250124,
    text_editor_20250728, code_execution_..., ...) whose other fields are not modelled."""

    name: str
    type: str | UnsetType | None = UNSET
    description: str | UnsetType = UNSET
    input_schema: dict[str, object] | UnsetType = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET
    strict: bool | UnsetType = UNSET

    @property
    def is_custom(self) -> bool:
        return self.type in (UNSET, None, "custom")


class ThinkingEnabledParam(msgspec.Struct, tag="enabled", tag_field="type", omit_defaults=True):
    budget_tokens: int
    display: str | UnsetType | None = UNSET


class ThinkingDisabledParam(msgspec.Struct, tag="disabled", tag_field="type"):
    pass


class ThinkingAdaptiveParam(msgspec.Struct, tag="adaptive", tag_field="type",
                            omit_defaults=True):
    display: str | UnsetType | None = UNSET


class ThinkingBetweenToolsParam(msgspec.Struct, tag="between_tools", tag_field="type"):
    pass


ThinkingConfigParam = (
    ThinkingEnabledParam | ThinkingDisabledParam | ThinkingAdaptiveParam |
    ThinkingBetweenToolsParam
)


class MetadataParam(msgspec.Struct, omit_defaults=True):
    user_id: str | UnsetType | None = UNSET


class JSONOutputFormatParam(msgspec.Struct, tag="json_schema", tag_field="type"):
    schema: dict[str, object]


class OutputConfigParam(msgspec.Struct, omit_defaults=True):
    effort: str | UnsetType | None = UNSET  # low, medium, high, xhigh, max
    format: JSONOutputFormatParam | UnsetType | None = UNSET


class CreateMessageRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/messages, as clients send it and as the gateway sends it upstream."""

    model: str
    max_tokens: Annotated[int, msgspec.Meta(ge=0)]
    messages: list[InputMessage]
    system: str | list[TextBlockParam] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType | None = UNSET
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | UnsetType | None = UNSET
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | UnsetType | None = UNSET
    top_k: Annotated[int, msgspec.Meta(ge=0)] | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    tools: list[ToolParam] | UnsetType | None = UNSET
    tool_choice: ToolChoice | UnsetType | None = UNSET
    thinking: ThinkingConfigParam | UnsetType | None = UNSET
    metadata: MetadataParam | UnsetType | None = UNSET
    output_config: OutputConfigParam | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET  # auto, standard_only
    cache_control: CacheControl | UnsetType | None = UNSET
    # Anthropic-side features with no equivalent elsewhere, not modelled further.
    container: object = UNSET  # an id or {"id", "skills"}
    context_management: object = UNSET
    mcp_servers: list[object] | UnsetType | None = UNSET
    inference_geo: str | UnsetType | None = UNSET
    speed: str | UnsetType | None = UNSET


class CountTokensRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/messages/count_tokens: a message request without the generation fields."""

    model: str
    messages: list[InputMessage]
    system: str | list[TextBlockParam] | UnsetType = UNSET
    tools: list[ToolParam] | UnsetType | None = UNSET
    tool_choice: ToolChoice | UnsetType | None = UNSET
    thinking: ThinkingConfigParam | UnsetType | None = UNSET
    output_config: OutputConfigParam | UnsetType | None = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET
    mcp_servers: list[object] | UnsetType | None = UNSET


class MessageTokensCount(msgspec.Struct):
    """The count_tokens answer."""

    input_tokens: int


_RequestT = TypeVar("_RequestT", CreateMessageRequest, CountTokensRequest)
_create_decoder = msgspec.json.Decoder(CreateMessageRequest)
_count_decoder = msgspec.json.Decoder(CountTokensRequest)


def _unknown(block: object, known: frozenset[str]) -> object:
    if isinstance(block, dict):
        kind = block.get("type")
        if isinstance(kind, str) and kind not in known:
            return {"type": "unknown_block", "block_type": kind, "value": block}
    return block


def _keep_unknown_blocks(raw: dict[str, object]) -> dict[str, object]:
    """A shallow copy of ``raw`` in which every content block (and tool_result content
    item) of a type not modelled here is wrapped as an ``unknown_block``."""
    messages = raw.get("messages")
    if not isinstance(messages, list):
        return raw
    out_messages: list[object] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(content, list):
            out_messages.append(m)
            continue
        blocks: list[object] = []
        for b in content:
            b = _unknown(b, CONTENT_BLOCK_PARAM_TYPES)
            if isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(
                b.get("content"), list
            ):
                items = b["content"]
                assert isinstance(items, list)
                b = {**b, "content": [_unknown(i, TOOL_RESULT_CONTENT_TYPES) for i in items]}
            blocks.append(b)
        out_messages.append({**m, "content": blocks})
    return {**raw, "messages": out_messages}


def _convert(raw: dict[str, object], type_: type[_RequestT]) -> _RequestT:
    return msgspec.convert(_keep_unknown_blocks(raw), type_)


def convert_create_message(raw: dict[str, object]) -> CreateMessageRequest:
    """The client's JSON object (as the route decoded it) as a CreateMessageRequest.
    Raises msgspec.ValidationError naming the path (``$.messages[2].content[0].id``)."""
    return _convert(raw, CreateMessageRequest)


def convert_count_tokens(raw: dict[str, object]) -> CountTokensRequest:
    return _convert(raw, CountTokensRequest)


def _decode(data: bytes, decoder: msgspec.json.Decoder[_RequestT],
            type_: type[_RequestT]) -> _RequestT:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError:
        # Perhaps only a block type this module does not know: read it again, keeping those.
        raw = _generic_decoder.decode(data)
        if not isinstance(raw, dict):
            raise
        return _convert(raw, type_)


def decode_create_message(data: bytes) -> CreateMessageRequest:
    """A POST /v1/messages body. Raises msgspec.DecodeError / ValidationError."""
    return _decode(data, _create_decoder, CreateMessageRequest)


def decode_count_tokens(data: bytes) -> CountTokensRequest:
    return _decode(data, _count_decoder, CountTokensRequest)
