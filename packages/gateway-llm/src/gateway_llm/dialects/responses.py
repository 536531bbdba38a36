"""The OpenAI Responses API (https://platform.openai.com/docs/api-reference/responses) as a
dialect of the hub: the /v1/responses front door, a Responses-speaking upstream, and native
passthrough of its bodies and ``event:``/``data:`` streams."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core import responses_types as rt
from gateway_core.errors import GatewayError, InvalidRequest, UpstreamError
from gateway_llm.dialects.chat import error_from_openai
from gateway_llm.errors import redact
from gateway_llm.hub import (
    Conversation,
    DialectName,
    EncodeOptions,
    Event,
    File,
    Finish,
    FinishReason,
    FunctionTool,
    Image,
    JSONSchemaFormat,
    LLMRequest,
    Message,
    NamedToolChoice,
    Opaque,
    Outbound,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    ReasoningEnd,
    Refusal,
    RefusalDelta,
    Result,
    Start,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
    UsageUpdate,
)

__all__ = [
    "check_call_ids", "decode_result", "encode_request", "encode_result", "error_from",
    "input_items_of", "native_body", "native_usage", "output_items_of", "RESPONSES",
    "ResponsesDialect", "ResponsesNativeRelay", "ResponsesStreamDecoder",
    "ResponsesStreamEncoder", "to_conversation",
]

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_response_decoder = msgspec.json.Decoder(rt.ResponseIn)
_usage_decoder = msgspec.json.Decoder(rt.UsageOnly)
_lifecycle_decoder = msgspec.json.Decoder(rt.LifecycleEventIn)
_lifecycle_usage_decoder = msgspec.json.Decoder(rt.LifecycleUsageOnly)
_item_event_decoder = msgspec.json.Decoder(rt.ItemEventIn)
_delta_decoder = msgspec.json.Decoder(rt.DeltaEventIn)
_error_event_decoder = msgspec.json.Decoder(rt.ErrorEventIn)


class _TypeOnly(msgspec.Struct):
    type: str = ""


class _Output(msgspec.Struct):
    output: list[dict[str, object]] = msgspec.field(default_factory=list)


class _OutputOrEvent(msgspec.Struct):
    """A Response body, or a lifecycle event's data holding one under ``response``."""

    output: list[dict[str, object]] = msgspec.field(default_factory=list)
    response: _Output | None = None


_type_decoder = msgspec.json.Decoder(_TypeOnly)
_output_decoder = msgspec.json.Decoder(_OutputOrEvent)


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(24).hex()


def _set(value: object) -> bool:
    return value is not UNSET and value is not None


# --- front door: request -> Conversation -------------------------------------------------

# Item kinds the model produces (they join the assistant turn); the others answer them.
_ASSISTANT_ITEMS = frozenset({
    "file_search_call", "computer_call", "web_search_call", "tool_search_call",
    "image_generation_call", "code_interpreter_call", "local_shell_call", "shell_call",
    "apply_patch_call", "mcp_list_tools", "mcp_approval_request", "mcp_call", "program",
    "compaction",
})
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


def to_conversation(typed: object) -> Conversation:
    """The create request as a Conversation: ``instructions`` first (a system message),
    then the input items in order, consecutive assistant items (text, reasoning, calls)
    merged into one assistant message. Call outputs must answer a call earlier in the input
    (`check_call_ids`). InvalidRequest names the field (``input[3].type``)."""
    req = typed if isinstance(typed, rt.ResponsesRequest) else _request_of(typed)
    items = rt.decode_input_items(req.input if _set(req.input) else [])  # type: ignore[arg-type]
    # Outputs may answer calls the gateway cannot see: in an OpenAI conversation, an
    # unexpanded previous response or a referenced item.
    if not (_set(req.conversation) or _set(req.previous_response_id)):
        check_call_ids(items)
    messages: list[Message] = []
    if isinstance(req.instructions, str) and req.instructions:
        messages.append(Message(role="system", parts=[Text(text=req.instructions)]))
    _append_items(messages, items)
    include = req.include if isinstance(req.include, list) else []
    conversation = Conversation(
        messages=messages,
        tools=_tools_of(req.tools if isinstance(req.tools, list) else []),
        tool_choice=_tool_choice_of(req.tool_choice),
        parallel_tool_calls=_opt(req.parallel_tool_calls),
        output_format=_output_format_of(req.text),
        max_output_tokens=_int(req.max_output_tokens),
        temperature=_opt(req.temperature),
        top_p=_opt(req.top_p),
        top_logprobs=_int(req.top_logprobs),
        logprobs=True if _LOGPROBS_INCLUDE in include else None,
        reasoning=_reasoning_of(req.reasoning),
        user=_opt(req.user),
        metadata=_opt(req.metadata),
        service_tier=_opt(req.service_tier),
        stream=req.stream is True,
    )
    # Stored state the gateway cannot resolve: only a Responses upstream could send it.
    for name in ("conversation", "prompt", "previous_response_id"):
        value = getattr(req, name)
        if _set(value):
            conversation.unsupported.append(
                Opaque(kind=name, path=name, value=msgspec.to_builtins(value)))
    if req.background is True:
        conversation.unsupported.append(Opaque(kind="background", path="background", value=True))
    return conversation


