"""OpenAI Responses API wire types (https://platform.openai.com/docs/api-reference/responses):
the create request, its input items, content parts and tools, the Response object and the
stream events, as the openai SDK types them.

The request keeps ``input``, ``tools`` and ``tool_choice`` as plain JSON objects and
`decode_input_items` / `decode_tools` type them one by one, because the wire format does
not let one decoder do it: a message item may leave out its ``type`` (``{"role": "user",
"content": "hi"}``), and the API has dozens of hosted item and tool kinds that the gateway
forwards without modelling. So a body decodes even with item kinds newer than this module
(native passthrough forwards it as it came), and translation names the item it cannot use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeAlias

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core.errors import InvalidRequest

__all__ = [
    "CONTENT_PART_TYPES", "ContentPart", "ContentPartAddedEvent", "ContentPartDoneEvent",
    "ConversationRef", "CustomTool", "CustomToolCall", "CustomToolCallInputDeltaEvent",
    "CustomToolCallInputDoneEvent", "CustomToolCallOutput", "decode_input_items",
    "decode_tools", "DeltaEventIn", "EasyContent", "ErrorEvent", "ErrorEventIn",
    "FormatJSONObject", "FormatJSONSchema", "FormatText", "FunctionCallArgumentsDeltaEvent",
    "FunctionCallArgumentsDoneEvent", "FunctionCallOutput", "FunctionTool", "FunctionToolCall",
    "HostedTool", "IncompleteDetails", "InputAudio", "InputContent", "InputFile", "InputImage",
    "InputItem", "InputMessage", "InputText", "InputTokensDetails", "item_error", "ItemEventIn",
    "ItemReference", "LifecycleEventIn", "LifecycleUsageOnly", "NamespaceTool",
    "OPAQUE_ITEM_TYPES", "OpaqueItem", "OutputItem", "OutputItemAddedEvent",
    "OutputItemDoneEvent", "OutputMessage", "OutputRefusal", "OutputText",
    "OutputTextDeltaEvent", "OutputTextDoneEvent", "OutputTokensDetails", "PromptRef",
    "ReasoningItem", "ReasoningParam", "ReasoningSummaryPartAddedEvent",
    "ReasoningSummaryPartDoneEvent", "ReasoningSummaryTextDeltaEvent",
    "ReasoningSummaryTextDoneEvent", "ReasoningText", "ReasoningTextDeltaEvent",
    "ReasoningTextDoneEvent", "RefusalDeltaEvent", "RefusalDoneEvent", "Response",
    "ResponseCompletedEvent", "ResponseCreatedEvent", "ResponseError", "ResponseFailedEvent",
    "ResponseIn", "ResponseIncompleteEvent", "ResponseInProgressEvent", "ResponsesRequest",
    "ResponseUsage", "StreamEvent", "StreamOptions", "SummaryText", "TextConfig", "TextFormat",
    "ToolOutputContent", "ToolParam", "UsageOnly",
]

# --- content parts (tagged by "type") ----------------------------------------------------


class InputText(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class InputImage(msgspec.Struct, tag="input_image", tag_field="type", omit_defaults=True):
    image_url: str | None = None  # an http(s) or data: URL
    file_id: str | None = None
    detail: str | None = None  # low / high / auto / original


class InputFile(msgspec.Struct, tag="input_file", tag_field="type", omit_defaults=True):
    file_data: str | None = None  # a data: URL (data:application/pdf;base64,...)
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None
    detail: str | None = None


class AudioData(msgspec.Struct):
    data: str
    format: str


class InputAudio(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: AudioData


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    # Citations (url_citation, file_citation, ...) as the API sends them; always written.
    annotations: list[dict[str, object]] = msgspec.field(default_factory=list)
    logprobs: list[dict[str, object]] | UnsetType = UNSET


class OutputRefusal(msgspec.Struct, tag="refusal", tag_field="type"):
    refusal: str


class SummaryText(msgspec.Struct, tag="summary_text", tag_field="type"):
    text: str


class ReasoningText(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    text: str


InputContent: TypeAlias = (
    InputText | InputImage | InputFile | InputAudio | OutputText | OutputRefusal
)
CONTENT_PART_TYPES = frozenset(
    {"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"})
EasyContent: TypeAlias = str | list[InputContent]
# What a function_call_output / custom_tool_call_output may hold besides a string.
ToolOutputContent: TypeAlias = InputText | InputImage | InputFile

# --- input items (tagged by "type") -------------------------------------------------------


class InputMessage(msgspec.Struct, tag="message", tag_field="type", omit_defaults=True):
    """A message, also in its easy form (``type`` left out, ``content`` a string)."""

    role: Literal["user", "assistant", "system", "developer"]
    content: EasyContent
    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    phase: str | UnsetType | None = UNSET


class FunctionToolCall(msgspec.Struct, tag="function_call", tag_field="type", omit_defaults=True,
                       kw_only=True):
    """A function call the model made: an output item, and an input item when sent back."""

    id: str | UnsetType = UNSET  # fc_...
    call_id: str
    name: str
    arguments: str
    status: str | UnsetType = UNSET
    namespace: str | UnsetType = UNSET  # the namespace tool the function belongs to


class FunctionCallOutput(msgspec.Struct, tag="function_call_output", tag_field="type",
                         omit_defaults=True, kw_only=True):
    # Optional in the SDK (program callers); required for a call the model made.
    call_id: str | None = None
    output: str | list[ToolOutputContent]
    id: str | UnsetType | None = UNSET
    status: str | UnsetType | None = UNSET


class ReasoningItem(msgspec.Struct, tag="reasoning", tag_field="type", kw_only=True):
    id: str | UnsetType = UNSET  # rs_...
    summary: list[SummaryText] = msgspec.field(default_factory=list)  # always written
    content: list[ReasoningText] | UnsetType = UNSET
    encrypted_content: str | UnsetType | None = UNSET
    status: str | UnsetType = UNSET


class CustomToolCall(msgspec.Struct, tag="custom_tool_call", tag_field="type",
                     omit_defaults=True, kw_only=True):
    id: str | UnsetType = UNSET  # ctc_...
    call_id: str
    name: str
    input: str
    namespace: str | UnsetType = UNSET


class CustomToolCallOutput(msgspec.Struct, tag="custom_tool_call_output", tag_field="type",
                           omit_defaults=True, kw_only=True):
    call_id: str
    output: str | list[ToolOutputContent]
    id: str | UnsetType = UNSET


class ItemReference(msgspec.Struct, tag="item_reference", tag_field="type"):
    """An item of an earlier stored response, by id (``type`` may be left out)."""

    id: str


class OpaqueItem(msgspec.Struct, kw_only=True):
    """An item kind the API has but the gateway does not model (web_search_call,
    computer_call_output, mcp_call, ...): its ``type`` and the item as it came."""

    type: str
    value: dict[str, object]


InputItem: TypeAlias = (
    InputMessage | FunctionToolCall | FunctionCallOutput | ReasoningItem | CustomToolCall
    | CustomToolCallOutput | ItemReference
)

_ITEM_TYPES: dict[str, type[InputItem]] = {
    "message": InputMessage,
    "function_call": FunctionToolCall,
    "function_call_output": FunctionCallOutput,
    "reasoning": ReasoningItem,
    "custom_tool_call": CustomToolCall,
    "custom_tool_call_output": CustomToolCallOutput,
    "item_reference": ItemReference,
}

# Input item kinds of the API (openai SDK's ResponseInputItemParam) kept as they came.
OPAQUE_ITEM_TYPES = frozenset({
    "file_search_call", "computer_call", "computer_call_output", "web_search_call",
    "tool_search_call", "tool_search_output", "additional_tools", "configuration_update",
    "compaction", "compaction_trigger", "image_generation_call", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "program", "program_output",
})


def item_error(exc: msgspec.ValidationError, prefix: str) -> InvalidRequest:
    """msgspec's '... - at `$.content[0].type`' for one item as a 400 naming
    ``input[3].content[0].type``. An unknown or missing key is reported at its parent, so
    the param names the key itself."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `$")
    if not sep:
        message, where = text, ""
    path = prefix + where.rstrip("`")
    for marker in ("missing required field `", "unknown field `"):
        start = message.find(marker)
        if start >= 0:
            key = message[start + len(marker):].split("`", 1)[0]
            path = f"{path}.{key}"
            break
    return InvalidRequest(f"Invalid request: {message} at '{path}'", param=path)


