"""The Chat Completions dialect (https://platform.openai.com/docs/api-reference/chat): the
front door of /v1/chat/completions, the upstream language of OpenAI-kind providers, and the
native passthrough between the two. Pure: Structs and bytes in, Structs and bytes out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core import openai_types as oa
from gateway_core.errors import GatewayError, InvalidRequest
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

if TYPE_CHECKING:
    from gateway_llm.hub import Dialect

__all__ = [
    "CHAT",
    "ChatDialect",
    "ChatRelay",
    "ChatStreamDecoder",
    "ChatStreamEncoder",
    "error_from_openai",
    "hub_usage",
    "openai_usage",
    "to_conversation",
]

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
# strict=False: integral floats in integer fields, as compatible servers sometimes send.
_completion_decoder = msgspec.json.Decoder(oa.ChatCompletionIn, strict=False)
_chunk_decoder = msgspec.json.Decoder(oa.ChunkIn, strict=False)
_usage_decoder = msgspec.json.Decoder(oa.UsageOnly, strict=False)
_error_decoder = msgspec.json.Decoder(oa.ErrorIn, strict=False)


class _UsageChunk(msgspec.Struct):
    """What the native relay reads of a chunk that carries usage: the counts, and whether
    it is the usage-only chunk (``choices: []``) that ends a stream."""

    usage: oa.UsageIn | None = None
    choices: list[msgspec.Raw] = []


_usage_chunk_decoder = msgspec.json.Decoder(_UsageChunk, strict=False)

_DONE = b"data: [DONE]\n\n"


def _set(value: T | UnsetType | None) -> T | None:
    """A request field's value, with UNSET (not sent) and null read alike as None."""
    return None if isinstance(value, UnsetType) else value


def _opt(value: T | None) -> T | UnsetType:
    return UNSET if value is None else value


def _is_error(data: bytes) -> bool:
    # OpenAI's {"error": {...}} and vLLM's flat {"object": "error", ...}; a chunk starts
    # with {"id" (only the first bytes are looked at: this runs for every event).
    head = data[:24].replace(b" ", b"")
    return head.startswith((b'{"error"', b'{"object":"error"'))


# --- usage -----------------------------------------------------------------------------


def hub_usage(usage: oa.UsageIn) -> Usage:
    """OpenAI's counts as the hub's: prompt_tokens already includes cached tokens."""
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    cached = prompt.cached_tokens if prompt is not None else None
    if cached is None:
        cached = usage.prompt_cache_hit_tokens
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=cached,
        cache_write_input_tokens=prompt.cache_write_tokens if prompt is not None else None,
        reasoning_tokens=completion.reasoning_tokens if completion is not None else None,
    )


def openai_usage(usage: Usage) -> oa.Usage:
    return oa.Usage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        prompt_tokens_details=oa.PromptTokensDetails(
            cached_tokens=usage.cached_input_tokens or 0,
            cache_write_tokens=usage.cache_write_input_tokens,
        ),
        completion_tokens_details=oa.CompletionTokensDetails(
            reasoning_tokens=usage.reasoning_tokens or 0
        ),
    )


# --- front door: request -> Conversation -------------------------------------------------