def _request_of(value: object) -> rt.ResponsesRequest:
    try:
        return msgspec.convert(value, rt.ResponsesRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise rt.item_error(exc, "") from None


def _opt(value: T | UnsetType | None) -> T | None:
    return None if isinstance(value, UnsetType) else value


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_call_ids(source: Conversation | Sequence[object]) -> None:
    """Every function / custom tool call output answers a call earlier in the input.
    ``source`` is a Conversation or the input items (typed, or as JSON objects); for items
    the error names ``input[i].call_id``. Item references may hold calls, so after one
    nothing is checked."""
    if isinstance(source, Conversation):
        seen: set[str] = set()
        for m in source.messages:
            for part in m.parts:
                if isinstance(part, ToolCall):
                    seen.add(part.id)
                elif isinstance(part, ToolResult) and part.call_id not in seen:
                    raise _unanswered(part.call_id, "input")
        return
    items = [it for it in source if isinstance(it, (*_TYPED_ITEMS, rt.OpaqueItem))]
    if len(items) != len(source):
        items = rt.decode_input_items(source)
    calls: set[str] = set()
    for i, item in enumerate(items):
        if isinstance(item, rt.ItemReference):
            return
        if isinstance(item, (rt.FunctionToolCall, rt.CustomToolCall)):
            calls.add(item.call_id)
        elif isinstance(item, (rt.FunctionCallOutput, rt.CustomToolCallOutput)):
            if item.call_id is None:
                raise InvalidRequest(f"Invalid request: missing required field `call_id` at "
                                     f"'input[{i}].call_id'", param=f"input[{i}].call_id")
            if item.call_id not in calls:
                raise _unanswered(item.call_id, f"input[{i}].call_id")


_TYPED_ITEMS = (rt.InputMessage, rt.FunctionToolCall, rt.FunctionCallOutput, rt.ReasoningItem,
                rt.CustomToolCall, rt.CustomToolCallOutput, rt.ItemReference)


def _unanswered(call_id: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"No tool call found for function call output with call_id "
                          f"{call_id!r}.", param=param)


def _append_items(messages: list[Message], items: Sequence[rt.InputItem | rt.OpaqueItem]) -> None:
    def assistant() -> list[Part]:
        if not messages or messages[-1].role != "assistant":
            messages.append(Message(role="assistant", parts=[]))
        return messages[-1].parts

    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, rt.InputMessage):
            parts = _content_of(item.content, where)
            if item.role == "assistant":
                assistant().extend(parts)
            else:
                messages.append(Message(role=item.role, parts=parts))
        elif isinstance(item, rt.FunctionToolCall):
            assistant().append(ToolCall(id=item.call_id, name=item.name, arguments=item.arguments,
                                        item_id=item.id or None))
        elif isinstance(item, rt.CustomToolCall):
            assistant().append(ToolCall(id=item.call_id, name=item.name, arguments=item.input,
                                        kind="custom", item_id=item.id or None))
        elif isinstance(item, rt.ReasoningItem):
            text = "".join(c.text for c in item.content) if item.content else ""
            assistant().append(Reasoning(
                text=text, summary=[s.text for s in item.summary],
                encrypted_content=item.encrypted_content or None, item_id=item.id or None,
                source="responses"))
        elif isinstance(item, (rt.FunctionCallOutput, rt.CustomToolCallOutput)):
            if item.call_id is None:
                raise InvalidRequest(f"Invalid request: missing required field `call_id` at "
                                     f"'{where}.call_id'", param=f"{where}.call_id")
            kind: Literal["function", "custom"] = (
                "custom" if isinstance(item, rt.CustomToolCallOutput) else "function")
            messages.append(Message(role="tool", parts=[ToolResult(
                call_id=item.call_id, content=_tool_output_of(item.output, f"{where}.output"),
                kind=kind)]))
        elif isinstance(item, rt.ItemReference):
            messages.append(Message(role="user", parts=[Opaque(
                kind="item_reference", path=where,
                value={"type": "item_reference", "id": item.id})]))
        else:
            part = Opaque(kind=item.type, path=where, value=item.value)
            if item.type in _ASSISTANT_ITEMS:
                assistant().append(part)
            else:
                messages.append(Message(role="user", parts=[part]))


def _content_of(content: rt.EasyContent, where: str) -> list[Part]:
    if isinstance(content, str):
        return [Text(text=content)]
    parts: list[Part] = []
    for j, p in enumerate(content):
        path = f"{where}.content[{j}]"
        if isinstance(p, (rt.InputText, rt.OutputText)):
            parts.append(Text(text=p.text))
        elif isinstance(p, rt.OutputRefusal):
            parts.append(Refusal(text=p.refusal))
        elif isinstance(p, rt.InputImage):
            parts.append(_image_of(p, path))
        elif isinstance(p, rt.InputFile):
            parts.append(_file_of(p, path))
        else:
            parts.append(Opaque(kind="input_audio", path=path, value=msgspec.to_builtins(p)))
    return parts


def _image_of(p: rt.InputImage, path: str) -> Image:
    if not p.image_url and not p.file_id:
        raise InvalidRequest(f"Invalid request: an input_image needs image_url or file_id at "
                             f"'{path}.image_url'", param=f"{path}.image_url")
    return Image(url=p.image_url, file_id=p.file_id, detail=p.detail)


def _file_of(p: rt.InputFile, path: str) -> File:
    if not (p.file_data or p.file_id or p.file_url):
        raise InvalidRequest(f"Invalid request: an input_file needs file_data, file_id or "
                             f"file_url at '{path}.file_data'", param=f"{path}.file_data")
    data, media_type = p.file_data, None
    # file_data is a data: URL (data:application/pdf;base64,...); the hub keeps bare base64.
    if data is not None and data.startswith("data:") and ";base64," in data:
        head, data = data[5:].split(";base64,", 1)
        media_type = head or None
    return File(data=data, media_type=media_type, url=p.file_url, file_id=p.file_id,
                filename=p.filename)


def _tool_output_of(output: str | list[rt.ToolOutputContent],
                    where: str) -> list[Text | Image | File]:
    if isinstance(output, str):
        return [Text(text=output)]
    out: list[Text | Image | File] = []
    for j, p in enumerate(output):
        if isinstance(p, rt.InputText):
            out.append(Text(text=p.text))
        elif isinstance(p, rt.InputImage):
            out.append(_image_of(p, f"{where}[{j}]"))
        else:
            out.append(_file_of(p, f"{where}[{j}]"))
    return out


def _tools_of(raw: Sequence[object]) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, tool in enumerate(rt.decode_tools(raw)):
        where = f"tools[{i}]"
        if isinstance(tool, rt.FunctionTool):
            tools.append(_function_of(tool))
        elif isinstance(tool, rt.NamespaceTool):
            # Flattened: calls name the function; the namespace is restored on the way out.
            for j, t in enumerate(tool.tools):
                if isinstance(t, rt.FunctionTool):
                    tools.append(_function_of(t))
                else:
                    tools.append(Opaque(kind="tool:custom", path=f"{where}.tools[{j}].type",
                                        value=msgspec.to_builtins(t)))
        elif isinstance(tool, rt.CustomTool):
            tools.append(Opaque(kind="tool:custom", path=f"{where}.type",
                                value=msgspec.to_builtins(tool)))
        else:
            tools.append(Opaque(kind=f"tool:{tool.type}", path=f"{where}.type", value=tool.value))
    return tools


def _function_of(t: rt.FunctionTool) -> FunctionTool:
    return FunctionTool(name=t.name, description=t.description, parameters=t.parameters,
                        strict=t.strict)


def _tool_choice_of(value: object) -> ToolChoice | None:
    if value is UNSET or value is None:
        return None
    if value == "none" or value == "auto" or value == "required":
        return value
    assert isinstance(value, dict)
    kind = value.get("type")
    name = value.get("name")
    if kind in ("function", "custom"):
        if not isinstance(name, str):
            raise InvalidRequest(f"Invalid request: a {kind} tool_choice needs a name at "
                                 "'tool_choice.name'", param="tool_choice.name")
        return NamedToolChoice(name=name)
    if not isinstance(kind, str):
        raise InvalidRequest("Invalid request: tool_choice needs a type at 'tool_choice.type'",
                             param="tool_choice.type")
    return Opaque(kind=f"tool_choice:{kind}", path="tool_choice", value=value)


def _output_format_of(text: object) -> OutputFormat | None:
    if not isinstance(text, rt.TextConfig):
        return None
    fmt = text.format
    if isinstance(fmt, rt.FormatText):
        return "text"
    if isinstance(fmt, rt.FormatJSONObject):
        return "json_object"
    if isinstance(fmt, rt.FormatJSONSchema):
        return JSONSchemaFormat(
            name=fmt.name, schema=fmt.schema,
            description=fmt.description if isinstance(fmt.description, str) else None,
            strict=fmt.strict if isinstance(fmt.strict, bool) else None)
    return None


