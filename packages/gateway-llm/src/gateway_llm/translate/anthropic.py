"""OpenAI Chat Completions <-> Anthropic Messages translation: requests, responses, stream
events, usage, stop reasons and errors. Pure functions from Structs to Structs, no I/O.

References: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://docs.anthropic.com/en/api/errors, https://platform.openai.com/docs/api-reference/chat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core import anthropic_types as an
from gateway_core import openai_types as oa
from gateway_core.errors import GatewayError, InvalidRequest, UpstreamError

__all__ = [
    "AnthropicAPIError",
    "REASONING_BUDGETS",
    "StreamTranslator",
    "error_from_anthropic",
    "error_from_event",
    "finish_reason",
    "to_anthropic_request",
    "to_openai_response",
    "to_openai_usage",
]

T = TypeVar("T")

_json_encode = msgspec.json.Encoder().encode
_json_decoder = msgspec.json.Decoder()
_error_decoder = msgspec.json.Decoder(an.ErrorResponse)

# OpenAI's reasoning_effort as an extended-thinking budget. "none"/"minimal" ask for (almost)
# no reasoning, so thinking stays off. 1024 is the API's minimum budget.
REASONING_BUDGETS: dict[str, int | None] = {
    "none": None,
    "minimal": None,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
}
_MIN_THINKING_BUDGET = 1024

# https://docs.anthropic.com/en/docs/build-with-claude/vision: the accepted image formats.
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_JSON_OBJECT_INSTRUCTION = (
    "Respond only with a single valid JSON object, with no text before or after it."
)
_DEFAULT_SCHEMA: dict[str, object] = {"type": "object", "properties": {}}

# A conversation must open with a user turn; when an OpenAI conversation opens with the
# assistant (e.g. a greeting the app showed), this minimal user turn goes in front of it.
_OPENING_USER_TEXT = "."


# --- request ---------------------------------------------------------------------------


def to_anthropic_request(
    req: oa.ChatCompletionRequest, *, model: str, default_max_tokens: int, stream: bool
) -> tuple[an.MessagesRequest, str | None]:
    """Translate a Chat Completions request into a Messages request.

    Returns the request and the name of the tool that carries a ``json_schema`` response
    format (its input is the answer), or None. Raises InvalidRequest, naming the field,
    for anything the Messages API cannot honour.
    """
    _reject_unsupported(req)

    system_parts, turns = _convert_messages(req.messages)

    tools = [_convert_tool(t) for t in req.tools] if req.tools else []
    tool_choice = _convert_tool_choice(req, has_tools=bool(tools))

    json_tool: str | None = None
    fmt = req.response_format
    if isinstance(fmt, oa.JSONSchemaFormat):
        json_tool, tool_choice = _json_schema_tool(fmt.json_schema, tools, tool_choice, req)
    elif isinstance(fmt, oa.JSONObjectFormat):
        # No schema to force through a tool: ask for JSON in the system prompt instead.
        system_parts.append(_JSON_OBJECT_INSTRUCTION)

    limit = _set(req.max_completion_tokens)
    if limit is None:
        limit = _set(req.max_tokens)
    max_tokens = limit if limit is not None else default_max_tokens
    thinking: an.ThinkingConfig | UnsetType = UNSET
    budget = _thinking_budget(req.reasoning_effort)
    if budget is not None:
        if limit is None:
            # No cap from the client: the thinking budget comes on top of the default, so
            # the visible answer keeps the room it would have had without reasoning.
            max_tokens = default_max_tokens + budget
            thinking = an.ThinkingEnabled(budget_tokens=budget)
        else:
            # OpenAI's max_completion_tokens covers reasoning and answer alike, as Anthropic's
            # max_tokens does: keep the cap, give thinking at most half of it. A cap too small
            # for the minimum budget leaves thinking off (reasoning_effort is a hint).
            budget = min(budget, limit // 2)
            if budget >= _MIN_THINKING_BUDGET:
                thinking = an.ThinkingEnabled(budget_tokens=budget)
        if thinking is not UNSET and isinstance(tool_choice, (an.ToolChoiceAny,
                                                               an.ToolChoiceTool)):
            raise InvalidRequest(
                "reasoning_effort cannot be combined with a forced tool call (tool_choice "
                "'required' or a named function, or a json_schema response_format) on "
                "Anthropic models: extended thinking only allows tool_choice 'auto' or 'none'.",
                param="reasoning_effort",
            )

    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    # Extended thinking requires the default sampling settings, so both are left out then.
    if thinking is UNSET:
        t = _set(req.temperature)
        p = _set(req.top_p)
        if t is not None:
            # OpenAI's range is 0..2, Anthropic's 0..1. Values up to 1 mean about the same
            # on both; anything above is clamped to 1 (the most random Anthropic allows)
            # rather than scaled, which would change the meaning of every common value.
            temperature = min(max(float(t), 0.0), 1.0)
        elif p is not None:
            # Only one of the two: recent Claude models reject requests that set both, and
            # both vendors advise altering one, not both.
            top_p = float(p)

    stop = req.stop
    stop_sequences: list[str] | UnsetType = UNSET
    if isinstance(stop, str):
        stop_sequences = [stop]
    elif isinstance(stop, list) and stop:
        stop_sequences = list(stop)

    user = _set(req.user)
    out = an.MessagesRequest(
        model=model,
        messages=turns,
        max_tokens=max_tokens,
        system="\n\n".join(system_parts) if system_parts else UNSET,
        stop_sequences=stop_sequences,
        temperature=temperature,
        top_p=top_p,
        stream=True if stream else UNSET,
        tools=tools if tools else UNSET,
        tool_choice=tool_choice,
        metadata=an.Metadata(user_id=user) if user else UNSET,
        thinking=thinking,
    )
    return out, json_tool


def _set(value: T | None | UnsetType) -> T | None:
    """A request field's value, with UNSET (not sent) and null read alike as None."""
    return None if isinstance(value, UnsetType) else value