def decode_input_items(
    value: str | Sequence[object], *, path: str = "input"
) -> list[InputItem | OpaqueItem]:
    """The request's ``input`` as typed items, in order: a string is one user message; an
    item without ``type`` is a message (with ``role``) or an item reference (with ``id``);
    API item kinds the gateway does not model come back as `OpaqueItem`. InvalidRequest
    names the field (``input[3].type``, ``input[0].content[1].text``)."""
    if isinstance(value, str):
        return [InputMessage(role="user", content=value)]
    items: list[InputItem | OpaqueItem] = []
    for i, raw in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(raw, Mapping):
            raise InvalidRequest(f"Invalid request: expected an object at '{where}'",
                                 param=where)
        kind = raw.get("type")
        if kind is None:
            if "role" in raw:
                kind = "message"
            elif "id" in raw:
                kind = "item_reference"
            raw = {**raw, "type": kind}
        if not isinstance(kind, str):
            raise InvalidRequest(f"Invalid request: item type missing at '{where}.type'",
                                 param=f"{where}.type")
        cls = _ITEM_TYPES.get(kind)
        if cls is None:
            if kind in OPAQUE_ITEM_TYPES:
                items.append(OpaqueItem(type=kind, value=dict(raw)))
                continue
            raise InvalidRequest(f"Invalid request: unknown input item type {kind!r} at "
                                 f"'{where}.type'", param=f"{where}.type")
        try:
            items.append(msgspec.convert(raw, cls))
        except msgspec.ValidationError as exc:
            raise item_error(exc, where) from None
    return items