def _reasoning_of(value: object) -> ReasoningConfig | None:
    if not isinstance(value, rt.ReasoningParam):
        return None
    effort = value.effort if isinstance(value.effort, str) else None
    summary = next((s for s in (value.summary, value.generate_summary) if isinstance(s, str)),
                   None)
    if effort is None and summary is None:
        return None
    return ReasoningConfig(effort=effort, summary=summary, enabled=effort != "none")


# --- front door: Result -> Response, hub events -> SSE ----------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _namespaces(raw: Mapping[str, object]) -> dict[str, str]:
    """Function name -> the namespace tool it came in, to name it on the function_call."""
    found: dict[str, str] = {}
    tools = raw.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            ns, inner = tool.get("name"), tool.get("tools")
            for t in inner if isinstance(inner, list) else ():
                if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(ns, str):
                    found[t["name"]] = ns
    return found


def _response(request: LLMRequest, *, id: str, model: str, created: int,
              status: str) -> rt.Response:
    """The Response object with what the request set echoed back, as OpenAI does."""
    raw = request.raw
    typed = request.typed if isinstance(request.typed, rt.ResponsesRequest) else None
    raw_text = raw.get("text")
    text: dict[str, object] = {"format": {"type": "text"}}
    if isinstance(raw_text, dict):
        text.update(raw_text)
    reasoning = raw.get("reasoning")
    tools = raw.get("tools")
    tool_choice = raw.get("tool_choice")
    metadata = raw.get("metadata")
    instructions = raw.get("instructions")
    previous = raw.get("previous_response_id")
    store = raw.get("store")
    parallel = raw.get("parallel_tool_calls")
    user, truncation, tier = raw.get("user"), raw.get("truncation"), raw.get("service_tier")
    return rt.Response(
        id=id, created_at=created, status=status, model=model,
        instructions=instructions if isinstance(instructions, str) else None,
        max_output_tokens=_int(typed.max_output_tokens) if typed else None,
        max_tool_calls=_int(typed.max_tool_calls) if typed else None,
        parallel_tool_calls=parallel if isinstance(parallel, bool) else True,
        previous_response_id=previous if isinstance(previous, str) else None,
        reasoning={"effort": None, "summary": None,
                   **(reasoning if isinstance(reasoning, dict) else {})},
        service_tier=tier if isinstance(tier, str) else None,
        store=store if isinstance(store, bool) else True,
        temperature=_number(raw.get("temperature")),
        text=text,
        tool_choice=tool_choice if isinstance(tool_choice, (str, dict)) else "auto",
        tools=[t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else [],
        top_logprobs=_int(typed.top_logprobs) if typed else None,
        top_p=_number(raw.get("top_p")),
        truncation=truncation if isinstance(truncation, str) else "disabled",
        user=user if isinstance(user, str) else None,
        metadata={k: v for k, v in metadata.items() if isinstance(v, str)}
        if isinstance(metadata, dict) else {},
    )


def _usage_out(usage: Usage | None) -> rt.ResponseUsage | None:
    if usage is None:
        return None
    return rt.ResponseUsage(
        input_tokens=usage.input_tokens,
        input_tokens_details=rt.InputTokensDetails(
            cached_tokens=usage.cached_input_tokens or 0,
            cache_write_tokens=usage.cache_write_input_tokens or 0),
        output_tokens=usage.output_tokens,
        output_tokens_details=rt.OutputTokensDetails(
            reasoning_tokens=usage.reasoning_tokens or 0),
        total_tokens=usage.total_tokens,
    )


def _status_of(finish: FinishReason | None) -> tuple[str, rt.IncompleteDetails | None]:
    if finish == "length":
        return "incomplete", rt.IncompleteDetails(reason="max_output_tokens")
    if finish == "content_filter":
        return "incomplete", rt.IncompleteDetails(reason="content_filter")
    return "completed", None


def _response_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("resp_") else _new_id("resp_")


def _item_id(item_id: str | None, prefix: str) -> str:
    return item_id if item_id and item_id.startswith(prefix) else _new_id(prefix)


def _reasoning_item(part: Reasoning) -> rt.ReasoningItem:
    own = part.source == "responses"
    return rt.ReasoningItem(
        id=_item_id(part.item_id if own else None, "rs_"),
        summary=[rt.SummaryText(text=s) for s in part.summary],
        content=[rt.ReasoningText(text=part.text)] if part.text else UNSET,
        encrypted_content=part.encrypted_content if own and part.encrypted_content else UNSET,
    )


def _call_item(part: ToolCall, namespaces: Mapping[str, str],
               status: str) -> rt.FunctionToolCall | rt.CustomToolCall:
    ns = namespaces.get(part.name, UNSET)
    if part.kind == "custom":
        return rt.CustomToolCall(id=_item_id(part.item_id, "ctc_"), call_id=part.id,
                                 name=part.name, input=part.arguments, namespace=ns)
    return rt.FunctionToolCall(id=_item_id(part.item_id, "fc_"), call_id=part.id,
                               name=part.name, arguments=part.arguments, status=status,
                               namespace=ns)


def encode_result(result: Result, request: LLMRequest) -> bytes:
    """A finished answer as a Response object (status completed, or incomplete on length
    and content_filter), echoing the request's settings."""
    status, incomplete = _status_of(result.finish)
    namespaces = _namespaces(request.raw)
    output: list[rt.OutputItem] = []
    message: rt.OutputMessage | None = None
    for part in result.parts:
        if isinstance(part, (Text, Refusal)):
            if message is None:
                message = rt.OutputMessage(id=_new_id("msg_"), content=[])
                output.append(message)
            message.content.append(rt.OutputText(text=part.text) if isinstance(part, Text)
                                   else rt.OutputRefusal(refusal=part.text))
            continue
        message = None
        if isinstance(part, Reasoning):
            output.append(_reasoning_item(part))
        elif isinstance(part, ToolCall):
            output.append(_call_item(part, namespaces, "completed"))
        # Hosted call items (Opaque) of a translated Responses upstream are left out.
    if status == "incomplete":
        for item in reversed(output):
            if isinstance(item, rt.OutputMessage):
                item.status = "incomplete"
                break
    created = result.created or request.created or int(time.time())
    response = _response(request, id=_response_id(result.id), model=result.model or request.model,
                         created=created, status=status)
    response.output = output
    response.incomplete_details = incomplete
    response.usage = _usage_out(result.usage)
    return _encode(response)


def _sse(event: rt.StreamEvent) -> bytes:
    tag = type(event).__struct_config__.tag
    return b"event: " + str(tag).encode() + b"\ndata: " + _encode(event) + b"\n\n"


# The SDK's ResponseError.code is one of a fixed set; anything else reads as server_error.
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def _error_of(error: GatewayError) -> rt.ResponseError:
    if error.code in _ERROR_CODES:
        code = str(error.code)
    elif error.status == 429:
        code = "rate_limit_exceeded"
    else:
        code = "server_error"
    return rt.ResponseError(code=code, message=error.message,
                            param=error.param if error.param is not None else UNSET,
                            type=error.type)


class _Open(msgspec.Struct, kw_only=True):
    """The output item being streamed and its open sub-part, if any."""

    index: int  # output_index
    item: rt.OutputItem
    tool: int = -1  # the hub's tool call index
    part: str = ""  # "output_text" | "refusal" | "summary" | "reasoning_text" | ""
    sub: int = 0  # content_index / summary_index of the open sub-part
    text: str = ""  # what the open sub-part (or the call's arguments) holds so far


class ResponsesStreamEncoder:
    """Hub events as the Responses API's stream: response.created, response.in_progress,
    each output item from output_item.added through its parts to output_item.done, and at
    close() response.completed / response.incomplete with the whole response and usage
    (usage arrives after Finish from Chat upstreams). Every event has ``sequence_number``."""

    def __init__(self, request: LLMRequest) -> None:
        self._request = request
        self._namespaces = _namespaces(request.raw)
        self._seq = 0
        self._response: rt.Response | None = None
        self._output: list[rt.OutputItem] = []
        self._open: _Open | None = None
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._ended = False

    def _next(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    def _snapshot(self, status: str) -> rt.Response:
        assert self._response is not None
        return msgspec.structs.replace(self._response, status=status, output=list(self._output))

    def _base(self, start: Start | None) -> rt.Response:
        if self._response is None:
            request = self._request
            created = (start.created if start else 0) or request.created or int(time.time())
            self._response = _response(
                request, id=_response_id(start.id if start else ""),
                model=(start.model if start else "") or request.model, created=created,
                status="in_progress")
        return self._response

    def _begin(self, start: Start | None, out: list[bytes]) -> None:
        self._base(start)
        if start is not None and start.usage is not None:
            self._usage = start.usage  # until a UsageUpdate says more
        snapshot = self._snapshot("in_progress")
        out.append(_sse(rt.ResponseCreatedEvent(sequence_number=self._next(), response=snapshot)))
        out.append(_sse(rt.ResponseInProgressEvent(sequence_number=self._next(),
                                                   response=snapshot)))

    def feed(self, event: Event) -> list[bytes]:
        if self._ended:
            return []
        out: list[bytes] = []
        if self._response is None:
            self._begin(event if isinstance(event, Start) else None, out)
        if isinstance(event, TextDelta):
            if event.text:
                self._content_delta("output_text", event.text, out)
        elif isinstance(event, RefusalDelta):
            if event.text:
                self._content_delta("refusal", event.text, out)
        elif isinstance(event, ReasoningDelta):
            if event.text:
                self._reasoning_delta(event, out)
        elif isinstance(event, ReasoningEnd):
            self._reasoning_end(event, out)
        elif isinstance(event, ToolCallStart):
            self._close_item(out)
            item = _call_item(ToolCall(id=event.id, name=event.name, kind=event.kind,
                                       item_id=event.item_id), self._namespaces, "in_progress")
            self._open_item(item, out, tool=event.index)
        elif isinstance(event, ToolCallDelta):
            self._tool_delta(event, out)
        elif isinstance(event, ToolCallEnd):
            if self._open is not None and self._open.tool == event.index:
                self._close_item(out)
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason
            self._close_item(out)
        return out

    # --- items -------------------------------------------------------------------------

    def _open_item(self, item: rt.OutputItem, out: list[bytes], *, tool: int = -1) -> _Open:
        index = len(self._output)
        self._output.append(item)
        out.append(_sse(rt.OutputItemAddedEvent(sequence_number=self._next(), output_index=index,
                                                item=item)))
        # The item keeps growing in self._output; the event above was encoded as it stood.
        self._open = _Open(index=index, item=item, tool=tool)
        return self._open

    def _close_item(self, out: list[bytes]) -> None:
        st = self._open
        if st is None:
            return
        self._close_part(st, out)
        item = st.item
        seq = self._next
        if isinstance(item, rt.FunctionToolCall):
            item.arguments = st.text
            item.status = "completed"
            out.append(_sse(rt.FunctionCallArgumentsDoneEvent(
                sequence_number=seq(), item_id=str(item.id), output_index=st.index,
                arguments=st.text)))
        elif isinstance(item, rt.CustomToolCall):
            item.input = st.text
            out.append(_sse(rt.CustomToolCallInputDoneEvent(
                sequence_number=seq(), item_id=str(item.id), output_index=st.index,
                input=st.text)))
        elif isinstance(item, rt.OutputMessage):
            item.status = "incomplete" if _status_of(self._finish)[0] == "incomplete" else (
                "completed")
        elif isinstance(item, rt.ReasoningItem):
            item.status = "completed"
        out.append(_sse(rt.OutputItemDoneEvent(sequence_number=seq(), output_index=st.index,
                                               item=item)))
        self._open = None

    def _close_part(self, st: _Open, out: list[bytes]) -> None:
        if not st.part:
            return
        item, seq, text = st.item, self._next, st.text
        item_id = str(item.id) if item.id is not UNSET else ""
        if isinstance(item, rt.OutputMessage):
            part: rt.ContentPart
            if st.part == "output_text":
                part = rt.OutputText(text=text)
                out.append(_sse(rt.OutputTextDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    content_index=st.sub, text=text)))
            else:
                part = rt.OutputRefusal(refusal=text)
                out.append(_sse(rt.RefusalDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    content_index=st.sub, refusal=text)))
            item.content[st.sub] = part
            out.append(_sse(rt.ContentPartDoneEvent(
                sequence_number=seq(), item_id=item_id, output_index=st.index,
                content_index=st.sub, part=part)))
        elif isinstance(item, rt.ReasoningItem):
            if st.part == "summary":
                summary = rt.SummaryText(text=text)
                item.summary[st.sub] = summary
                out.append(_sse(rt.ReasoningSummaryTextDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    summary_index=st.sub, text=text)))
                out.append(_sse(rt.ReasoningSummaryPartDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    summary_index=st.sub, part=summary)))
            else:
                reasoning = rt.ReasoningText(text=text)
                assert isinstance(item.content, list)
                item.content[st.sub] = reasoning
                out.append(_sse(rt.ReasoningTextDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    content_index=st.sub, text=text)))
                out.append(_sse(rt.ContentPartDoneEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    content_index=st.sub, part=reasoning)))
        st.part, st.text = "", ""

    # --- content -----------------------------------------------------------------------

    def _content_delta(self, kind: str, text: str, out: list[bytes]) -> None:
        st = self._open
        if st is None or not isinstance(st.item, rt.OutputMessage):
            self._close_item(out)
            st = self._open_item(rt.OutputMessage(id=_new_id("msg_"), status="in_progress",
                                                  content=[]), out)
        item = st.item
        assert isinstance(item, rt.OutputMessage)
        item_id = item.id
        if st.part != kind:
            self._close_part(st, out)
            part: rt.OutputText | rt.OutputRefusal = (
                rt.OutputText(text="") if kind == "output_text" else rt.OutputRefusal(refusal=""))
            st.sub = len(item.content)
            item.content.append(part)
            st.part = kind
            out.append(_sse(rt.ContentPartAddedEvent(
                sequence_number=self._next(), item_id=item_id, output_index=st.index,
                content_index=st.sub, part=part)))
        st.text += text
        if kind == "output_text":
            out.append(_sse(rt.OutputTextDeltaEvent(
                sequence_number=self._next(), item_id=item_id, output_index=st.index,
                content_index=st.sub, delta=text)))
        else:
            out.append(_sse(rt.RefusalDeltaEvent(
                sequence_number=self._next(), item_id=item_id, output_index=st.index,
                content_index=st.sub, delta=text)))

    def _reasoning_open(self, out: list[bytes], item_id: str | None = None) -> _Open:
        st = self._open
        if st is None or not isinstance(st.item, rt.ReasoningItem):
            self._close_item(out)
            st = self._open_item(rt.ReasoningItem(id=_item_id(item_id, "rs_"), summary=[]), out)
        return st

    def _reasoning_delta(self, event: ReasoningDelta, out: list[bytes]) -> None:
        st = self._reasoning_open(out)
        item = st.item
        assert isinstance(item, rt.ReasoningItem)
        item_id, seq = str(item.id), self._next
        kind = "summary" if event.summary else "reasoning_text"
        if st.part != kind:
            self._close_part(st, out)
            st.part = kind
            if event.summary:
                st.sub = len(item.summary)
                item.summary.append(rt.SummaryText(text=""))
                out.append(_sse(rt.ReasoningSummaryPartAddedEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    summary_index=st.sub, part=rt.SummaryText(text=""))))
            else:
                if not isinstance(item.content, list):
                    item.content = []
                st.sub = len(item.content)
                item.content.append(rt.ReasoningText(text=""))
                out.append(_sse(rt.ContentPartAddedEvent(
                    sequence_number=seq(), item_id=item_id, output_index=st.index,
                    content_index=st.sub, part=rt.ReasoningText(text=""))))
        st.text += event.text
        if event.summary:
            out.append(_sse(rt.ReasoningSummaryTextDeltaEvent(
                sequence_number=seq(), item_id=item_id, output_index=st.index,
                summary_index=st.sub, delta=event.text)))
        else:
            out.append(_sse(rt.ReasoningTextDeltaEvent(
                sequence_number=seq(), item_id=item_id, output_index=st.index,
                content_index=st.sub, delta=event.text)))

    def _reasoning_end(self, event: ReasoningEnd, out: list[bytes]) -> None:
        own = event.source == "responses"
        st = self._reasoning_open(out, event.item_id if own else None)
        item = st.item
        assert isinstance(item, rt.ReasoningItem)
        if own and event.encrypted_content:
            item.encrypted_content = event.encrypted_content
        self._close_item(out)

    def _tool_delta(self, event: ToolCallDelta, out: list[bytes]) -> None:
        st = self._open
        if st is None or st.tool != event.index or not event.arguments:
            return  # a call already closed (the hub ends a call at the next block)
        st.text += event.arguments
        item = st.item
        if isinstance(item, rt.CustomToolCall):
            out.append(_sse(rt.CustomToolCallInputDeltaEvent(
                sequence_number=self._next(), item_id=str(item.id), output_index=st.index,
                delta=event.arguments)))
        else:
            assert isinstance(item, rt.FunctionToolCall)
            out.append(_sse(rt.FunctionCallArgumentsDeltaEvent(
                sequence_number=self._next(), item_id=str(item.id), output_index=st.index,
                delta=event.arguments)))

    # --- the end -----------------------------------------------------------------------

    def close(self) -> list[bytes]:
        if self._ended:
            return []
        out: list[bytes] = []
        if self._response is None:
            self._begin(None, out)
        self._close_item(out)
        self._ended = True
        status, incomplete = _status_of(self._finish)
        response = self._snapshot(status)
        response.incomplete_details = incomplete
        response.usage = _usage_out(self._usage)
        if status == "incomplete":
            out.append(_sse(rt.ResponseIncompleteEvent(sequence_number=self._next(),
                                                       response=response)))
        else:
            out.append(_sse(rt.ResponseCompletedEvent(sequence_number=self._next(),
                                                      response=response)))
        return out

    def fail(self, error: GatewayError) -> list[bytes]:
        """The error as response.failed (the output so far, unfinished items marked
        incomplete), and nothing after it."""
        if self._ended:
            return []
        self._ended = True
        self._base(None)
        st = self._open
        if st is not None:
            item = st.item
            if isinstance(item, rt.FunctionToolCall):
                item.arguments, item.status = st.text, "incomplete"
            elif isinstance(item, rt.CustomToolCall):
                item.input = st.text
            elif isinstance(item, rt.OutputMessage):
                item.status = "incomplete"
                if st.part:
                    item.content[st.sub] = (rt.OutputText(text=st.text) if st.part == "output_text"
                                            else rt.OutputRefusal(refusal=st.text))
            else:
                item.status = "incomplete"
                if st.part == "summary":
                    item.summary[st.sub] = rt.SummaryText(text=st.text)
                elif st.part and isinstance(item.content, list):
                    item.content[st.sub] = rt.ReasoningText(text=st.text)
            self._open = None
        response = self._snapshot("failed")
        response.error = _error_of(error)
        response.usage = _usage_out(self._usage)
        return [_sse(rt.ResponseFailedEvent(sequence_number=self._next(), response=response))]


