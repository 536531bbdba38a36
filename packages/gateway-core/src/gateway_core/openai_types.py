"""OpenAI Chat Completions wire types (https://platform.openai.com/docs/api-reference/chat).

Requests from clients are decoded into these Structs for validation and routing; unknown
fields are ignored here and kept by passing the raw body on to OpenAI-kind upstreams.
Optional fields default to ``UNSET`` so that encoding omits what the client did not send.

Decoding is never narrower than the API: decode requests with ``strict=False`` (as
`request_decoder` does) so that integral floats fill integer fields (``"n": 1.0``, as the
API's own validation accepts); tool, tool-call and tool-choice ``type`` values newer than
this module decode (their body is not read, a translation names them); `decode_request`
keeps content parts of unknown types as `UnknownPart`. Upstream answers are read with the
tolerant ``...In`` types, which default every field a compatible server may leave out.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AllowedTools", "AssistantAudio", "AssistantMessage", "AudioPart", "CONTENT_PART_TYPES",
    "ChatCompletion", "ChatCompletionChunk", "ChatCompletionIn", "ChatCompletionRequest",
    "Choice", "ChoiceIn", "ChunkChoice", "ChunkChoiceIn", "ChunkIn",
    "CompletionTokensDetails", "Content", "ContentPart", "CustomCall", "CustomCallDelta",
    "CustomToolDefinition", "Delta", "DeltaIn", "DeveloperMessage", "ErrorBodyIn",
    "ErrorDetailIn", "ErrorIn", "FileRef", "FilePart", "FinishReason", "FunctionCall",
    "FunctionCallDelta", "FunctionCallIn", "FunctionDefinition", "FunctionMessage",
    "ImagePart", "ImageURL", "InputAudio", "JSONObjectFormat", "JSONSchema",
    "JSONSchemaFormat", "Message", "MessageIn", "Model", "ModelList", "NamedFunction",
    "NamedToolChoice", "PromptTokensDetails", "RefusalPart", "ResponseFormat",
    "ResponseMessage", "StreamOptions", "SystemMessage", "TextFormat", "TextPart", "Tool",
    "ToolCall", "ToolCallDelta", "ToolCallDeltaIn", "ToolCallIn", "ToolChoice",
    "ToolMessage", "UnknownPart", "Usage", "UsageIn", "UsageOnly", "UserMessage",
    "WebSearchLocation", "WebSearchOptions", "WebSearchUserLocation", "decode_request",
    "request_decoder",
]

# --- content parts -------------------------------------------------------------------


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageURL(msgspec.Struct):
    url: str
    # auto / low / high / original (a str: a new level must not fail the whole request)
    detail: str | UnsetType = UNSET


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL


class InputAudio(msgspec.Struct):
    data: str
    format: str


class AudioPart(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FileRef(msgspec.Struct):
    file_data: str | UnsetType = UNSET  # a data: URL (data:application/pdf;base64,...)
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(msgspec.Struct, tag="file", tag_field="type"):
    file: FileRef


class RefusalPart(msgspec.Struct, tag="refusal", tag_field="type"):
    refusal: str


class UnknownPart(msgspec.Struct, tag="unknown_part", tag_field="type"):
    """A content part of a type this module does not model, kept by `decode_request` with
    its type and JSON object so that a translation can refuse it naming the field."""

    part_type: str
    value: dict[str, object]


CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})

ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart | UnknownPart
Content = str | list[ContentPart]

# --- messages (tagged by role) -------------------------------------------------------


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class CustomCall(msgspec.Struct):
    """A custom (free-form) tool's call: the raw ``input`` text the model wrote."""

    name: str
    input: str


class ToolCall(msgspec.Struct):
    """A tool call in an assistant message (history or answer): ``function`` for
    ``type: "function"``, ``custom`` for ``type: "custom"``. ``type`` is a plain string so
    that a newer kind still decodes; translation names it."""

    id: str
    function: FunctionCall | UnsetType = UNSET
    type: str = "function"
    custom: CustomCall | UnsetType = UNSET


class AssistantAudio(msgspec.Struct):
    """A previous audio answer, referred to by id."""

    id: str


class SystemMessage(msgspec.Struct, tag="system", tag_field="role"):
    content: Content
    name: str | UnsetType = UNSET


class DeveloperMessage(msgspec.Struct, tag="developer", tag_field="role"):
    content: Content
    name: str | UnsetType = UNSET


class UserMessage(msgspec.Struct, tag="user", tag_field="role"):
    content: Content
    name: str | UnsetType = UNSET