# --- tools ------------------------------------------------------------------------------


class FunctionTool(msgspec.Struct, tag="function", tag_field="type", omit_defaults=True,
                   kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, object] | None = None
    strict: bool | None = None


class CustomTool(msgspec.Struct, tag="custom", tag_field="type", omit_defaults=True,
                 kw_only=True):
    """A free-form tool: the model's input is text, optionally under a grammar (``format``)."""

    name: str
    description: str | None = None
    format: dict[str, object] | None = None


class NamespaceTool(msgspec.Struct, tag="namespace", tag_field="type", kw_only=True):
    """A named group of function and custom tools; calls name the namespace."""

    name: str
    description: str = ""
    tools: list[FunctionTool | CustomTool]


class HostedTool(msgspec.Struct, kw_only=True):
    """A tool OpenAI runs (web_search, file_search, code_interpreter, mcp, ...): its
    ``type`` and the tool as it came."""

    type: str
    value: dict[str, object]


ToolParam: TypeAlias = FunctionTool | CustomTool | NamespaceTool | HostedTool
_TOOL_TYPES: dict[str, type[FunctionTool | CustomTool | NamespaceTool]] = {
    "function": FunctionTool, "custom": CustomTool, "namespace": NamespaceTool}


def decode_tools(value: Sequence[object], *, path: str = "tools") -> list[ToolParam]:
    """The request's ``tools``, typed: function, custom and namespace tools as Structs, every
    other kind (hosted tools, newer kinds) as `HostedTool`."""
    tools: list[ToolParam] = []
    for i, raw in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(raw, Mapping):
            raise InvalidRequest(f"Invalid request: expected an object at '{where}'",
                                 param=where)
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest(f"Invalid request: tool type missing at '{where}.type'",
                                 param=f"{where}.type")
        cls = _TOOL_TYPES.get(kind)
        if cls is None:
            tools.append(HostedTool(type=kind, value=dict(raw)))
            continue
        try:
            tools.append(msgspec.convert(raw, cls))
        except msgspec.ValidationError as exc:
            raise item_error(exc, where) from None
    return tools


# --- text format, reasoning ---------------------------------------------------------------


class FormatText(msgspec.Struct, tag="text", tag_field="type"):
    pass