# --- upstream: Conversation -> Responses request ------------------------------------------

# Tool kinds a Responses upstream takes as they are (the openai SDK's ToolParam).
_RESPONSES_TOOLS = frozenset({
    "function", "custom", "namespace", "file_search", "computer", "computer_use_preview",
    "web_search", "web_search_2025_08_26", "web_search_preview",
    "web_search_preview_2025_03_11", "mcp", "code_interpreter", "programmatic_tool_calling",
    "image_generation", "local_shell", "shell", "tool_search", "apply_patch",
})
_SENDABLE_ITEMS = rt.OPAQUE_ITEM_TYPES | {"item_reference"}


def _data_url(data: str | None, media_type: str | None) -> str | None:
    if data is None or media_type is None:
        return data
    return f"data:{media_type};base64,{data}"


def _input_part(part: Part) -> rt.InputContent | None:
    if isinstance(part, Text):
        return rt.InputText(text=part.text)
    if isinstance(part, Image):
        return rt.InputImage(image_url=part.url or _data_url(part.data, part.media_type),
                             file_id=part.file_id, detail=part.detail or "auto")
    if isinstance(part, File):
        return rt.InputFile(file_data=_data_url(part.data, part.media_type),
                            file_id=part.file_id, file_url=part.url, filename=part.filename)
    return None