def _reject_unsupported(req: oa.ChatCompletionRequest) -> None:
    """Fields with no Messages API equivalent whose loss would change the answer. Fields that
    are safe to drop (seed, service_tier, store, metadata, stream_options, prediction,
    verbosity, parallel_tool_calls=true) are simply not read."""
    n = _set(req.n)
    if n is not None and n > 1:
        raise InvalidRequest("Anthropic models return one choice per request; 'n' must be 1.",
                             param="n")
    if req.logprobs is True:
        raise InvalidRequest("Anthropic models do not return log probabilities.",
                             param="logprobs")
    if _set(req.top_logprobs) is not None:
        raise InvalidRequest("Anthropic models do not return log probabilities.",
                             param="top_logprobs")
    if req.logit_bias:
        raise InvalidRequest("Anthropic models do not support logit_bias.", param="logit_bias")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not UNSET and value is not None and value != 0:
            raise InvalidRequest(f"Anthropic models do not support {name}.", param=name)
    if isinstance(req.modalities, list) and "audio" in req.modalities:
        raise InvalidRequest("Anthropic models cannot produce audio.", param="modalities")
    if _set(req.audio) is not None:
        raise InvalidRequest("Anthropic models cannot produce audio.", param="audio")
    effort = _set(req.reasoning_effort)
    if effort is not None and effort not in REASONING_BUDGETS:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(REASONING_BUDGETS)}.",
            param="reasoning_effort",
        )


def _thinking_budget(effort: str | None | UnsetType) -> int | None:
    if not isinstance(effort, str):
        return None
    return REASONING_BUDGETS.get(effort)


