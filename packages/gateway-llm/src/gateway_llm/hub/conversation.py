"""The internal conversation form every front door decodes into and every provider dialect
encodes from: messages of typed parts, tools, tool choice, output format, sampling, limits,
and the finished answer (`Result`). Only what routing and translation need is modelled; a
construct a dialect cannot express is carried as `Opaque` with the field path it came from,
so that an encoder that cannot send it refuses it with a 400 naming that field."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Conversation",
    "File",
    "FinishReason",
    "FunctionTool",
    "Image",
    "JSONSchemaFormat",
    "Message",
    "NamedToolChoice",
    "Opaque",
    "OutputFormat",
    "Part",
    "Reasoning",
    "ReasoningConfig",
    "Refusal",
    "Result",
    "Role",
    "Text",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
    "ToolSpec",
    "Usage",
]


# --- parts -------------------------------------------------------------------------------


class Text(msgspec.Struct, tag="text", kw_only=True):
    text: str


class Image(msgspec.Struct, tag="image", kw_only=True):
    """An image by URL (http(s) or a data: URL) or as base64 data with its media type."""

    url: str | None = None
    data: str | None = None  # base64, without a data: prefix
    media_type: str | None = None
    detail: str | None = None  # OpenAI's auto/low/high
    file_id: str | None = None


class File(msgspec.Struct, tag="file", kw_only=True):
    """A document (PDF and the like): inline base64 data, a URL, or a provider file id."""

    data: str | None = None  # base64, without a data: prefix
    media_type: str | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None


class Refusal(msgspec.Struct, tag="refusal", kw_only=True):
    text: str


class ToolCall(msgspec.Struct, tag="tool_call", kw_only=True):
    """A call the model made. ``arguments`` is the JSON text of the input (function tools)
    or the free-form input (custom tools, ``kind="custom"``)."""

    id: str
    name: str
    arguments: str = ""
    kind: Literal["function", "custom"] = "function"
    item_id: str | None = None  # the Responses API's fc_... id, when it had one


class ToolResult(msgspec.Struct, tag="tool_result", kw_only=True):
    call_id: str
    content: list[Text | Image | File] = []
    is_error: bool = False
    kind: Literal["function", "custom"] = "function"


class Reasoning(msgspec.Struct, tag="reasoning", kw_only=True):
    """Model reasoning. ``signature`` is Anthropic's thinking signature, ``redacted`` its
    redacted_thinking data, ``encrypted_content`` the Responses API's; each only ever goes
    back to the dialect it came from (``source``)."""

    text: str = ""
    summary: list[str] = []
    signature: str | None = None
    redacted: str | None = None
    encrypted_content: str | None = None
    item_id: str | None = None
    source: Literal["chat", "responses", "messages"] | None = None


class Opaque(msgspec.Struct, tag="opaque", kw_only=True):
    """Something of the source dialect the hub does not model (an unknown part type, a
    hosted or custom tool, ...). ``path`` names the field for a refusal; ``kind`` what it is
    (e.g. ``"input_audio"``, ``"tool:web_search"``, ``"tool:custom"``)."""

    kind: str
    path: str
    value: object = None


Part = Text | Image | File | Refusal | ToolCall | ToolResult | Reasoning | Opaque

Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(msgspec.Struct, kw_only=True):
    """One turn. System/developer messages hold text; tool messages hold ToolResult parts;
    assistant messages may hold text, refusals, reasoning and tool calls."""

    role: Role
    parts: list[Part]
    name: str | None = None


# --- tools, choice, format -------------------------------------------------------------


class FunctionTool(msgspec.Struct, tag="function", kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, object] | None = None
    strict: bool | None = None


ToolSpec = FunctionTool | Opaque


class NamedToolChoice(msgspec.Struct, kw_only=True):
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice | Opaque


class JSONSchemaFormat(msgspec.Struct, tag="json_schema", kw_only=True):
    name: str
    schema: dict[str, object] | None = None
    description: str | None = None
    strict: bool | None = None


OutputFormat = Literal["text", "json_object"] | JSONSchemaFormat


class ReasoningConfig(msgspec.Struct, kw_only=True):
    """``effort`` as OpenAI names it (none/minimal/low/medium/high/xhigh); ``budget_tokens``
    an explicit Anthropic thinking budget; ``adaptive`` Anthropic's adaptive thinking;
    ``summary`` the Responses API's reasoning summary request."""

    effort: str | None = None
    budget_tokens: int | None = None
    adaptive: bool = False
    summary: str | None = None
    enabled: bool = True


class Conversation(msgspec.Struct, kw_only=True):
    messages: list[Message]
    tools: list[ToolSpec] = []
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    output_format: OutputFormat | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = []
    seed: int | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    reasoning: ReasoningConfig | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    stream: bool = False
    # Fields of the source request that no other dialect has and that change the answer
    # (audio output, prediction, ...): an encoder that cannot send one refuses it.
    unsupported: list[Opaque] = []


# --- the answer --------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal"]


class Usage(msgspec.Struct, kw_only=True):
    """Token counts as the hub keeps them. ``input_tokens`` counts every prompt token,
    cached or not (OpenAI's convention); ``cached_input_tokens`` and
    ``cache_write_input_tokens`` say how many of them were cache reads / writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Result(msgspec.Struct, kw_only=True):
    """A finished answer: assistant parts in order (Text, Refusal, Reasoning, ToolCall)."""

    id: str
    model: str
    parts: list[Part]
    finish: FinishReason = "stop"
    usage: Usage | None = None
    created: int = 0
    stop_sequence: str | None = None