def _output_of(result: ToolResult) -> str | list[rt.ToolOutputContent]:
    if all(isinstance(p, Text) for p in result.content):
        return "".join(p.text for p in result.content if isinstance(p, Text))
    out: list[rt.ToolOutputContent] = []
    for p in result.content:
        part = _input_part(p)
        assert isinstance(part, (rt.InputText, rt.InputImage, rt.InputFile))
        out.append(part)
    return out


def _refuse(what: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(f"{what} cannot be sent to a Responses API upstream.", param=param)


def _input_items(messages: Sequence[Message]) -> tuple[list[object], bool]:
    """The input items, and whether any carries reasoning to send back (encrypted)."""
    items: list[object] = []
    encrypted = False
    for m in messages:
        pending: list[rt.InputContent] = []

        for part in m.parts:
            if isinstance(part, ToolResult):
                _flush(items, m, pending)
                if part.kind == "custom":
                    items.append(rt.CustomToolCallOutput(call_id=part.call_id,
                                                         output=_output_of(part)))
                else:
                    items.append(rt.FunctionCallOutput(call_id=part.call_id,
                                                       output=_output_of(part)))
            elif isinstance(part, ToolCall):
                _flush(items, m, pending)
                if part.kind == "custom":
                    items.append(rt.CustomToolCall(
                        call_id=part.id, name=part.name, input=part.arguments,
                        id=part.item_id if part.item_id else UNSET))
                else:
                    items.append(rt.FunctionToolCall(
                        call_id=part.id, name=part.name, arguments=part.arguments,
                        id=part.item_id if part.item_id else UNSET))
            elif isinstance(part, Reasoning):
                # Only the Responses API's own reasoning goes back, and (store: false) only
                # with its encrypted content: a bare id would be looked up and not found.
                if part.source == "responses" and part.encrypted_content and part.item_id:
                    _flush(items, m, pending)
                    encrypted = True
                    items.append(_reasoning_item(part))
            elif isinstance(part, Opaque):
                value = part.value
                if (isinstance(value, dict) and value.get("type") in _SENDABLE_ITEMS
                        and part.kind == value.get("type")):
                    _flush(items, m, pending)
                    items.append(value)
                else:
                    raise _refuse(f"'{part.kind}'", part.path)
            elif m.role == "assistant":
                # As the easy form, text only: an output message item would need an id, and
                # with store: false a made-up id is looked up and not found. A refusal goes
                # back as what the model said.
                if isinstance(part, (Text, Refusal)):
                    items.append(rt.InputMessage(role="assistant", content=part.text))
                else:
                    raise _refuse("An image or file in an assistant message", None)
            else:
                content = _input_part(part)
                if content is None:
                    raise _refuse(f"A {type(part).__name__} part in a {m.role} message", None)
                pending.append(content)
        _flush(items, m, pending)
    return items, encrypted


def _flush(items: list[object], m: Message, pending: list[rt.InputContent]) -> None:
    """The message content gathered so far as one message item (in order with the items
    that interrupted it)."""
    if pending:
        role = "user" if m.role == "tool" else m.role
        items.append(rt.InputMessage(role=role, content=list(pending)))
        pending.clear()


def _tool_out(tool: ToolSpec, options: EncodeOptions, dropped: list[str]) -> object | None:
    if isinstance(tool, FunctionTool):
        return rt.FunctionTool(
            name=tool.name, description=tool.description,
            parameters=tool.parameters if tool.parameters is not None else {
                "type": "object", "properties": {}},
            # Unset means not strict: what a Chat Completions client gets by default.
            strict=bool(tool.strict))
    value = tool.value if isinstance(tool.value, dict) else {}
    kind = value.get("type")
    if kind == "custom" and isinstance(value.get("custom"), dict):
        return {"type": "custom", **value["custom"]}  # Chat Completions' custom tool shape
    if kind in _RESPONSES_TOOLS:
        return value
    if options.hosted_tools == "reject":
        raise _refuse(f"The tool '{tool.kind.removeprefix('tool:')}'", tool.path)
    dropped.append(str(kind) if isinstance(kind, str) else tool.kind.removeprefix("tool:"))
    return None


def _tool_choice_out(choice: ToolChoice | None, tools: Sequence[ToolSpec]) -> object | None:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, NamedToolChoice):
        custom = any(isinstance(t, Opaque) and t.kind == "tool:custom"
                     and isinstance(t.value, dict) and _custom_name(t.value) == choice.name
                     for t in tools)
        return {"type": "custom" if custom else "function", "name": choice.name}
    value = choice.value if isinstance(choice.value, dict) else {}
    if isinstance(value.get("allowed_tools"), dict):
        # Chat Completions' shape: {"type": "allowed_tools", "allowed_tools": {mode, tools}}
        inner = value["allowed_tools"]
        refs = [{"type": "function", "name": t["function"]["name"]}
                if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
                for t in inner.get("tools", [])]
        return {"type": "allowed_tools", "mode": inner.get("mode", "auto"), "tools": refs}
    if choice.kind.startswith("tool_choice:") and isinstance(value.get("type"), str):
        return value
    raise _refuse(f"The tool choice '{choice.kind}'", choice.path)