def _convert_messages(
    messages: Sequence[oa.Message],
) -> tuple[list[str], list[an.MessageParam]]:
    """System/developer messages become the top-level system prompt (in order, wherever they
    stand); the rest become alternating user/assistant turns, consecutive same-role messages
    (and tool results, which are user turns) merged into one."""
    system: list[str] = []
    turns: list[tuple[str, list[an.ContentBlock]]] = []
    for i, m in enumerate(messages):
        if isinstance(m, (oa.SystemMessage, oa.DeveloperMessage)):
            text = _text_only(m.content, f"messages[{i}].content")
            if text:
                system.append(text)
            continue
        role: str
        if isinstance(m, oa.UserMessage):
            role, blocks = "user", _user_blocks(m.content, i)
        elif isinstance(m, oa.AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(m, i)
        elif isinstance(m, oa.ToolMessage):
            role, blocks = "user", [_tool_result(m, i)]
        else:
            raise InvalidRequest(
                "Messages with role 'function' (deprecated) cannot be sent to Anthropic "
                "models; use tool_calls and role 'tool'.",
                param=f"messages[{i}].role",
            )
        if not blocks:
            continue  # e.g. an assistant message with empty content: Anthropic rejects those
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    if not turns:
        raise InvalidRequest(
            "Anthropic models need at least one user or assistant message besides system "
            "messages.", param="messages",
        )
    if turns[0][0] == "assistant":
        turns.insert(0, ("user", [an.TextBlock(_OPENING_USER_TEXT)]))
    out: list[an.MessageParam] = []
    for role, blocks in turns:
        if role == "user":
            # tool_result blocks must come first in their user turn (Anthropic's tool-use
            # rules), so a user message sent between tool results moves after them.
            blocks = [b for b in blocks if isinstance(b, an.ToolResultBlock)] + [
                b for b in blocks if not isinstance(b, an.ToolResultBlock)
            ]
        out.append(an.MessageParam(role="user" if role == "user" else "assistant",
                                   content=blocks))
    return system, out


def _text_only(content: oa.Content, path: str) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, oa.TextPart):
            raise InvalidRequest("System and developer messages may only contain text for "
                                 "Anthropic models.", param=f"{path}[{j}]")
        texts.append(part.text)
    return "\n\n".join(t for t in texts if t)


def _user_blocks(content: oa.Content, i: int) -> list[an.ContentBlock]:
    if isinstance(content, str):
        return [an.TextBlock(content)] if content else []
    blocks: list[an.ContentBlock] = []
    for j, part in enumerate(content):
        path = f"messages[{i}].content[{j}]"
        if isinstance(part, oa.TextPart):
            if part.text:  # Anthropic rejects empty text blocks
                blocks.append(an.TextBlock(part.text))
        elif isinstance(part, oa.ImagePart):
            blocks.append(_image_block(part.image_url.url, f"{path}.image_url.url"))
        elif isinstance(part, oa.AudioPart):
            raise InvalidRequest("Anthropic models do not accept audio input.", param=path)
        elif isinstance(part, oa.FilePart):
            raise InvalidRequest("File content parts cannot be sent to Anthropic models.",
                                 param=path)
        else:
            raise InvalidRequest("Refusal parts are only valid in assistant messages.",
                                 param=path)
    return blocks


def _image_block(url: str, path: str) -> an.ImageBlock:
    if url.startswith(("http://", "https://")):
        return an.ImageBlock(an.URLImageSource(url))
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        media_type = media_type.lower()
        if not sep or encoding.lower() != "base64":
            raise InvalidRequest("Image data URLs must be base64 encoded "
                                 "(data:<media type>;base64,<data>).", param=path)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"Anthropic models accept images of type {', '.join(sorted(_IMAGE_MEDIA_TYPES))}"
                f"; got {media_type or 'none'}.", param=path,
            )
        return an.ImageBlock(an.Base64ImageSource(media_type=media_type, data=data))
    raise InvalidRequest("Image URLs must be http(s) URLs or base64 data URLs.", param=path)


def _assistant_blocks(m: oa.AssistantMessage, i: int) -> list[an.ContentBlock]:
    if m.function_call is not UNSET and m.function_call is not None:
        raise InvalidRequest(
            "Deprecated function_call messages cannot be sent to Anthropic models; use "
            "tool_calls.", param=f"messages[{i}].function_call",
        )
    blocks: list[an.ContentBlock] = []
    content = m.content
    if isinstance(content, str):
        if content:
            blocks.append(an.TextBlock(content))
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, oa.TextPart) and part.text:
                blocks.append(an.TextBlock(part.text))
            elif isinstance(part, oa.RefusalPart) and part.refusal:
                blocks.append(an.TextBlock(part.refusal))
            elif not isinstance(part, (oa.TextPart, oa.RefusalPart)):
                raise InvalidRequest("Assistant messages may only contain text and refusal "
                                     "parts.", param=f"messages[{i}].content")
    if isinstance(m.tool_calls, list):
        for j, call in enumerate(m.tool_calls):
            blocks.append(an.ToolUseBlock(
                id=call.id, name=call.function.name,
                input=_parse_arguments(call.function.arguments,
                                       f"messages[{i}].tool_calls[{j}].function.arguments"),
            ))
    return blocks