class FormatJSONObject(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class FormatJSONSchema(msgspec.Struct, tag="json_schema", tag_field="type", omit_defaults=True,
                       kw_only=True):
    name: str
    schema: dict[str, object]
    description: str | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


TextFormat: TypeAlias = FormatText | FormatJSONObject | FormatJSONSchema


class TextConfig(msgspec.Struct, omit_defaults=True):
    format: TextFormat | UnsetType = UNSET
    verbosity: str | UnsetType | None = UNSET  # low / medium / high


class ReasoningParam(msgspec.Struct, omit_defaults=True):
    effort: str | UnsetType | None = UNSET  # none / minimal / low / medium / high / xhigh
    summary: str | UnsetType | None = UNSET  # auto / concise / detailed
    generate_summary: str | UnsetType | None = UNSET  # the deprecated name of summary


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_obfuscation: bool | UnsetType = UNSET


class ConversationRef(msgspec.Struct):
    id: str


class PromptRef(msgspec.Struct, omit_defaults=True):
    id: str
    variables: dict[str, object] | UnsetType | None = UNSET
    version: str | UnsetType | None = UNSET


# --- the create request -----------------------------------------------------------------

_INT_FIELDS = ("max_output_tokens", "max_tool_calls", "top_logprobs")


class ResponsesRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    """POST /v1/responses. Unknown fields are ignored here (the raw body keeps them)."""

    model: str
    input: str | list[dict[str, object]] | UnsetType = UNSET
    instructions: str | UnsetType | None = UNSET
    tools: list[dict[str, object]] | UnsetType | None = UNSET
    # none / auto / required, or {"type": "function", "name": ...}, allowed_tools, hosted...
    tool_choice: Literal["none", "auto", "required"] | dict[str, object] | UnsetType | None = (
        UNSET)
    parallel_tool_calls: bool | UnsetType | None = UNSET
    text: TextConfig | UnsetType | None = UNSET
    # Integers that JSON clients may write as 100.0: made ints in __post_init__.
    max_output_tokens: int | float | UnsetType | None = UNSET
    max_tool_calls: int | float | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    top_logprobs: int | float | UnsetType | None = UNSET
    reasoning: ReasoningParam | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    conversation: str | ConversationRef | UnsetType | None = UNSET
    include: list[str] | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    truncation: str | UnsetType | None = UNSET  # auto / disabled
    prompt_cache_key: str | UnsetType | None = UNSET
    prompt_cache_retention: str | UnsetType | None = UNSET
    safety_identifier: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    background: bool | UnsetType | None = UNSET
    prompt: PromptRef | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, float):
                if not value.is_integer():
                    # msgspec's own wording, so the route's field_of names the param.
                    raise ValueError(f"Expected `int`, got `float` - at `$.{name}`")
                setattr(self, name, int(value))


# --- the Response object ----------------------------------------------------------------


class OutputMessage(msgspec.Struct, tag="message", tag_field="type", kw_only=True):
    id: str  # msg_...
    role: Literal["assistant"] = "assistant"
    status: str = "completed"
    content: list[OutputText | OutputRefusal]