def _custom_name(value: dict[str, object]) -> object:
    inner = value.get("custom")
    return inner.get("name") if isinstance(inner, dict) else value.get("name")


def _format_out(fmt: OutputFormat) -> rt.TextFormat:
    if fmt == "text":
        return rt.FormatText()
    if fmt == "json_object":
        return rt.FormatJSONObject()
    assert isinstance(fmt, JSONSchemaFormat)
    return rt.FormatJSONSchema(
        name=fmt.name, schema=fmt.schema if fmt.schema is not None else {},
        description=fmt.description if fmt.description is not None else UNSET,
        strict=fmt.strict if fmt.strict is not None else UNSET)


def _reasoning_out(r: ReasoningConfig) -> dict[str, object] | None:
    effort = r.effort
    if effort is None and r.enabled and r.budget_tokens is not None:
        # An explicit thinking budget (Anthropic's) in OpenAI's effort levels.
        b = r.budget_tokens
        effort = "low" if b <= 4096 else "medium" if b <= 16384 else "high"
    out: dict[str, object] = {}
    if effort is not None:
        out["effort"] = effort
    if r.summary is not None:
        out["summary"] = r.summary
    return out or None


def encode_request(conversation: Conversation, *, model: str, stream: bool,
                   options: EncodeOptions) -> Outbound:
    """A Responses API request (``store: false``: the gateway keeps the conversation)."""
    c = conversation
    input_items, encrypted = _input_items(c.messages)
    body: dict[str, object] = {"model": model, "input": input_items, "store": False}
    dropped: list[str] = []
    tools = [t for t in (_tool_out(t, options, dropped) for t in c.tools) if t is not None]
    if tools:
        body["tools"] = tools
        choice = _tool_choice_out(c.tool_choice, c.tools)
        if choice is not None:
            body["tool_choice"] = choice
        if c.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = c.parallel_tool_calls
    elif c.tool_choice == "none" or c.tool_choice == "auto":
        body["tool_choice"] = c.tool_choice
    if c.output_format is not None:
        body["text"] = rt.TextConfig(format=_format_out(c.output_format))
    include: list[str] = []
    if c.reasoning is not None:
        reasoning = _reasoning_out(c.reasoning)
        if reasoning is not None:
            body["reasoning"] = reasoning
            encrypted = True
    if encrypted:
        include.append("reasoning.encrypted_content")
    if c.logprobs:
        include.append(_LOGPROBS_INCLUDE)
    if include:
        body["include"] = include
    fields = {"max_output_tokens": c.max_output_tokens, "temperature": c.temperature,
              "top_p": c.top_p, "top_logprobs": c.top_logprobs, "user": c.user,
              "metadata": c.metadata, "service_tier": c.service_tier}
    body.update({k: v for k, v in fields.items() if v is not None})
    if stream:
        body["stream"] = True
    # What the Responses API has no field for; changing the answer, so refused unless the
    # alias drops it (drop_params). A seed is best effort anyway and goes silently.
    missing = {"stop": c.stop or None, "n": c.n if c.n is not None and c.n > 1 else None,
               "logit_bias": c.logit_bias or None, "top_k": c.top_k,
               "presence_penalty": c.presence_penalty or None,
               "frequency_penalty": c.frequency_penalty or None}
    dropped_params: list[str] = []
    for name, value in missing.items():
        if value is None:
            continue
        if name not in options.drop_params:
            raise _refuse(f"'{name}'", name)
        dropped_params.append(name)
    for name in options.drop_params:
        if name in body and name not in ("model", "input"):
            del body[name]
            dropped_params.append(name)
    for opaque in c.unsupported:
        # Stored state of the Responses API itself goes to a Responses upstream as it came.
        if opaque.kind in ("conversation", "prompt") and opaque.path == opaque.kind:
            body[opaque.kind] = opaque.value
        else:
            raise _refuse(f"'{opaque.path}'", opaque.path)
    return Outbound(body=_encode(body), dropped_tools=dropped, dropped_params=dropped_params)