def _parse_arguments(arguments: str, path: str) -> dict[str, object]:
    if not arguments.strip():
        return {}  # some models emit "" for functions without parameters
    try:
        value = _json_decoder.decode(arguments)
    except msgspec.DecodeError:
        raise InvalidRequest("Tool call arguments are not valid JSON.", param=path) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=path)
    return value


def _tool_result(m: oa.ToolMessage, i: int) -> an.ToolResultBlock:
    content = m.content
    if isinstance(content, str):
        # An empty result is sent without content: Anthropic rejects empty text.
        return an.ToolResultBlock(tool_use_id=m.tool_call_id, content=content or UNSET)
    parts: list[an.ToolResultContent] = []
    for j, part in enumerate(content):
        path = f"messages[{i}].content[{j}]"
        if isinstance(part, oa.TextPart):
            if part.text:
                parts.append(an.TextBlock(part.text))
        elif isinstance(part, oa.ImagePart):
            parts.append(_image_block(part.image_url.url, f"{path}.image_url.url"))
        else:
            raise InvalidRequest("Tool messages may only contain text and image parts for "
                                 "Anthropic models.", param=path)
    return an.ToolResultBlock(tool_use_id=m.tool_call_id, content=parts or UNSET)


def _convert_tool(tool: oa.Tool) -> an.Tool:
    f = tool.function
    # `strict` is dropped: not every Claude model supports strict tool schemas.
    schema = f.parameters if isinstance(f.parameters, dict) else dict(_DEFAULT_SCHEMA)
    return an.Tool(name=f.name, input_schema=schema, description=f.description)


def _convert_tool_choice(
    req: oa.ChatCompletionRequest, *, has_tools: bool
) -> an.ToolChoice | UnsetType:
    choice = req.tool_choice
    no_parallel: bool | UnsetType = True if req.parallel_tool_calls is False else UNSET
    if choice is UNSET or choice is None:
        if has_tools and no_parallel is True:
            return an.ToolChoiceAuto(disable_parallel_tool_use=True)
        return UNSET
    if not has_tools:
        if choice in ("auto", "none"):
            return UNSET  # nothing to choose from: harmless to drop
        raise InvalidRequest("tool_choice requires tools.", param="tool_choice")
    if choice == "auto":
        return an.ToolChoiceAuto(disable_parallel_tool_use=no_parallel)
    if choice == "none":
        return an.ToolChoiceNone()
    if choice == "required":
        return an.ToolChoiceAny(disable_parallel_tool_use=no_parallel)
    if isinstance(choice, oa.NamedToolChoice):
        return an.ToolChoiceTool(name=choice.function.name,
                                 disable_parallel_tool_use=no_parallel)
    raise InvalidRequest("Unsupported tool_choice.", param="tool_choice")


def _json_schema_tool(
    spec: oa.JSONSchema,
    tools: list[an.Tool],
    tool_choice: an.ToolChoice | UnsetType,
    req: oa.ChatCompletionRequest,
) -> tuple[str, an.ToolChoice | UnsetType]:
    """A json_schema response format becomes a tool whose input schema is the schema; the
    model "calls" it with the answer, which becomes the message content. Without other tools
    (or with tool_choice 'none') that tool is forced; with the client's tools the model must
    call some tool ('any'): one of them, or the answer tool; a named choice is kept."""
    schema = spec.schema if isinstance(spec.schema, dict) else dict(_DEFAULT_SCHEMA)
    if schema.get("type", "object") != "object":
        raise InvalidRequest(
            "Anthropic models need a json_schema whose root is an object.",
            param="response_format.json_schema.schema",
        )
    if any(t.name == spec.name for t in tools):
        raise InvalidRequest(
            f"response_format.json_schema.name '{spec.name}' is also the name of a tool.",
            param="response_format.json_schema.name",
        )
    description = spec.description if isinstance(spec.description, str) else (
        "Give your final answer by calling this tool; its input is the response."
    )
    no_parallel: bool | UnsetType = True if req.parallel_tool_calls is False else UNSET
    user_tools = bool(tools) and not isinstance(tool_choice, an.ToolChoiceNone)
    if not user_tools:
        tools.clear()
    tools.append(an.Tool(name=spec.name, input_schema=schema, description=description))
    if not user_tools:
        return spec.name, an.ToolChoiceTool(name=spec.name)
    if isinstance(tool_choice, an.ToolChoiceTool):
        return spec.name, tool_choice
    return spec.name, an.ToolChoiceAny(disable_parallel_tool_use=no_parallel)