OutputItem: TypeAlias = OutputMessage | FunctionToolCall | ReasoningItem | CustomToolCall


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True):
    """``input_tokens`` counts every prompt token, cached ones included."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = msgspec.field(
        default_factory=OutputTokensDetails)
    total_tokens: int = 0


class ResponseError(msgspec.Struct):
    code: str | None = None
    message: str = ""
    param: str | UnsetType | None = UNSET
    type: str | UnsetType | None = UNSET


class IncompleteDetails(msgspec.Struct):
    reason: str | None = None  # max_output_tokens / content_filter


# "object" is the tag so that it is always written (and checked when decoding).
class Response(msgspec.Struct, tag="response", tag_field="object", kw_only=True):
    """The Response object as this gateway writes it: every key OpenAI writes, nulls kept."""

    id: str  # resp_...
    created_at: int
    status: str  # completed / incomplete / failed / in_progress
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | list[dict[str, object]] | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = msgspec.field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, object] = msgspec.field(default_factory=dict)
    service_tier: str | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, object] = msgspec.field(default_factory=dict)
    tool_choice: str | dict[str, object] = "auto"
    tools: list[dict[str, object]] = msgspec.field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: str | None = None
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class ResponseIn(msgspec.Struct, kw_only=True):
    """A Response from an upstream, tolerant: output items stay JSON objects (hosted kinds
    included) for the decoder to type one by one. ``id`` and ``output`` make it an answer."""

    id: str
    created_at: int | float = 0
    status: str | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str = ""
    output: list[dict[str, object]]
    usage: ResponseUsage | None = None
    service_tier: str | None = None


# --- stream events (https://platform.openai.com/docs/api-reference/responses-streaming) ---
# What the gateway writes: each is the data of an ``event: <type>`` SSE block.

ContentPart: TypeAlias = OutputText | OutputRefusal | ReasoningText


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    sequence_number: int


class ResponseCreatedEvent(_Event, tag="response.created"):
    response: Response


class ResponseInProgressEvent(_Event, tag="response.in_progress"):
    response: Response


class ResponseCompletedEvent(_Event, tag="response.completed"):
    response: Response


class ResponseIncompleteEvent(_Event, tag="response.incomplete"):
    response: Response


class ResponseFailedEvent(_Event, tag="response.failed"):
    response: Response


class OutputItemAddedEvent(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDoneEvent(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAddedEvent(_Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class ContentPartDoneEvent(_Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class OutputTextDeltaEvent(_Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, object]] = msgspec.field(default_factory=list)


class OutputTextDoneEvent(_Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, object]] = msgspec.field(default_factory=list)


class RefusalDeltaEvent(_Event, tag="response.refusal.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class RefusalDoneEvent(_Event, tag="response.refusal.done"):
    item_id: str
    output_index: int
    content_index: int
    refusal: str


class FunctionCallArgumentsDeltaEvent(_Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(_Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    arguments: str


class CustomToolCallInputDeltaEvent(_Event, tag="response.custom_tool_call_input.delta"):
    item_id: str
    output_index: int
    delta: str


class CustomToolCallInputDoneEvent(_Event, tag="response.custom_tool_call_input.done"):
    item_id: str
    output_index: int
    input: str


class ReasoningSummaryPartAddedEvent(_Event, tag="response.reasoning_summary_part.added"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDoneEvent(_Event, tag="response.reasoning_summary_part.done"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDeltaEvent(_Event, tag="response.reasoning_summary_text.delta"):
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDoneEvent(_Event, tag="response.reasoning_summary_text.done"):
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ReasoningTextDeltaEvent(_Event, tag="response.reasoning_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDoneEvent(_Event, tag="response.reasoning_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class ErrorEvent(_Event, tag="error"):
    message: str
    code: str | None = None
    param: str | None = None


StreamEvent: TypeAlias = (
    ResponseCreatedEvent | ResponseInProgressEvent | ResponseCompletedEvent
    | ResponseIncompleteEvent | ResponseFailedEvent | OutputItemAddedEvent | OutputItemDoneEvent
    | ContentPartAddedEvent | ContentPartDoneEvent | OutputTextDeltaEvent | OutputTextDoneEvent
    | RefusalDeltaEvent | RefusalDoneEvent | FunctionCallArgumentsDeltaEvent
    | FunctionCallArgumentsDoneEvent | CustomToolCallInputDeltaEvent
    | CustomToolCallInputDoneEvent | ReasoningSummaryPartAddedEvent
    | ReasoningSummaryPartDoneEvent | ReasoningSummaryTextDeltaEvent
    | ReasoningSummaryTextDoneEvent | ReasoningTextDeltaEvent | ReasoningTextDoneEvent
    | ErrorEvent
)

# What the gateway reads from an upstream's stream, tolerant of missing and unknown fields.


class LifecycleEventIn(msgspec.Struct):
    """response.created / in_progress / completed / incomplete / failed."""

    response: ResponseIn


class ItemEventIn(msgspec.Struct):
    """response.output_item.added / done; the item stays a JSON object."""

    item: dict[str, object]
    output_index: int = 0


class DeltaEventIn(msgspec.Struct):
    """Every other content event: only the fields the hub needs."""

    output_index: int = 0
    item_id: str = ""
    delta: str = ""
    text: str | None = None
    arguments: str | None = None
    input: str | None = None
    refusal: str | None = None


class ErrorEventIn(msgspec.Struct):
    message: str = ""
    code: str | int | None = None
    param: str | None = None


class UsageOnly(msgspec.Struct):
    """Just enough of a Response body to read its token usage cheaply."""

    usage: ResponseUsage | None = None


class LifecycleUsageOnly(msgspec.Struct):
    """Just enough of a response.completed / incomplete event to read its usage."""

    response: UsageOnly