# --- upstream: Response -> Result, SSE -> hub events -------------------------------------


def _usage_in(usage: rt.ResponseUsage | None) -> Usage | None:
    if usage is None:
        return None
    write = usage.input_tokens_details.cache_write_tokens
    return Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                 cached_input_tokens=usage.input_tokens_details.cached_tokens,
                 cache_write_input_tokens=write or None,
                 reasoning_tokens=usage.output_tokens_details.reasoning_tokens)


def _finish_of(status: str | None, incomplete: rt.IncompleteDetails | None,
               calls: bool) -> FinishReason:
    if status == "incomplete":
        return "content_filter" if incomplete and incomplete.reason == "content_filter" else (
            "length")
    return "tool_calls" if calls else "stop"


def _failed(error: rt.ResponseError | None, provider: str) -> UpstreamError:
    message = redact(error.message) if error and error.message else (
        f"Provider {provider} failed the response.")
    return UpstreamError(message, code=(error.code if error and error.code else None))


def _parts_of(output: Sequence[dict[str, object]]) -> list[Part]:
    parts: list[Part] = []
    for i, item in enumerate(output):
        kind = item.get("type")
        if kind == "message":
            message = msgspec.convert(item, rt.InputMessage)
            content = message.content
            if isinstance(content, str):
                parts.append(Text(text=content))
                continue
            for p in content:
                if isinstance(p, (rt.OutputText, rt.InputText)):
                    parts.append(Text(text=p.text))
                elif isinstance(p, rt.OutputRefusal):
                    parts.append(Refusal(text=p.refusal))
        elif kind == "function_call":
            call = msgspec.convert(item, rt.FunctionToolCall)
            parts.append(ToolCall(id=call.call_id, name=call.name, arguments=call.arguments,
                                  item_id=call.id or None))
        elif kind == "custom_tool_call":
            custom = msgspec.convert(item, rt.CustomToolCall)
            parts.append(ToolCall(id=custom.call_id, name=custom.name, arguments=custom.input,
                                  kind="custom", item_id=custom.id or None))
        elif kind == "reasoning":
            r = msgspec.convert(item, rt.ReasoningItem)
            parts.append(Reasoning(
                text="".join(c.text for c in r.content) if r.content else "",
                summary=[s.text for s in r.summary],
                encrypted_content=r.encrypted_content or None, item_id=r.id or None,
                source="responses"))
        elif isinstance(kind, str):
            parts.append(Opaque(kind=kind, path=f"output[{i}]", value=item))
    return parts


def decode_result(body: bytes, outbound: Outbound) -> Result:
    response = _response_decoder.decode(body)
    if response.status == "failed":
        raise _failed(response.error, "upstream")
    parts = _parts_of(response.output)
    calls = any(isinstance(p, ToolCall) for p in parts)
    return Result(id=response.id, model=response.model, parts=parts,
                  finish=_finish_of(response.status, response.incomplete_details, calls),
                  usage=_usage_in(response.usage), created=int(response.created_at))


class _Call(msgspec.Struct):
    index: int  # the hub's tool call index
    streamed: bool = False