# --- response --------------------------------------------------------------------------

_FINISH_REASONS: dict[str, oa.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> oa.FinishReason:
    """Anthropic's stop_reason as OpenAI's finish_reason; unknown reasons read as 'stop'."""
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def to_openai_usage(
    usage: an.Usage | an.MessageDeltaUsage | None = None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read: int | None = None,
    cache_creation: int | None = None,
    thinking_tokens: int | None = None,
) -> oa.Usage:
    """OpenAI counts every prompt token in prompt_tokens, cached or not; Anthropic's
    input_tokens leaves out cache reads and cache writes, so they are added back."""
    if usage is not None:
        input_tokens = usage.input_tokens or 0
        output_tokens = usage.output_tokens
        cache_read = usage.cache_read_input_tokens
        cache_creation = usage.cache_creation_input_tokens
        if usage.output_tokens_details is not None:
            thinking_tokens = usage.output_tokens_details.thinking_tokens
    prompt = input_tokens + (cache_read or 0) + (cache_creation or 0)
    return oa.Usage(
        prompt_tokens=prompt,
        completion_tokens=output_tokens,
        total_tokens=prompt + output_tokens,
        prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=cache_read or 0),
        completion_tokens_details=(
            oa.CompletionTokensDetails(reasoning_tokens=thinking_tokens)
            if thinking_tokens is not None else None
        ),
    )


def _chat_id(message_id: str) -> str:
    # The Anthropic id is kept inside ours so a request can be found in Anthropic's console.
    return f"chatcmpl-{message_id}"


def _compact_json(value: object) -> str:
    return _json_encode(value).decode()


def to_openai_response(
    msg: an.Message, *, json_tool: str | None, created: int
) -> oa.ChatCompletion:
    """Translate a Message into a chat.completion. Thinking blocks are not passed on (the
    OpenAI message has no field for them)."""
    texts: list[str] = []
    calls: list[oa.ToolCall] = []
    json_answer: str | None = None
    for block in msg.content:
        if isinstance(block, an.TextBlock):
            texts.append(block.text)
        elif isinstance(block, an.ToolUseBlock):
            arguments = _compact_json(block.input)
            if json_tool is not None and block.name == json_tool:
                json_answer = arguments
            else:
                calls.append(oa.ToolCall(block.id, oa.FunctionCall(block.name, arguments)))
    reason = finish_reason(msg.stop_reason)
    content: str | None
    if json_answer is not None:
        # The answer tool's input is the response; any text around it was preamble.
        content = json_answer
        if reason == "tool_calls" and not calls:
            reason = "stop"
    elif texts:
        content = "".join(texts)
    else:
        content = None if calls else ""
    message = oa.ResponseMessage(content=content, tool_calls=calls or None)
    return oa.ChatCompletion(
        id=_chat_id(msg.id),
        created=created,
        model=msg.model,
        choices=[oa.Choice(index=0, message=message, finish_reason=reason)],
        usage=to_openai_usage(msg.usage),
    )


# --- streaming -------------------------------------------------------------------------

_TEXT = -1
_JSON = -2
_IGNORED = -3