def _split_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` as (media type, data); None for anything else
    (other URLs, or data URLs with more parameters, which are kept as URLs)."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not media_type:
        return None
    return media_type, data


def _image(part: oa.ImagePart) -> Image:
    url = part.image_url.url
    detail = _set(part.image_url.detail)
    split = _split_data_url(url)
    if split is not None:
        return Image(data=split[1], media_type=split[0], detail=detail)
    return Image(url=url, detail=detail)


def _file(part: oa.FilePart) -> File:
    ref = part.file
    data = _set(ref.file_data)
    media_type: str | None = None
    if data is not None:
        split = _split_data_url(data)
        if split is not None:
            media_type, data = split
    return File(data=data, media_type=media_type, file_id=_set(ref.file_id),
                filename=_set(ref.filename))


def _text_parts(content: oa.Content, path: str) -> list[Part]:
    """System and developer messages: text only."""
    if isinstance(content, str):
        return [Text(text=content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        if not isinstance(part, oa.TextPart):
            raise InvalidRequest("System and developer messages may only contain text parts.",
                                 param=f"{path}[{j}]")
        parts.append(Text(text=part.text))
    return parts


def _user_parts(content: oa.Content, path: str) -> list[Part]:
    if isinstance(content, str):
        return [Text(text=content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, oa.TextPart):
            parts.append(Text(text=part.text))
        elif isinstance(part, oa.ImagePart):
            parts.append(_image(part))
        elif isinstance(part, oa.FilePart):
            parts.append(_file(part))
        elif isinstance(part, oa.AudioPart):
            parts.append(Opaque(kind="input_audio", path=f"{path}[{j}]",
                                value=msgspec.to_builtins(part)))
        elif isinstance(part, oa.UnknownPart):
            parts.append(Opaque(kind=part.part_type, path=f"{path}[{j}]", value=part.value))
        else:
            raise InvalidRequest("Refusal parts are only valid in assistant messages.",
                                 param=f"{path}[{j}]")
    return parts


def _tool_result_content(content: oa.Content, path: str) -> list[Text | Image | File]:
    if isinstance(content, str):
        return [Text(text=content)]
    out: list[Text | Image | File] = []
    for j, part in enumerate(content):
        if isinstance(part, oa.TextPart):
            out.append(Text(text=part.text))
        elif isinstance(part, oa.ImagePart):
            out.append(_image(part))
        elif isinstance(part, oa.FilePart):
            out.append(_file(part))
        else:
            raise InvalidRequest("Tool messages may only contain text, image and file parts.",
                                 param=f"{path}[{j}]")
    return out


def _assistant_parts(m: oa.AssistantMessage, i: int, kinds: dict[str, str]) -> list[Part]:
    path = f"messages[{i}]"
    parts: list[Part] = []
    reasoning = _set(m.reasoning_content)
    if reasoning:
        parts.append(Reasoning(text=reasoning, source="chat"))
    content = m.content
    if isinstance(content, str):
        if content or not m.tool_calls:
            parts.append(Text(text=content))
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, oa.TextPart):
                parts.append(Text(text=part.text))
            elif isinstance(part, oa.RefusalPart):
                parts.append(Refusal(text=part.refusal))
            elif isinstance(part, oa.UnknownPart):
                parts.append(Opaque(kind=part.part_type, path=f"{path}.content[{j}]",
                                    value=part.value))
            else:
                raise InvalidRequest("Assistant messages may only contain text and refusal "
                                     "parts.", param=f"{path}.content[{j}]")
    refusal = _set(m.refusal)
    if refusal:
        parts.append(Refusal(text=refusal))
    audio = _set(m.audio)
    if audio is not None:
        parts.append(Opaque(kind="assistant_audio", path=f"{path}.audio",
                            value={"id": audio.id}))
    call = _set(m.function_call)
    if call is not None:
        parts.append(Opaque(kind="function_call", path=f"{path}.function_call",
                            value={"name": call.name, "arguments": call.arguments}))
    for j, tc in enumerate(_set(m.tool_calls) or ()):
        where = f"{path}.tool_calls[{j}]"
        if tc.type == "function":
            if isinstance(tc.function, UnsetType):
                raise InvalidRequest("A function tool call needs 'function'.",
                                     param=f"{where}.function")
            parts.append(ToolCall(id=tc.id, name=tc.function.name,
                                  arguments=tc.function.arguments))
            kinds[tc.id] = "function"
        elif tc.type == "custom":
            if isinstance(tc.custom, UnsetType):
                raise InvalidRequest("A custom tool call needs 'custom'.",
                                     param=f"{where}.custom")
            parts.append(ToolCall(id=tc.id, name=tc.custom.name, arguments=tc.custom.input,
                                  kind="custom"))
            kinds[tc.id] = "custom"
        else:
            parts.append(Opaque(kind=f"tool_call:{tc.type}", path=where))
    return parts


def _message(m: oa.Message, i: int, kinds: dict[str, str]) -> Message:
    path = f"messages[{i}].content"
    if isinstance(m, oa.UserMessage):
        return Message(role="user", parts=_user_parts(m.content, path), name=_set(m.name))
    if isinstance(m, oa.AssistantMessage):
        return Message(role="assistant", parts=_assistant_parts(m, i, kinds),
                       name=_set(m.name))
    if isinstance(m, oa.ToolMessage):
        kind: Literal["function", "custom"] = (
            "custom" if kinds.get(m.tool_call_id) == "custom" else "function")
        result = ToolResult(call_id=m.tool_call_id, kind=kind,
                            content=_tool_result_content(m.content, path))
        return Message(role="tool", parts=[result])
    if isinstance(m, oa.SystemMessage):
        return Message(role="system", parts=_text_parts(m.content, path), name=_set(m.name))
    if isinstance(m, oa.DeveloperMessage):
        return Message(role="developer", parts=_text_parts(m.content, path),
                       name=_set(m.name))
    # The deprecated role "function": its result, kept for a Chat upstream only.
    return Message(role="tool", parts=[Opaque(
        kind="function_message", path=f"messages[{i}]",
        value={"role": "function", "name": m.name, "content": m.content})])


def _tools(req: oa.ChatCompletionRequest) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for j, t in enumerate(_set(req.tools) or ()):
        if t.type == "function":
            f = t.function
            if isinstance(f, UnsetType):
                raise InvalidRequest("A function tool needs 'function'.",
                                     param=f"tools[{j}].function")
            tools.append(FunctionTool(name=f.name, description=_set(f.description),
                                      parameters=_set(f.parameters), strict=_set(f.strict)))
        elif t.type == "custom":
            if isinstance(t.custom, UnsetType):
                raise InvalidRequest("A custom tool needs 'custom'.", param=f"tools[{j}].custom")
            tools.append(Opaque(kind="tool:custom", path=f"tools[{j}]",
                                value=msgspec.to_builtins(t)))
        else:
            tools.append(Opaque(kind=f"tool:{t.type}", path=f"tools[{j}]",
                                value={"type": t.type}))
    search = _set(req.web_search_options)
    if search is not None:
        # The Chat API's hosted web search, as the hosted tool it is (in the Responses
        # API's web_search tool shape, which other dialects read).
        value: dict[str, object] = {"type": "web_search"}
        if not isinstance(search.search_context_size, UnsetType):
            value["search_context_size"] = search.search_context_size
        location = _set(search.user_location)
        if location is not None:
            value["user_location"] = {"type": location.type,
                                      **msgspec.to_builtins(location.approximate)}
        tools.append(Opaque(kind="tool:web_search", path="web_search_options", value=value))
    return tools


def _tool_choice(req: oa.ChatCompletionRequest) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, UnsetType):
        return None
    if not isinstance(choice, oa.NamedToolChoice):
        return choice  # "none" / "auto" / "required"
    if choice.type == "function":
        if isinstance(choice.function, UnsetType):
            raise InvalidRequest("A function tool_choice needs 'function'.",
                                 param="tool_choice.function")
        return NamedToolChoice(name=choice.function.name)
    # custom and allowed_tools: only a dialect that knows them can keep them.
    return Opaque(kind=f"tool_choice:{choice.type}", path="tool_choice",
                  value=msgspec.to_builtins(choice))


def _output_format(req: oa.ChatCompletionRequest) -> OutputFormat | None:
    fmt = req.response_format
    if fmt is None or isinstance(fmt, UnsetType):
        return None
    if isinstance(fmt, oa.TextFormat):
        return "text"
    if isinstance(fmt, oa.JSONObjectFormat):
        return "json_object"
    spec = fmt.json_schema
    return JSONSchemaFormat(name=spec.name, schema=_set(spec.schema),
                            description=_set(spec.description), strict=_set(spec.strict))


# Request fields no other dialect has that change the answer: carried for a Chat upstream,
# refused by the others. Kind "param:<field>", path the field.
_PARAM_FIELDS = ("audio", "prediction", "functions", "function_call")


def _unsupported(req: oa.ChatCompletionRequest) -> list[Opaque]:
    out: list[Opaque] = []
    modalities = _set(req.modalities)
    if modalities is not None and "audio" in modalities:
        out.append(Opaque(kind="param:modalities", path="modalities", value=list(modalities)))
    for name in _PARAM_FIELDS:
        value = _set(getattr(req, name))
        if value is not None:
            out.append(Opaque(kind=f"param:{name}", path=name,
                              value=msgspec.to_builtins(value)))
    if req.logprobs is True:
        out.append(Opaque(kind="param:logprobs", path="logprobs", value=True))
    top = _set(req.top_logprobs)
    if top is not None:
        out.append(Opaque(kind="param:top_logprobs", path="top_logprobs", value=top))
    return out


def to_conversation(req: oa.ChatCompletionRequest) -> Conversation:
    """A Chat Completions request as the hub's Conversation; InvalidRequest naming the
    field for what no dialect could read."""
    kinds: dict[str, str] = {}  # tool call id -> kind, so tool results know theirs
    messages = [_message(m, i, kinds) for i, m in enumerate(req.messages)]
    stop = _set(req.stop)
    effort = _set(req.reasoning_effort)
    max_out = _set(req.max_completion_tokens)
    return Conversation(
        messages=messages,
        tools=_tools(req),
        tool_choice=_tool_choice(req),
        parallel_tool_calls=_set(req.parallel_tool_calls),
        output_format=_output_format(req),
        max_output_tokens=max_out if max_out is not None else _set(req.max_tokens),
        temperature=_set(req.temperature),
        top_p=_set(req.top_p),
        stop=[stop] if isinstance(stop, str) else list(stop or ()),
        seed=_set(req.seed),
        n=_set(req.n),
        presence_penalty=_set(req.presence_penalty),
        frequency_penalty=_set(req.frequency_penalty),
        logprobs=_set(req.logprobs),
        top_logprobs=_set(req.top_logprobs),
        logit_bias=_set(req.logit_bias),
        reasoning=(ReasoningConfig(effort=effort, enabled=effort != "none")
                   if effort is not None else None),
        user=_set(req.user),
        metadata=_set(req.metadata),
        service_tier=_set(req.service_tier),
        stream=req.stream is True,
        unsupported=_unsupported(req),
    )


# --- front door: Result / events -> chat.completion / chunks ------------------------------

_FINISH_OUT: dict[FinishReason, oa.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    # A refusal that stopped the answer (Anthropic's stop_reason "refusal"): OpenAI's own
    # refusals end with "stop" and message.refusal, but a stop by a safety system is its
    # content_filter.
    "refusal": "content_filter",
}


def _chat_id(upstream_id: str) -> str:
    # Another dialect's id is kept inside ours so the request can be found upstream.
    if upstream_id.startswith("chatcmpl"):
        return upstream_id
    return f"chatcmpl-{upstream_id or 'unknown'}"


def _created(*candidates: int) -> int:
    for c in candidates:
        if c:
            return c
    return int(time.time())


def _response_tool_call(part: ToolCall) -> oa.ToolCall:
    if part.kind == "custom":
        return oa.ToolCall(id=part.id, type="custom",
                           custom=oa.CustomCall(name=part.name, input=part.arguments))
    return oa.ToolCall(id=part.id, function=oa.FunctionCall(name=part.name,
                                                             arguments=part.arguments))


def encode_result(result: Result, request: LLMRequest) -> bytes:
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[oa.ToolCall] = []
    for part in result.parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            calls.append(_response_tool_call(part))
        elif isinstance(part, Reasoning):
            text = part.text or "\n\n".join(part.summary)
            if text:
                reasoning.append(text)
        elif isinstance(part, Refusal):
            refusals.append(part.text)
    content: str | None = "".join(texts) if texts else (None if calls or refusals else "")
    message = oa.ResponseMessage(
        content=content,
        refusal="".join(refusals) if refusals else None,
        tool_calls=calls or None,
        reasoning_content="\n\n".join(reasoning) if reasoning else UNSET,
    )
    completion = oa.ChatCompletion(
        id=_chat_id(result.id),
        created=_created(result.created, request.created),
        model=result.model or request.model,
        choices=[oa.Choice(index=0, message=message, finish_reason=_FINISH_OUT[result.finish])],
        usage=openai_usage(result.usage) if result.usage is not None else None,
    )
    return _encode(completion)


class ChatStreamEncoder:
    """Hub events as ``data: {chat.completion.chunk}`` blocks: the role chunk first, then
    content, refusal, ``reasoning_content`` and tool-call deltas, the finish chunk; on close
    the usage chunk (``choices: []``) when the client asked for it, then ``[DONE]``."""

    def __init__(self, request: LLMRequest) -> None:
        self._include_usage = request.include_usage
        self._model = request.model
        self._created = request.created
        self._id = "chatcmpl-unknown"
        self._started = False
        self._finished = False
        self._usage: Usage | None = None
        # hub tool call index -> (chat index, kind)
        self._calls: dict[int, tuple[int, str]] = {}

    def _chunk(self, delta: oa.Delta, finish: oa.FinishReason | None = None) -> bytes:
        chunk = oa.ChatCompletionChunk(
            id=self._id, created=self._created, model=self._model,
            choices=[oa.ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        )
        return b"data: " + _encode(chunk) + b"\n\n"

    def _start(self, event: Start | None = None) -> list[bytes]:
        self._started = True
        if event is not None:
            self._id = _chat_id(event.id)
            self._model = event.model or self._model
            if event.usage is not None:
                self._usage = event.usage
            self._created = _created(event.created, self._created)
        else:
            self._created = _created(self._created)
        return [self._chunk(oa.Delta(role="assistant", content=""))]

    def feed(self, event: Event) -> list[bytes]:
        out = [] if self._started or isinstance(event, Start) else self._start()
        if isinstance(event, TextDelta):
            out.append(self._chunk(oa.Delta(content=event.text)))
        elif isinstance(event, ToolCallDelta):
            index, kind = self._calls.get(event.index, (event.index, "function"))
            if kind == "custom":
                call = oa.ToolCallDelta(index=index,
                                        custom=oa.CustomCallDelta(input=event.arguments))
            else:
                call = oa.ToolCallDelta(index=index,
                                        function=oa.FunctionCallDelta(arguments=event.arguments))
            out.append(self._chunk(oa.Delta(tool_calls=[call])))
        elif isinstance(event, ReasoningDelta):
            out.append(self._chunk(oa.Delta(reasoning_content=event.text)))
        elif isinstance(event, ToolCallStart):
            index = len(self._calls)
            self._calls[event.index] = (index, event.kind)
            # OpenAI's first delta of a call carries index, id, type and the name.
            if event.kind == "custom":
                call = oa.ToolCallDelta(index=index, id=event.id, type="custom",
                                        custom=oa.CustomCallDelta(name=event.name, input=""))
            else:
                call = oa.ToolCallDelta(index=index, id=event.id, type="function",
                                        function=oa.FunctionCallDelta(name=event.name,
                                                                      arguments=""))
            out.append(self._chunk(oa.Delta(tool_calls=[call])))
        elif isinstance(event, RefusalDelta):
            out.append(self._chunk(oa.Delta(refusal=event.text)))
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, Finish):
            if not self._finished:
                self._finished = True
                out.append(self._chunk(oa.Delta(), _FINISH_OUT[event.reason]))
        elif isinstance(event, Start) and not self._started:
            out.extend(self._start(event))
        # ReasoningEnd, ToolCallEnd: nothing to say in a chunk.
        return out

    def close(self) -> list[bytes]:
        out = [] if self._started else self._start()
        if not self._finished:
            self._finished = True
            out.append(self._chunk(oa.Delta(), "stop"))
        if self._include_usage and self._usage is not None:
            chunk = oa.ChatCompletionChunk(id=self._id, created=self._created,
                                           model=self._model, choices=[],
                                           usage=openai_usage(self._usage))
            out.append(b"data: " + _encode(chunk) + b"\n\n")
        out.append(_DONE)
        return out

    def fail(self, error: GatewayError) -> list[bytes]:
        # OpenAI's mid-stream error: an error object as data, and no [DONE] (the stream
        # must not look complete).
        return [b"data: " + error.to_json() + b"\n\n"]


# --- upstream: Conversation -> request ---------------------------------------------------


def _data_url(media_type: str | None, data: str, default: str) -> str:
    return f"data:{media_type or default};base64,{data}"


def _image_part(part: Image, path: str) -> oa.ImagePart:
    if part.url is not None:
        url = part.url
    elif part.data is not None:
        url = _data_url(part.media_type, part.data, "image/png")
    else:
        raise InvalidRequest("Chat Completions models take images as URLs or data, not as "
                             "file ids.", param=path)
    return oa.ImagePart(oa.ImageURL(url=url, detail=_opt(part.detail)))


def _file_part(part: File, path: str) -> oa.FilePart:
    if part.data is None and part.file_id is None:
        raise InvalidRequest("Chat Completions models take files as data or file ids, not "
                             "as URLs.", param=path)
    data: str | UnsetType = UNSET
    if part.data is not None:
        # A media type means the data came without its data: prefix; none, that it came
        # as the client wrote it.
        data = part.data if part.media_type is None else _data_url(part.media_type,
                                                                   part.data, "")
    return oa.FilePart(oa.FileRef(file_data=data, file_id=_opt(part.file_id),
                                  filename=_opt(part.filename)))


def _refuse(op: Opaque, what: str = "This") -> InvalidRequest:
    return InvalidRequest(f"{what} ({op.kind}) cannot be sent to a Chat Completions model.",
                          param=op.path)


def _audio_part(op: Opaque) -> oa.AudioPart:
    try:
        return msgspec.convert(op.value, oa.AudioPart)
    except msgspec.ValidationError:
        raise _refuse(op, "This audio part") from None


def _content(parts: Sequence[oa.ContentPart]) -> oa.Content:
    if len(parts) == 1 and isinstance(parts[0], oa.TextPart):
        return parts[0].text
    return list(parts)


def _text_content(m: Message, path: str) -> oa.Content:
    texts: list[oa.ContentPart] = []
    for j, part in enumerate(m.parts):
        if isinstance(part, Text):
            texts.append(oa.TextPart(part.text))
        elif isinstance(part, Opaque):
            raise _refuse(part)
        elif not isinstance(part, Reasoning):
            raise InvalidRequest(f"{m.role.capitalize()} messages may only contain text.",
                                 param=f"{path}[{j}]")
    return _content(texts) if texts else ""


def _tool_message(result: ToolResult, path: str,
                  attachments: list[oa.ContentPart]) -> oa.ToolMessage:
    """A tool result as a tool message. Chat tool messages hold text only, so its images
    and files go into a user message after the tool messages (``attachments``)."""
    texts: list[oa.ContentPart] = []
    for j, item in enumerate(result.content):
        if isinstance(item, Text):
            texts.append(oa.TextPart(item.text))
        elif isinstance(item, Image):
            attachments.append(_image_part(item, f"{path}.content[{j}]"))
        else:
            attachments.append(_file_part(item, f"{path}.content[{j}]"))
    content: oa.Content = _content(texts) if texts else ""
    if result.is_error and isinstance(content, str):
        # Chat has no error flag on tool results; the model reads it from the text.
        content = f"Error: {content}" if content else "Error"
    return oa.ToolMessage(content=content, tool_call_id=result.call_id)


def _user(m: Message, path: str, out: list[oa.Message]) -> None:
    parts: list[oa.ContentPart] = []
    attachments: list[oa.ContentPart] = []
    for j, part in enumerate(m.parts):
        where = f"{path}[{j}]"
        if isinstance(part, Text):
            parts.append(oa.TextPart(part.text))
        elif isinstance(part, Image):
            parts.append(_image_part(part, where))
        elif isinstance(part, File):
            parts.append(_file_part(part, where))
        elif isinstance(part, ToolResult):
            # Tool results inside a user turn (as Messages sends them) become tool
            # messages, which must come before the user's own content.
            out.append(_tool_message(part, where, attachments))
        elif isinstance(part, Opaque):
            if part.kind != "input_audio":
                raise _refuse(part)
            parts.append(_audio_part(part))
        elif not isinstance(part, Reasoning):
            raise InvalidRequest("User messages may only contain text, images, files and "
                                 "tool results.", param=where)
    parts = attachments + parts
    if parts or not out or not isinstance(out[-1], oa.ToolMessage):
        out.append(oa.UserMessage(content=_content(parts) if parts else "",
                                  name=_opt(m.name)))


def _assistant(m: Message, path: str) -> oa.AssistantMessage:
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[oa.ToolCall] = []
    audio: oa.AssistantAudio | UnsetType = UNSET
    function_call: oa.FunctionCall | UnsetType = UNSET
    for j, part in enumerate(m.parts):
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            calls.append(_response_tool_call(part))
        elif isinstance(part, Refusal):
            refusals.append(part.text)
        elif isinstance(part, Opaque):
            try:
                if part.kind == "assistant_audio":
                    audio = msgspec.convert(part.value, oa.AssistantAudio)
                elif part.kind == "function_call":
                    function_call = msgspec.convert(part.value, oa.FunctionCall)
                else:
                    raise _refuse(part)
            except msgspec.ValidationError:
                raise _refuse(part) from None
        elif not isinstance(part, Reasoning):
            # Reasoning is left out: Chat Completions has no field for it in requests.
            raise InvalidRequest("Assistant messages may only contain text, refusals, "
                                 "reasoning and tool calls.", param=f"{path}[{j}]")
    content: str | None = "".join(texts) if texts else None
    if content is None and not calls and not refusals and isinstance(audio, UnsetType) \
            and isinstance(function_call, UnsetType):
        content = ""
    return oa.AssistantMessage(
        content=content,
        name=_opt(m.name),
        tool_calls=calls or UNSET,
        refusal="".join(refusals) if refusals else UNSET,
        audio=audio,
        function_call=function_call,
    )


def _tool(m: Message, path: str, out: list[oa.Message],
          attachments: list[oa.ContentPart]) -> None:
    for j, part in enumerate(m.parts):
        where = f"{path}[{j}]"
        if isinstance(part, ToolResult):
            out.append(_tool_message(part, where, attachments))
        elif isinstance(part, Opaque) and part.kind == "function_message":
            try:
                out.append(msgspec.convert(part.value, oa.FunctionMessage))
            except msgspec.ValidationError:
                raise _refuse(part) from None
        elif isinstance(part, Opaque):
            raise _refuse(part)
        else:
            raise InvalidRequest("Tool messages may only contain tool results.", param=where)


def _messages(conv: Conversation) -> list[oa.Message]:
    out: list[oa.Message] = []
    attachments: list[oa.ContentPart] = []  # images and files of tool results, pending
    for i, m in enumerate(conv.messages):
        path = f"messages[{i}].content"
        if m.role != "tool" and attachments:
            out.append(oa.UserMessage(content=attachments))
            attachments = []
        if m.role == "system":
            out.append(oa.SystemMessage(content=_text_content(m, path), name=_opt(m.name)))
        elif m.role == "developer":
            out.append(oa.DeveloperMessage(content=_text_content(m, path),
                                           name=_opt(m.name)))
        elif m.role == "user":
            _user(m, path, out)
        elif m.role == "assistant":
            out.append(_assistant(m, path))
        else:
            _tool(m, path, out, attachments)
    if attachments:
        out.append(oa.UserMessage(content=attachments))
    return out


def _custom_tool(op: Opaque) -> oa.Tool:
    """A custom tool in Chat's shape ``{"type": "custom", "custom": {...}}`` or in the
    Responses API's flat ``{"type": "custom", "name", "description", "format"}``."""
    value = op.value
    try:
        if isinstance(value, dict) and isinstance(value.get("custom"), dict):
            tool = msgspec.convert(value, oa.Tool)
        else:
            spec = msgspec.convert(value, oa.CustomToolDefinition)
            tool = oa.Tool(type="custom", custom=spec)
    except msgspec.ValidationError:
        raise _refuse(op, "This custom tool") from None
    if tool.type != "custom" or isinstance(tool.custom, UnsetType):
        raise _refuse(op, "This custom tool")
    return oa.Tool(type="custom", custom=tool.custom)


def _named(value: dict[str, object], kind: str) -> str | None:
    """The tool name of a choice/allowed-tools entry in Chat's or the Responses shape."""
    inner = value.get(kind)
    name = inner.get("name") if isinstance(inner, dict) else value.get("name")
    return name if isinstance(name, str) else None


def _allowed_tools(op: Opaque, value: dict[str, object], options: EncodeOptions,
                   ) -> oa.NamedToolChoice | None:
    inner = value.get("allowed_tools")
    spec = inner if isinstance(inner, dict) else value
    mode, entries = spec.get("mode"), spec.get("tools")
    if not isinstance(mode, str) or not isinstance(entries, list):
        raise _refuse(op, "This tool_choice")
    tools: list[dict[str, object]] = []
    for entry in entries:
        kind = entry.get("type") if isinstance(entry, dict) else None
        name = _named(entry, kind) if isinstance(entry, dict) and isinstance(kind, str) \
            else None
        if kind in ("function", "custom") and name is not None:
            tools.append({"type": kind, kind: {"name": name}})
        elif options.hosted_tools == "reject":
            raise _refuse(op, "A hosted tool in this tool_choice")
    if not tools:
        return None
    return oa.NamedToolChoice(type="allowed_tools",
                              allowed_tools=oa.AllowedTools(mode=mode, tools=tools))


def _encode_tool_choice(choice: ToolChoice | None, custom: set[str], options: EncodeOptions,
                        ) -> oa.ToolChoice | UnsetType:
    if choice is None:
        return UNSET
    if isinstance(choice, str):
        return choice
    if isinstance(choice, NamedToolChoice):
        if choice.name in custom:
            return oa.NamedToolChoice(type="custom", custom=oa.NamedFunction(choice.name))
        return oa.NamedToolChoice(function=oa.NamedFunction(choice.name))
    value = choice.value
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(value, dict) and kind == "allowed_tools":
        return _allowed_tools(choice, value, options) or UNSET
    if isinstance(value, dict) and kind in ("custom", "function"):
        name = _named(value, str(kind))
        if name is None:
            raise _refuse(choice, "This tool_choice")
        if kind == "custom":
            return oa.NamedToolChoice(type="custom", custom=oa.NamedFunction(name))
        return oa.NamedToolChoice(function=oa.NamedFunction(name))
    if options.hosted_tools == "drop":
        return UNSET  # a hosted tool's choice: the tool itself is dropped
    raise _refuse(choice, "This tool_choice")


def _response_format(fmt: OutputFormat | None) -> oa.ResponseFormat | UnsetType:
    if fmt is None:
        return UNSET
    if fmt == "text":
        return oa.TextFormat()
    if fmt == "json_object":
        return oa.JSONObjectFormat()
    return oa.JSONSchemaFormat(oa.JSONSchema(
        name=fmt.name, description=_opt(fmt.description), schema=_opt(fmt.schema),
        strict=_opt(fmt.strict)))


def _effort(reasoning: ReasoningConfig | None) -> str | None:
    if reasoning is None:
        return None
    if reasoning.effort:
        return reasoning.effort
    if not reasoning.enabled or reasoning.budget_tokens is None:
        return None  # off, or adaptive: the model's default
    # An explicit thinking budget (Anthropic's) as the nearest effort.
    if reasoning.budget_tokens <= 2048:
        return "low"
    return "medium" if reasoning.budget_tokens <= 8192 else "high"


# Hub / other dialects' names for params in options.drop_params, as Chat names them.
_PARAM_ALIASES = {"max_output_tokens": "max_completion_tokens",
                  "max_tokens": "max_completion_tokens", "stop_sequences": "stop",
                  "reasoning": "reasoning_effort"}


def _apply_unsupported(req: oa.ChatCompletionRequest, conv: Conversation) -> None:
    """Chat's own fields that other dialects cannot express (a Chat-sourced
    conversation's ``unsupported``) go back as they came; anything else is refused."""
    for op in conv.unsupported:
        field = op.kind.removeprefix("param:")
        try:
            if field == "modalities":
                req.modalities = msgspec.convert(op.value, list[str])
            elif field in ("audio", "prediction"):
                setattr(req, field, msgspec.convert(op.value, dict[str, object]))
            elif field == "functions":
                req.functions = msgspec.convert(op.value, list[oa.FunctionDefinition])
            elif field == "function_call":
                req.function_call = msgspec.convert(
                    op.value, Literal["none", "auto"] | oa.NamedFunction)
            elif field not in ("logprobs", "top_logprobs"):  # sent from conv's own fields
                raise _refuse(op)
        except msgspec.ValidationError:
            raise _refuse(op) from None


def encode_request(conv: Conversation, *, model: str, stream: bool,
                   options: EncodeOptions) -> Outbound:
    dropped_tools: list[str] = []
    dropped_params: list[str] = []
    tools: list[oa.Tool] = []
    custom: set[str] = set()
    for tool in conv.tools:
        if isinstance(tool, FunctionTool):
            tools.append(oa.Tool(function=oa.FunctionDefinition(
                name=tool.name, description=_opt(tool.description),
                parameters=_opt(tool.parameters), strict=_opt(tool.strict))))
        elif tool.kind == "tool:custom":
            chat_tool = _custom_tool(tool)
            assert not isinstance(chat_tool.custom, UnsetType)
            custom.add(chat_tool.custom.name)
            tools.append(chat_tool)
        elif options.hosted_tools == "drop":
            # Chat Completions has no hosted tools (web_search_options only works on the
            # search-preview models): the deployment chose to leave them out.
            dropped_tools.append(tool.kind.removeprefix("tool:"))
        else:
            raise InvalidRequest(f"The hosted tool {tool.kind.removeprefix('tool:')} cannot "
                                 "be used with this model.", param=tool.path)
    if conv.n is not None and conv.n > 1:
        raise InvalidRequest("'n' above 1 cannot be translated for this model.", param="n")
    req = oa.ChatCompletionRequest(
        model=model,
        messages=_messages(conv),
        tools=tools or UNSET,
        tool_choice=_encode_tool_choice(conv.tool_choice, custom, options) if tools else UNSET,
        parallel_tool_calls=_opt(conv.parallel_tool_calls) if tools else UNSET,
        response_format=_response_format(conv.output_format),
        stop=list(conv.stop) or UNSET,
        temperature=_opt(conv.temperature),
        top_p=_opt(conv.top_p),
        max_completion_tokens=_opt(conv.max_output_tokens),
        seed=_opt(conv.seed),
        logprobs=_opt(conv.logprobs),
        top_logprobs=_opt(conv.top_logprobs),
        presence_penalty=_opt(conv.presence_penalty),
        frequency_penalty=_opt(conv.frequency_penalty),
        logit_bias=_opt(conv.logit_bias),
        user=_opt(conv.user),
        metadata=_opt(conv.metadata),
        service_tier=_opt(conv.service_tier),
        reasoning_effort=_opt(_effort(conv.reasoning)),
    )
    _apply_unsupported(req, conv)
    if conv.top_k is not None:
        dropped_params.append("top_k")  # no such parameter in Chat Completions
    for name in options.drop_params:
        field = _PARAM_ALIASES.get(name, name)
        if field in ("model", "messages") or field not in req.__struct_fields__:
            continue
        if not isinstance(getattr(req, field), UnsetType):
            setattr(req, field, UNSET)
            dropped_params.append(name)
    if stream:
        req.stream = True
        req.stream_options = oa.StreamOptions(include_usage=True)
    return Outbound(body=_encode(req), dropped_tools=dropped_tools,
                    dropped_params=dropped_params)


# --- upstream: answer / chunks -> Result / events ----------------------------------------

_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _finish(reason: str | None, has_calls: bool) -> FinishReason:
    mapped = _FINISH_IN.get(reason or "", "stop")
    # Some compatible servers say "stop" after tool calls; clients of other dialects
    # decide from the reason whether to run tools.
    return "tool_calls" if mapped == "stop" and has_calls else mapped


def _text_of(content: str | list[dict[str, object]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    # Some servers (Mistral) send content as parts: take the text ones.
    texts = (p.get("text") for p in content if p.get("type") == "text")
    return "".join(t for t in texts if isinstance(t, str))


def _arguments(value: str | dict[str, object] | None) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return _encode(value).decode()


def decode_result(body: bytes, outbound: Outbound | None = None) -> Result:
    completion = _completion_decoder.decode(body)
    parts: list[Part] = []
    finish: FinishReason = "stop"
    stop_sequence: str | None = None
    if completion.choices:
        choice = next((c for c in completion.choices if c.index == 0), completion.choices[0])
        msg = choice.message
        reasoning = msg.reasoning_content or msg.reasoning
        if reasoning:
            parts.append(Reasoning(text=reasoning, source="chat"))
        text = _text_of(msg.content)
        if text:
            parts.append(Text(text=text))
        if msg.refusal:
            parts.append(Refusal(text=msg.refusal))
        for j, tc in enumerate(msg.tool_calls or ()):
            call_id = tc.id or f"call_{j}"
            if tc.custom is not None:
                parts.append(ToolCall(id=call_id, name=tc.custom.name,
                                      arguments=tc.custom.input, kind="custom"))
            elif tc.function is not None:
                parts.append(ToolCall(id=call_id, name=tc.function.name,
                                      arguments=_arguments(tc.function.arguments)))
        if msg.function_call is not None:
            parts.append(ToolCall(id="call_0", name=msg.function_call.name,
                                  arguments=_arguments(msg.function_call.arguments)))
        finish = _finish(choice.finish_reason, any(isinstance(p, ToolCall) for p in parts))
        if isinstance(choice.stop_reason, str):
            stop_sequence = choice.stop_reason
    return Result(
        id=completion.id, model=completion.model, parts=parts, finish=finish,
        usage=hub_usage(completion.usage) if completion.usage is not None else None,
        created=completion.created, stop_sequence=stop_sequence,
    )


class ChatStreamDecoder:
    """chat.completion.chunk data in, hub events out. Tool calls are numbered by their
    chunk ``index`` (a new id at a known index starts a new call, as some servers reuse 0);
    the usage chunk arrives after the finish chunk; ``[DONE]`` ends the stream."""

    def __init__(self, provider: str = "upstream") -> None:
        self._provider = provider
        self._done = False
        self._started = False
        self._reasoning = False
        self._finished = False
        # chunk tool-call index -> (hub index, id, kind)
        self._calls: dict[int, tuple[int, str, Literal["function", "custom"]]] = {}
        self._count = 0
        self._last: int | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: bytes, data: bytes) -> list[Event]:
        if data == b"[DONE]":
            self._done = True
            return []
        if event == b"error" or _is_error(data):
            raise error_from_openai(502, data, self._provider)
        try:
            chunk = _chunk_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise GatewayError(f"Provider {self._provider} sent a stream chunk that could "
                               f"not be read: {exc}", status=502) from None
        out: list[Event] = []
        if not self._started:
            if not chunk.choices and chunk.usage is None:
                return out  # e.g. Azure's prompt_filter_results chunk: nothing to start
            self._started = True
            out.append(Start(id=chunk.id, model=chunk.model, created=chunk.created))
        for choice in chunk.choices:
            if choice.index == 0:
                self._choice(choice, out)
                break
        if chunk.usage is not None:
            out.append(UsageUpdate(usage=hub_usage(chunk.usage)))
        return out

    def _end_reasoning(self, out: list[Event]) -> None:
        if self._reasoning:
            self._reasoning = False
            out.append(ReasoningEnd(source="chat"))

    def _choice(self, choice: oa.ChunkChoiceIn, out: list[Event]) -> None:
        delta = choice.delta
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            self._reasoning = True
            out.append(ReasoningDelta(text=reasoning))
        text = _text_of(delta.content)
        if text:
            self._end_reasoning(out)
            out.append(TextDelta(text=text))
        if delta.refusal:
            self._end_reasoning(out)
            out.append(RefusalDelta(text=delta.refusal))
        for tc in delta.tool_calls or ():
            self._end_reasoning(out)
            self._tool_call(tc, out)
        if choice.finish_reason is not None and not self._finished:
            self._finished = True
            self._end_reasoning(out)
            out.extend(ToolCallEnd(index=hub) for hub, _, _ in self._calls.values())
            stop = choice.stop_reason if isinstance(choice.stop_reason, str) else None
            out.append(Finish(reason=_finish(choice.finish_reason, bool(self._calls)),
                              stop_sequence=stop))

    def _tool_call(self, tc: oa.ToolCallDeltaIn, out: list[Event]) -> None:
        index = tc.index if tc.index is not None else (
            self._count if tc.id is not None or self._last is None else self._last)
        known = self._calls.get(index)
        if known is not None and tc.id is not None and tc.id != known[1]:
            index = max(self._calls) + 1 if self._calls else 0  # a reused index, new call
            while index in self._calls:
                index += 1
            known = None
        self._last = index
        if known is None:
            kind: Literal["function", "custom"] = (
                "custom" if tc.type == "custom" or tc.custom is not None else "function")
            name = (tc.custom.name if tc.custom is not None else
                    tc.function.name if tc.function is not None else "") or ""
            call_id = tc.id or f"call_{self._count}"
            known = (self._count, call_id, kind)
            self._calls[index] = known
            self._count += 1
            out.append(ToolCallStart(index=known[0], id=call_id, name=name, kind=kind))
        arguments = (tc.custom.input if tc.custom is not None else
                     _arguments(tc.function.arguments) if tc.function is not None else None)
        if arguments:
            out.append(ToolCallDelta(index=known[0], arguments=arguments))


# --- errors --------------------------------------------------------------------------------


def error_from_openai(status: int, body: bytes, provider: str) -> GatewayError:
    """The upstream's own OpenAI-shaped error, kept as it was sent (message, type, code),
    with anything shaped like a key cut from the message."""
    detail: oa.ErrorDetailIn | None = None
    try:
        body_in = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        body_in = None
    if body_in is not None:
        if isinstance(body_in.error, oa.ErrorDetailIn):
            detail = body_in.error
        elif isinstance(body_in.error, str):
            detail = oa.ErrorDetailIn(message=body_in.error)  # Ollama
        elif body_in.message is not None:
            detail = oa.ErrorDetailIn(message=body_in.message, type=body_in.type,  # vLLM
                                      param=body_in.param, code=body_in.code)
    if detail is None:
        err = GatewayError(f"Provider {provider} answered {status}.", status=status)
        err.type = "upstream_error"
        return err
    message = redact(detail.message) or f"Provider {provider} answered {status}."
    err = GatewayError(message, param=detail.param, status=status)
    err.type = detail.type or "upstream_error"
    err.code = None if detail.code is None else str(detail.code)
    return err


# --- native passthrough --------------------------------------------------------------------


class ChatRelay:
    """Forwards each upstream chunk as it came (``data: <chunk>``), reading the usage on
    the way. The gateway always asks for usage (`native_body`); the usage-only chunk
    (``choices: []``) is dropped when the client did not ask for it. ``[DONE]`` sets
    ``done`` and is forwarded as it came: the provider's native stream adds no ending of
    its own. Before any other output it returns None, so that a stream of nothing but
    ``[DONE]`` still reads as empty (and can fail over)."""

    def __init__(self, include_usage: bool, provider: str = "upstream") -> None:
        self._include_usage = include_usage
        self._provider = provider
        self._done = False
        self._forwarded = False
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def relay(self, event: bytes, data: bytes) -> bytes | None:
        if data == b"[DONE]":
            self._done = True
            return _DONE if self._forwarded else None
        # Only the chunks that carry counts are decoded (``"usage": null`` on the others
        # does not match): this runs for every event of every stream.
        if b'"usage":{' in data or b'"usage": {' in data:
            try:
                chunk = _usage_chunk_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                chunk = None
            if chunk is not None and chunk.usage is not None:
                self._usage = hub_usage(chunk.usage)
                if not self._include_usage and not chunk.choices:
                    return None
        elif event == b"error" or _is_error(data):
            raise error_from_openai(502, data, self._provider)
        self._forwarded = True
        return b"data: " + data + b"\n\n"


def native_body(raw: dict[str, object], *, model: str, stream: bool) -> bytes:
    """The client's own body with the model replaced; a stream always asks for usage
    (so that budgets settle), keeping the client's other stream options."""
    body = dict(raw)
    body["model"] = model
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        options["include_usage"] = True
        body["stream_options"] = options
    elif body.get("stream") is True:
        body["stream"] = False
        body.pop("stream_options", None)
    return _encode(body)


def native_usage(body: bytes) -> Usage | None:
    """The usage of a chat.completion body, decoding nothing else of it."""
    usage = _usage_decoder.decode(body).usage
    return hub_usage(usage) if usage is not None else None


# --- the dialect ---------------------------------------------------------------------------


class ChatDialect:
    """Chat Completions as a front door, as an upstream, and for native passthrough."""

    @property
    def name(self) -> DialectName:
        return "chat"

    def to_conversation(self, typed: object) -> Conversation:
        if not isinstance(typed, oa.ChatCompletionRequest):
            raise TypeError(f"expected a ChatCompletionRequest, got {type(typed).__name__}")
        return to_conversation(typed)

    def encode_result(self, result: Result, request: LLMRequest) -> bytes:
        return encode_result(result, request)

    def stream_encoder(self, request: LLMRequest) -> ChatStreamEncoder:
        return ChatStreamEncoder(request)

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_json()

    def encode_request(self, conversation: Conversation, *, model: str, stream: bool,
                       options: EncodeOptions) -> Outbound:
        return encode_request(conversation, model=model, stream=stream, options=options)

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        return decode_result(body, outbound)

    def stream_decoder(self, outbound: Outbound) -> ChatStreamDecoder:
        return ChatStreamDecoder()

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        return error_from_openai(status, body, provider)

    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes:
        return native_body(raw, model=model, stream=stream)

    def native_usage(self, body: bytes) -> Usage | None:
        return native_usage(body)

    def native_relay(self, request: LLMRequest) -> ChatRelay:
        return ChatRelay(request.include_usage)


CHAT = ChatDialect()

if TYPE_CHECKING:
    _check: Dialect = CHAT  # ChatDialect implements the Dialect protocol