class ResponsesStreamDecoder:
    """A Responses API stream as hub events. response.completed / response.incomplete end
    it; response.failed and ``error`` events raise."""

    def __init__(self, outbound: Outbound) -> None:
        self._done = False
        self._started = False
        self._calls: dict[int, _Call] = {}  # output_index -> call
        self._ncalls = 0
        self._streamed: set[tuple[int, str]] = set()  # (output_index, what) seen as deltas
        self._summaries: dict[int, int] = {}  # output_index -> summary parts begun

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: bytes, data: bytes) -> list[Event]:
        if self._done or data == b"[DONE]":
            return []
        try:
            name = event.decode() if event else _type_decoder.decode(data).type
            out: list[Event] = []
            if not self._started and name not in ("error", "response.failed"):
                self._started = True
                if name in ("response.created", "response.in_progress", "response.queued"):
                    r = _lifecycle_decoder.decode(data).response
                    return [Start(id=r.id, model=r.model, created=int(r.created_at))]
                out.append(Start(id=_new_id("resp_"), model=""))
            return out + self._event(name, data)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            raise UpstreamError(f"The upstream sent a Responses stream event that cannot be "
                                f"read: {exc}", code="bad_upstream_response") from None

    def _event(self, name: str, data: bytes) -> list[Event]:
        if name == "response.output_text.delta":
            d = _delta_decoder.decode(data)
            self._streamed.add((d.output_index, "text"))
            return [TextDelta(text=d.delta)] if d.delta else []
        if name == "response.refusal.delta":
            d = _delta_decoder.decode(data)
            self._streamed.add((d.output_index, "text"))
            return [RefusalDelta(text=d.delta)] if d.delta else []
        if name in ("response.function_call_arguments.delta",
                    "response.custom_tool_call_input.delta"):
            d = _delta_decoder.decode(data)
            call = self._calls.get(d.output_index)
            if call is None or not d.delta:
                return []
            call.streamed = True
            return [ToolCallDelta(index=call.index, arguments=d.delta)]
        if name == "response.reasoning_summary_part.added":
            d = _delta_decoder.decode(data)
            begun = self._summaries.get(d.output_index, 0)
            self._summaries[d.output_index] = begun + 1
            # Parts of one summary stay apart in the hub's single run of text.
            return [ReasoningDelta(text="\n\n", summary=True)] if begun else []
        if name == "response.reasoning_summary_text.delta":
            d = _delta_decoder.decode(data)
            self._streamed.add((d.output_index, "summary"))
            return [ReasoningDelta(text=d.delta, summary=True)] if d.delta else []
        if name == "response.reasoning_text.delta":
            d = _delta_decoder.decode(data)
            self._streamed.add((d.output_index, "reasoning"))
            return [ReasoningDelta(text=d.delta)] if d.delta else []
        if name == "response.output_item.added":
            return self._item_added(_item_event_decoder.decode(data))
        if name == "response.output_item.done":
            return self._item_done(_item_event_decoder.decode(data))
        if name in ("response.completed", "response.incomplete"):
            self._done = True
            r = _lifecycle_decoder.decode(data).response
            out: list[Event] = []
            usage = _usage_in(r.usage)
            if usage is not None:
                out.append(UsageUpdate(usage=usage))
            status = "incomplete" if name == "response.incomplete" else r.status
            out.append(Finish(reason=_finish_of(status, r.incomplete_details,
                                                self._ncalls > 0)))
            return out
        if name == "response.failed":
            self._done = True
            raise _failed(_lifecycle_decoder.decode(data).response.error, "upstream")
        if name == "error":
            self._done = True
            raise _error_event(data)
        return []

    def _item_added(self, ev: rt.ItemEventIn) -> list[Event]:
        kind = ev.item.get("type")
        if kind not in ("function_call", "custom_tool_call"):
            return []
        return [self._call_start(ev)]

    def _call_start(self, ev: rt.ItemEventIn) -> ToolCallStart:
        item = ev.item
        call = _Call(index=self._ncalls)
        self._ncalls += 1
        self._calls[ev.output_index] = call
        item_id = item.get("id")
        return ToolCallStart(index=call.index, id=str(item["call_id"]), name=str(item["name"]),
                             kind="custom" if item.get("type") == "custom_tool_call"
                             else "function",
                             item_id=item_id if isinstance(item_id, str) else None)

    def _item_done(self, ev: rt.ItemEventIn) -> list[Event]:
        # Servers that send whole items without deltas still come through complete.
        kind = ev.item.get("type")
        index = ev.output_index
        out: list[Event] = []
        if kind in ("function_call", "custom_tool_call"):
            if index not in self._calls:
                out.append(self._call_start(ev))
            call = self._calls.pop(index)
            value = ev.item.get("arguments" if kind == "function_call" else "input")
            if not call.streamed and isinstance(value, str) and value:
                out.append(ToolCallDelta(index=call.index, arguments=value))
            out.append(ToolCallEnd(index=call.index))
        elif kind == "reasoning":
            r = msgspec.convert(ev.item, rt.ReasoningItem)
            if (index, "summary") not in self._streamed and r.summary:
                text = "\n\n".join(s.text for s in r.summary)
                out.append(ReasoningDelta(text=text, summary=True))
            if (index, "reasoning") not in self._streamed and r.content:
                out.append(ReasoningDelta(text="".join(c.text for c in r.content)))
            out.append(ReasoningEnd(encrypted_content=r.encrypted_content or None,
                                    item_id=r.id or None, source="responses"))
        elif kind == "message" and (index, "text") not in self._streamed:
            for part in _parts_of([ev.item]):
                if isinstance(part, Text) and part.text:
                    out.append(TextDelta(text=part.text))
                elif isinstance(part, Refusal):
                    out.append(RefusalDelta(text=part.text))
        return out


def _error_event(data: bytes) -> GatewayError:
    try:
        e = _error_event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        e = rt.ErrorEventIn()
    err = UpstreamError(redact(e.message) or "The upstream stream reported an error.",
                        param=e.param, code=None if e.code is None else str(e.code))
    return err


def error_from(status: int, body: bytes, provider: str) -> GatewayError:
    """The upstream's OpenAI-shaped error, kept as it was sent (message, type, code): the
    same reading as the Chat dialect's, which also knows vLLM's and Ollama's error bodies."""
    return error_from_openai(status, body, provider)


# --- native passthrough ------------------------------------------------------------------


def native_body(raw: dict[str, object], *, model: str, stream: bool) -> bytes:
    """The client's body as it came, with the upstream model (and ``stream`` when asked)."""
    body = dict(raw)
    body["model"] = model
    if stream or "stream" in body:
        body["stream"] = stream
    return _encode(body)


def native_usage(body: bytes) -> Usage | None:
    return _usage_in(_usage_decoder.decode(body).usage)


_FINAL = (b"response.completed", b"response.incomplete")


class ResponsesNativeRelay:
    """Forwards each upstream event unchanged, reading usage from the final event only."""

    def __init__(self) -> None:
        self._done = False
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def relay(self, event: bytes, data: bytes) -> bytes | None:
        name = event or _event_name(data)
        if name in _FINAL:
            self._done = True
            # Forwarded all the same if unreadable; the reservation settles on the estimate.
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                self._usage = _usage_in(_lifecycle_usage_decoder.decode(data).response.usage)
        elif name == b"response.failed" or data == b"[DONE]":
            self._done = True
        elif name == b"error":
            self._done = True
            raise _error_event(data)
        if event:
            return b"event: " + event + b"\ndata: " + data + b"\n\n"
        return b"data: " + data + b"\n\n"


def _event_name(data: bytes) -> bytes:
    try:
        return _type_decoder.decode(data).type.encode()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return b""


def output_items_of(body: bytes) -> list[dict[str, object]]:
    """The output items of a Response body (or of a lifecycle event's ``response``), as
    they will be sent back as input with ``previous_response_id``."""
    decoded = _output_decoder.decode(body)
    if decoded.response is not None:
        return decoded.response.output
    return decoded.output


def input_items_of(raw: Mapping[str, object]) -> list[dict[str, object]]:
    """The request's ``input`` as a list of item objects: a string becomes one user
    message, an item without ``type`` gets the one it stands for."""
    value = raw.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest("Invalid request: 'input' must be a string or a list of items.",
                             param="input")
    items: list[dict[str, object]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid request: expected an object at 'input[{i}]'",
                                 param=f"input[{i}]")
        if "type" not in item:
            if "role" in item:
                item = {"type": "message", **item}
            elif "id" in item:
                item = {"type": "item_reference", **item}
        items.append(item)
    return items


# --- the dialect ---------------------------------------------------------------------------


class ResponsesDialect:
    """The Responses API on both sides of the hub, and natively."""

    @property
    def name(self) -> DialectName:
        return "responses"

    def to_conversation(self, typed: object) -> Conversation:
        return to_conversation(typed)

    def encode_result(self, result: Result, request: LLMRequest) -> bytes:
        return encode_result(result, request)

    def stream_encoder(self, request: LLMRequest) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(request)

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_json()

    def encode_request(self, conversation: Conversation, *, model: str, stream: bool,
                       options: EncodeOptions) -> Outbound:
        return encode_request(conversation, model=model, stream=stream, options=options)

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        return decode_result(body, outbound)

    def stream_decoder(self, outbound: Outbound) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder(outbound)

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        return error_from(status, body, provider)

    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes:
        return native_body(raw, model=model, stream=stream)

    def native_usage(self, body: bytes) -> Usage | None:
        return native_usage(body)

    def native_relay(self, request: LLMRequest) -> ResponsesNativeRelay:
        return ResponsesNativeRelay()


RESPONSES = ResponsesDialect()