class AssistantMessage(msgspec.Struct, tag="assistant", tag_field="role"):
    content: Content | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    function_call: FunctionCall | UnsetType | None = UNSET
    audio: AssistantAudio | UnsetType | None = UNSET
    # Not OpenAI's: the reasoning text vLLM / DeepSeek clients send back in history.
    reasoning_content: str | UnsetType | None = UNSET


class ToolMessage(msgspec.Struct, tag="tool", tag_field="role"):
    content: Content
    tool_call_id: str


class FunctionMessage(msgspec.Struct, tag="function", tag_field="role"):
    """Deprecated by OpenAI but still accepted by its API."""

    name: str
    content: str | None = None


Message = (
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage
    | FunctionMessage
)

# --- tools and formats ---------------------------------------------------------------


class FunctionDefinition(msgspec.Struct):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, object] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class CustomToolDefinition(msgspec.Struct):
    """A custom tool (GPT-5 free-form input). ``format`` is ``{"type": "text"}`` or
    ``{"type": "grammar", "grammar": {"definition", "syntax": "lark" | "regex"}}``, kept
    as JSON so that a new format kind still decodes."""

    name: str
    description: str | UnsetType = UNSET
    format: dict[str, object] | UnsetType = UNSET


class Tool(msgspec.Struct):
    """``function`` for ``type: "function"``, ``custom`` for ``type: "custom"``."""

    function: FunctionDefinition | UnsetType = UNSET
    type: str = "function"
    custom: CustomToolDefinition | UnsetType = UNSET


class NamedFunction(msgspec.Struct):
    name: str


class AllowedTools(msgspec.Struct):
    mode: str  # auto / required
    tools: list[dict[str, object]]  # {"type": "function", "function": {"name": ...}}, ...


class NamedToolChoice(msgspec.Struct):
    """An object tool_choice: ``{"type": "function", "function": {"name"}}``, ``{"type":
    "custom", "custom": {"name"}}`` or ``{"type": "allowed_tools", "allowed_tools":
    {"mode", "tools"}}``."""

    function: NamedFunction | UnsetType = UNSET
    type: str = "function"
    custom: NamedFunction | UnsetType = UNSET
    allowed_tools: AllowedTools | UnsetType = UNSET


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JSONSchema(msgspec.Struct):
    name: str
    description: str | UnsetType = UNSET
    schema: dict[str, object] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class TextFormat(msgspec.Struct, tag="text", tag_field="type"):
    pass