class StreamTranslator:
    """Turns Anthropic stream events into chat.completion.chunk objects, one event at a time.

    Tool calls are numbered 0, 1, ... among tool calls (OpenAI's ``index``), not by
    Anthropic's block index. ``usage`` is known after message_start and final after
    message_delta, whether or not the client asked for a usage chunk.
    """

    def __init__(self, *, include_usage: bool, json_tool: str | None, created: int) -> None:
        self.include_usage = include_usage
        self.json_tool = json_tool
        self.created = created
        self.id = "chatcmpl-unknown"
        self.model = ""
        # Anthropic block index -> OpenAI tool call index, or _TEXT / _JSON / _IGNORED.
        self._blocks: dict[int, int] = {}
        self._tool_calls = 0
        self._json_used = False
        self._finished = False
        self._usage_sent = False
        self._input = 0
        self._output = 0
        self._cache_read: int | None = None
        self._cache_creation: int | None = None
        self._thinking: int | None = None
        self._started = False

    @property
    def usage(self) -> oa.Usage | None:
        if not self._started:
            return None
        return to_openai_usage(
            input_tokens=self._input, output_tokens=self._output, cache_read=self._cache_read,
            cache_creation=self._cache_creation, thinking_tokens=self._thinking,
        )

    def feed_bytes(self, data: bytes) -> list[oa.ChatCompletionChunk]:
        """Translate one SSE ``data:`` payload. Unknown event types give no chunks."""
        try:
            event = an.decode_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UpstreamError(f"The upstream stream sent an event that could not be read: "
                                f"{exc}") from None
        return [] if event is None else self.feed(event)

    def feed(self, event: an.StreamEvent) -> list[oa.ChatCompletionChunk]:
        if isinstance(event, an.ContentBlockDeltaEvent):  # the common case first
            return self._delta(event)
        if isinstance(event, an.MessageStartEvent):
            msg = event.message
            self.id = _chat_id(msg.id)
            self.model = msg.model
            self._started = True
            self._take_usage(msg.usage)
            return [self._chunk(oa.Delta(role="assistant", content=""))]
        if isinstance(event, an.ContentBlockStartEvent):
            return self._block_start(event)
        if isinstance(event, an.MessageDeltaEvent):
            self._take_usage(event.usage)
            if event.delta.stop_reason is None:
                return []
            return [self._finish(event.delta.stop_reason)]
        if isinstance(event, an.MessageStopEvent):
            out: list[oa.ChatCompletionChunk] = []
            if not self._finished:
                out.append(self._finish(None))
            if self.include_usage and not self._usage_sent and self._started:
                self._usage_sent = True
                out.append(oa.ChatCompletionChunk(
                    id=self.id, created=self.created, model=self.model, choices=[],
                    usage=self.usage,
                ))
            return out
        if isinstance(event, an.ErrorEvent):
            raise error_from_event(event.error)
        return []  # ping, content_block_stop

    def _take_usage(self, usage: an.Usage | an.MessageDeltaUsage) -> None:
        # message_delta's counts are cumulative; its input counts only exist on newer API
        # versions, so what message_start said is kept unless a newer number arrives.
        if usage.input_tokens is not None:
            self._input = usage.input_tokens
        if usage.output_tokens:
            self._output = usage.output_tokens
        if usage.cache_read_input_tokens is not None:
            self._cache_read = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens is not None:
            self._cache_creation = usage.cache_creation_input_tokens
        if usage.output_tokens_details is not None:
            self._thinking = usage.output_tokens_details.thinking_tokens

    def _chunk(
        self, delta: oa.Delta, finish: oa.FinishReason | None = None
    ) -> oa.ChatCompletionChunk:
        return oa.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model,
            choices=[oa.ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        )

    def _block_start(self, event: an.ContentBlockStartEvent) -> list[oa.ChatCompletionChunk]:
        block = event.content_block
        if isinstance(block, an.TextBlock):
            self._blocks[event.index] = _TEXT
            return [self._chunk(oa.Delta(content=block.text))] if block.text else []
        if isinstance(block, an.ToolUseBlock):
            if self.json_tool is not None and block.name == self.json_tool:
                self._blocks[event.index] = _JSON
                self._json_used = True
                return []
            index = self._tool_calls
            self._tool_calls += 1
            self._blocks[event.index] = index
            # The input arrives as input_json_delta events; the start carries {}.
            call = oa.ToolCallDelta(index=index, id=block.id, type="function",
                                    function=oa.FunctionCallDelta(name=block.name,
                                                                  arguments=""))
            return [self._chunk(oa.Delta(tool_calls=[call]))]
        self._blocks[event.index] = _IGNORED  # thinking, redacted_thinking
        return []

    def _delta(self, event: an.ContentBlockDeltaEvent) -> list[oa.ChatCompletionChunk]:
        kind = self._blocks.get(event.index, _IGNORED)
        delta = event.delta
        if isinstance(delta, an.TextDelta):
            if kind == _TEXT and delta.text:
                return [self._chunk(oa.Delta(content=delta.text))]
            return []
        if isinstance(delta, an.InputJSONDelta) and delta.partial_json:
            if kind == _JSON:
                return [self._chunk(oa.Delta(content=delta.partial_json))]
            if kind >= 0:
                call = oa.ToolCallDelta(
                    index=kind, function=oa.FunctionCallDelta(arguments=delta.partial_json)
                )
                return [self._chunk(oa.Delta(tool_calls=[call]))]
        return []  # thinking and signature deltas have no place in an OpenAI chunk

    def _finish(self, stop_reason: str | None) -> oa.ChatCompletionChunk:
        self._finished = True
        reason = finish_reason(stop_reason)
        if reason == "tool_calls" and self._json_used and self._tool_calls == 0:
            reason = "stop"
        return self._chunk(oa.Delta(), reason)


