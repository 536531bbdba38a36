"""OpenAI Chat Completions wire types (https://platform.openai.com/docs/api-reference/chat).

Requests from clients are decoded into these Structs for validation and routing; unknown
fields are ignored here and kept by passing the raw body on to OpenAI-kind upstreams.
Optional fields default to ``UNSET`` so that encoding omits what the client did not send.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec
from msgspec import UNSET, UnsetType

# --- content parts -------------------------------------------------------------------


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageURL(msgspec.Struct):
    url: str
    detail: Literal["auto", "low", "high"] | UnsetType = UNSET


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL


class InputAudio(msgspec.Struct):
    data: str
    format: str


class AudioPart(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FileRef(msgspec.Struct):
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(msgspec.Struct, tag="file", tag_field="type"):
    file: FileRef


class RefusalPart(msgspec.Struct, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = Union[TextPart, ImagePart, AudioPart, FilePart, RefusalPart]
Content = Union[str, list[ContentPart]]

# --- messages (tagged by role) -------------------------------------------------------


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


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
    content: Content | None | UnsetType = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | None | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    function_call: FunctionCall | None | UnsetType = UNSET


class ToolMessage(msgspec.Struct, tag="tool", tag_field="role"):
    content: Content
    tool_call_id: str


class FunctionMessage(msgspec.Struct, tag="function", tag_field="role"):
    """Deprecated by OpenAI but still accepted by its API."""

    name: str
    content: str | None = None


Message = Union[
    SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage
]

# --- tools and formats ---------------------------------------------------------------


class FunctionDefinition(msgspec.Struct):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, object] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class Tool(msgspec.Struct):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


class JSONSchema(msgspec.Struct):
    name: str
    description: str | UnsetType = UNSET
    schema: dict[str, object] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class TextFormat(msgspec.Struct, tag="text", tag_field="type"):
    pass


class JSONObjectFormat(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class JSONSchemaFormat(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JSONSchema


ResponseFormat = Union[TextFormat, JSONObjectFormat, JSONSchemaFormat]


class StreamOptions(msgspec.Struct):
    include_usage: bool | UnsetType = UNSET
    include_obfuscation: bool | UnsetType = UNSET


# --- the request ---------------------------------------------------------------------


class ChatCompletionRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[Message]
    stream: bool | None | UnsetType = UNSET
    stream_options: StreamOptions | None | UnsetType = UNSET
    tools: list[Tool] | None | UnsetType = UNSET
    tool_choice: ToolChoice | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    response_format: ResponseFormat | None | UnsetType = UNSET
    n: int | None | UnsetType = UNSET
    stop: str | list[str] | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    max_tokens: int | None | UnsetType = UNSET
    max_completion_tokens: int | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
    logprobs: bool | None | UnsetType = UNSET
    top_logprobs: int | None | UnsetType = UNSET
    presence_penalty: float | None | UnsetType = UNSET
    frequency_penalty: float | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    service_tier: str | None | UnsetType = UNSET
    reasoning_effort: str | None | UnsetType = UNSET
    store: bool | None | UnsetType = UNSET
    modalities: list[str] | None | UnsetType = UNSET
    prediction: dict[str, object] | None | UnsetType = UNSET
    audio: dict[str, object] | None | UnsetType = UNSET
    verbosity: str | None | UnsetType = UNSET


# --- responses -----------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct, omit_defaults=True):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct, omit_defaults=True):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


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


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


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


class UsageOnly(msgspec.Struct):
    """Just enough of a response or final stream chunk to read its token usage cheaply."""

    usage: Usage | None = None


# --- models --------------------------------------------------------------------------


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


class ErrorDetailIn(msgspec.Struct):
    """An upstream's error detail, tolerant of missing fields."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorBodyIn(msgspec.Struct):
    error: ErrorDetailIn