class JSONObjectFormat(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class JSONSchemaFormat(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JSONSchema


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaFormat


class StreamOptions(msgspec.Struct):
    include_usage: bool | UnsetType = UNSET
    include_obfuscation: bool | UnsetType = UNSET


class WebSearchLocation(msgspec.Struct):
    city: str | UnsetType = UNSET
    country: str | UnsetType = UNSET  # two-letter ISO code
    region: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET  # IANA name


class WebSearchUserLocation(msgspec.Struct):
    approximate: WebSearchLocation
    type: str = "approximate"


class WebSearchOptions(msgspec.Struct):
    """The search-preview models' web search (the Chat API's hosted web search tool)."""

    search_context_size: str | UnsetType = UNSET  # low / medium / high
    user_location: WebSearchUserLocation | UnsetType | None = UNSET


# --- the request ---------------------------------------------------------------------


class ChatCompletionRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/chat/completions. Decode with ``strict=False`` (`request_decoder`)."""

    model: str
    messages: list[Message]
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    tool_choice: ToolChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    # none / minimal / low / medium / high / xhigh / max (a str: new levels keep decoding)
    reasoning_effort: str | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    modalities: list[str] | UnsetType | None = UNSET
    prediction: dict[str, object] | UnsetType | None = UNSET
    audio: dict[str, object] | UnsetType | None = UNSET
    verbosity: str | UnsetType | None = UNSET
    web_search_options: WebSearchOptions | UnsetType | None = UNSET
    prompt_cache_key: str | UnsetType | None = UNSET
    prompt_cache_retention: str | UnsetType | None = UNSET
    safety_identifier: str | UnsetType | None = UNSET
    # Deprecated by OpenAI (tools / tool_choice replace them) but still accepted.
    functions: list[FunctionDefinition] | UnsetType | None = UNSET
    function_call: Literal["none", "auto"] | NamedFunction | UnsetType | None = UNSET


request_decoder = msgspec.json.Decoder(ChatCompletionRequest, strict=False)
_raw_decoder = msgspec.json.Decoder(dict[str, object])


def _keep_unknown(content: object) -> object:
    if not isinstance(content, list):
        return content
    out: list[object] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind not in CONTENT_PART_TYPES:
            part = {"type": "unknown_part", "part_type": kind, "value": part}
        out.append(part)
    return out


def decode_request(body: bytes) -> ChatCompletionRequest:
    """A POST /v1/chat/completions body, content parts of unknown types kept as
    `UnknownPart`. Raises msgspec.DecodeError / ValidationError (naming the path)."""
    try:
        return request_decoder.decode(body)
    except msgspec.ValidationError:
        # Perhaps only a content part type this module does not know: read it again,
        # keeping those (the common case pays for one decode only).
        raw = _raw_decoder.decode(body)
        messages = raw.get("messages")
        if not isinstance(messages, list):
            raise
        raw["messages"] = [
            {**m, "content": _keep_unknown(m["content"])}
            if isinstance(m, dict) and isinstance(m.get("content"), list) else m
            for m in messages
        ]
        return msgspec.convert(raw, ChatCompletionRequest, strict=False)


# --- responses -----------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct, omit_defaults=True):
    cached_tokens: int | None = None
    audio_tokens: int | None = None
    cache_write_tokens: int | None = None
    image_tokens: int | None = None
    text_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct, omit_defaults=True):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    text_tokens: int | None = None


# Counts have no default so they are always written; absent details are left out.
class Usage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ResponseMessage(msgspec.Struct):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # Not OpenAI's: the field vLLM / DeepSeek / LiteLLM clients read reasoning text from.
    reasoning_content: str | UnsetType = UNSET


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None = None
    logprobs: dict[str, object] | None = None


# "object" is the tag so that it is always written (and checked when decoding).
class ChatCompletion(msgspec.Struct, tag="chat.completion", tag_field="object"):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class FunctionCallDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class CustomCallDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    input: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None  # "function" / "custom", on a call's first delta
    function: FunctionCallDelta | None = None
    custom: CustomCallDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None  # as ResponseMessage.reasoning_content


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, object] | None = None


class ChatCompletionChunk(msgspec.Struct, tag="chat.completion.chunk", tag_field="object"):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# --- upstream answers, read tolerantly ---------------------------------------------------
# OpenAI-compatible servers differ in what they leave out (total_tokens, ids, index,
# object) and add (reasoning, reasoning_content, stop_reason, DeepSeek's cache counts).


class UsageIn(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek's name for cached tokens


class UsageOnly(msgspec.Struct):
    """Just enough of a response or final stream chunk to read its token usage cheaply."""

    usage: UsageIn | None = None


class FunctionCallIn(msgspec.Struct):
    name: str = ""
    arguments: str | dict[str, object] | None = None  # some servers send an object


class ToolCallIn(msgspec.Struct):
    id: str | None = None
    type: str | None = None
    function: FunctionCallIn | None = None
    custom: CustomCall | None = None


class MessageIn(msgspec.Struct):
    content: str | list[dict[str, object]] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCallIn | None = None
    reasoning_content: str | None = None  # vLLM (older), DeepSeek, LiteLLM
    reasoning: str | None = None  # vLLM (newer), OpenRouter, Ollama


class ChoiceIn(msgspec.Struct):
    index: int = 0
    message: MessageIn = msgspec.field(default_factory=MessageIn)
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string that ended the answer


class ChatCompletionIn(msgspec.Struct):
    """A chat.completion from an upstream. ``choices`` is required: a body without it is
    not an answer."""

    choices: list[ChoiceIn]
    id: str = ""
    created: int = 0
    model: str = ""
    usage: UsageIn | None = None


class ToolCallDeltaIn(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionCallIn | None = None
    custom: CustomCallDelta | None = None


class DeltaIn(msgspec.Struct):
    content: str | list[dict[str, object]] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDeltaIn] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoiceIn(msgspec.Struct):
    index: int = 0
    delta: DeltaIn = msgspec.field(default_factory=DeltaIn)
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class ChunkIn(msgspec.Struct):
    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[ChunkChoiceIn] = []
    usage: UsageIn | None = None


# --- models --------------------------------------------------------------------------


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


# --- errors --------------------------------------------------------------------------


class ErrorDetailIn(msgspec.Struct):
    """An upstream's error detail, tolerant of missing fields."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorBodyIn(msgspec.Struct):
    error: ErrorDetailIn


class ErrorIn(msgspec.Struct):
    """Any error body an OpenAI-compatible server sends: OpenAI's ``{"error": {...}}``,
    Ollama's ``{"error": "text"}`` or vLLM's flat ``{"object": "error", "message", ...}``."""

    error: ErrorDetailIn | str | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None