# --- errors ----------------------------------------------------------------------------


class AnthropicAPIError(GatewayError):
    """An error Anthropic answered with, in OpenAI's shape. ``upstream_status`` and
    ``upstream_type`` keep what Anthropic said (529 / overloaded_error, ...)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str,
        code: str | None,
        upstream_status: int,
        upstream_type: str | None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.type = type
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type


# Anthropic error type -> (upstream HTTP status, status we answer with, OpenAI type, code).
# https://docs.anthropic.com/en/api/errors. 529 is not a standard HTTP status and some
# clients and proxies treat it as unknown; 503 Service Unavailable says the same thing
# (temporarily overloaded, retry later) in a way every OpenAI client already retries.
_ERROR_TYPES: dict[str, tuple[int, int, str, str | None]] = {
    "invalid_request_error": (400, 400, "invalid_request_error", None),
    "authentication_error": (401, 401, "authentication_error", "invalid_api_key"),
    "billing_error": (402, 402, "billing_error", "insufficient_quota"),
    "permission_error": (403, 403, "permission_error", None),
    "not_found_error": (404, 404, "not_found_error", "not_found"),
    "request_too_large": (413, 413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, 429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, 500, "api_error", None),
    "timeout_error": (504, 504, "timeout_error", "upstream_timeout"),
    "overloaded_error": (529, 503, "overloaded_error", "overloaded"),
}
_STATUS_TYPES = {upstream: name for name, (upstream, *_rest) in _ERROR_TYPES.items()}


def _make_error(status: int, upstream_type: str | None, message: str) -> AnthropicAPIError:
    name = upstream_type if upstream_type in _ERROR_TYPES else _STATUS_TYPES.get(status)
    if name is None:
        # A status Anthropic does not document: pass client errors on, the rest as 502.
        answer = status if 400 <= status < 600 else 502
        return AnthropicAPIError(
            message, status=answer,
            type="invalid_request_error" if answer < 500 else "upstream_error", code=None,
            upstream_status=status, upstream_type=upstream_type,
        )
    _, answer, type_, code = _ERROR_TYPES[name]
    return AnthropicAPIError(message, status=answer, type=type_, code=code,
                             upstream_status=status, upstream_type=upstream_type)


def error_from_anthropic(status: int, body: bytes) -> AnthropicAPIError:
    """An Anthropic error answer as an OpenAI-shaped error keeping Anthropic's message.
    Only the body is read, never request headers, so no key can end up in the message."""
    try:
        parsed = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _make_error(status, None,
                           f"The Anthropic API answered with HTTP {status} and no readable "
                           "error.")
    message = parsed.error.message or f"The Anthropic API answered with HTTP {status}."
    return _make_error(status, parsed.error.type, message)


def error_from_event(error: an.ErrorObject) -> AnthropicAPIError:
    """An ``error`` event in the middle of a stream (it has no HTTP status of its own; the
    one its type stands for is used)."""
    entry = _ERROR_TYPES.get(error.type or "")
    status = entry[0] if entry is not None else 500
    message = error.message or f"The Anthropic stream failed ({error.type or 'no type'})."
    return _make_error(status, error.type, message)
