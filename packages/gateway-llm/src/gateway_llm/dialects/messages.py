"""The Anthropic Messages dialect: as an upstream (a Conversation as a Messages request, its
answer, stream events and errors back), as the /v1/messages front door (a client's request
as a Conversation, results and hub events as Messages JSON and SSE, errors in Anthropic's
shape), and for native passthrough. Pure: Structs and bytes in and out, no I/O.

References: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://docs.anthropic.com/en/api/errors, and the anthropic SDK's types (2.15).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import TYPE_CHECKING, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core import anthropic_types as an
from gateway_core.errors import GatewayError, InvalidRequest, UpstreamError
from gateway_llm.errors import redact
from gateway_llm.hub.conversation import (
    Conversation,
    File,
    FinishReason,
    FunctionTool,
    Image,
    JSONSchemaFormat,
    Message,
    NamedToolChoice,
    Opaque,
    Part,
    Reasoning,
    ReasoningConfig,
    Refusal,
    Result,
    Text,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
)
from gateway_llm.hub.dialect import (
    Dialect,
    DialectName,
    EncodeOptions,
    LLMRequest,
    Outbound,
)
from gateway_llm.hub.events import (
    Event,
    Finish,
    ReasoningDelta,
    ReasoningEnd,
    RefusalDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)

__all__ = [
    "MESSAGES",
    "REASONING_BUDGETS",
    "AnthropicAPIError",
    "MessagesDialect",
    "MessagesNativeRelay",
    "MessagesStreamDecoder",
    "MessagesStreamEncoder",
    "error_from_anthropic",
    "error_from_event",
    "error_status",
    "error_type",
    "finish_reason",
    "hub_usage",
]

_encode = msgspec.json.Encoder().encode
_json_decoder = msgspec.json.Decoder()
_error_decoder = msgspec.json.Decoder(an.ErrorResponse)

# OpenAI's reasoning effort as an extended-thinking budget. "none"/"minimal" ask for (almost)
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
# https://docs.anthropic.com/en/docs/build-with-claude/pdf-support and plain-text documents.
_PDF = "application/pdf"
_PLAIN_TEXT = "text/plain"

_JSON_OBJECT_INSTRUCTION = (
    "Respond only with a single valid JSON object, with no text before or after it."
)
_JSON_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool; its input is the response."
)
_DEFAULT_SCHEMA: dict[str, object] = {"type": "object", "properties": {}}

# A conversation must open with a user turn; when one opens with the assistant (e.g. a
# greeting the app showed), this minimal user turn goes in front of it.
_OPENING_USER_TEXT = "."

# The request fields `EncodeOptions.drop_params` may remove (the rest are required).
_DROPPABLE = frozenset(an.CreateMessageRequest.__struct_fields__) - {
    "model", "messages", "max_tokens"}


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _compact_json(value: object) -> str:
    return _encode(value).decode()


# --- upstream: the request --------------------------------------------------------------


def encode_request(
    conversation: Conversation, *, model: str, stream: bool, options: EncodeOptions
) -> Outbound:
    """A Conversation as a Messages request. Raises InvalidRequest, naming the field, for
    anything the Messages API cannot honour. Paths inside messages are those of the
    conversation (``messages[i].content[j]``, ``messages[i].tool_calls[k]...``), which are
    the client's for a Chat Completions front door."""
    conv = conversation
    _reject_unsupported(conv)
    system_parts, turns = _turns(conv.messages)

    dropped_tools: list[str] = []
    tools = _tools(conv.tools, options, dropped_tools)
    tool_choice = _tool_choice(conv, has_tools=bool(tools))

    json_tool: str | None = None
    fmt = conv.output_format
    if isinstance(fmt, JSONSchemaFormat):
        json_tool, tool_choice = _json_schema_tool(fmt, tools, tool_choice, conv)
    elif fmt == "json_object":
        # No schema to force through a tool: ask for JSON in the system prompt instead.
        system_parts.append(_JSON_OBJECT_INSTRUCTION)

    max_tokens, thinking = _thinking(conv, options)
    thinking_on = isinstance(thinking, (an.ThinkingEnabledParam, an.ThinkingAdaptiveParam))
    if thinking_on and isinstance(tool_choice, (an.ToolChoiceAny, an.ToolChoiceTool)):
        reasoning = conv.reasoning
        explicit = reasoning is not None and (
            reasoning.budget_tokens is not None or reasoning.adaptive)
        raise _invalid(
            "Extended thinking cannot be combined with a forced tool call (tool_choice "
            "'required' or a named function, or a json_schema response format) on Anthropic "
            "models: with thinking only tool_choice 'auto' or 'none' is allowed.",
            "thinking" if explicit else "reasoning_effort",
        )

    dropped_params: list[str] = []
    drop = set(options.drop_params)
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    # Extended thinking requires the default sampling settings, so they are left out then.
    if not thinking_on:
        t, p = conv.temperature, conv.top_p
        if t is not None and "temperature" in drop:
            dropped_params.append("temperature")
            t = None
        if p is not None and "top_p" in drop:
            dropped_params.append("top_p")
            p = None
        if t is not None:
            # OpenAI's range is 0..2, Anthropic's 0..1. Values up to 1 mean about the same
            # on both; anything above is clamped to 1 (the most random Anthropic allows)
            # rather than scaled, which would change the meaning of every common value.
            temperature = min(max(float(t), 0.0), 1.0)
        elif p is not None:
            # Only one of the two: recent Claude models reject requests that set both, and
            # both vendors advise altering one, not both.
            top_p = float(p)
        if conv.top_k is not None:
            top_k = conv.top_k

    request = an.CreateMessageRequest(
        model=model,
        max_tokens=max_tokens,
        messages=turns,
        system="\n\n".join(system_parts) if system_parts else UNSET,
        stop_sequences=list(conv.stop) if conv.stop else UNSET,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stream=True if stream else UNSET,
        tools=tools if tools else UNSET,
        tool_choice=tool_choice,
        metadata=an.MetadataParam(user_id=conv.user) if conv.user else UNSET,
        thinking=thinking,
    )
    for name in options.drop_params:
        if name in ("temperature", "top_p") or name not in _DROPPABLE:
            continue
        if getattr(request, name) is not UNSET:
            setattr(request, name, UNSET)
            dropped_params.append(name)
    return Outbound(body=_encode(request), json_tool=json_tool, dropped_tools=dropped_tools,
                    dropped_params=dropped_params)


def _reject_unsupported(conv: Conversation) -> None:
    """Fields with no Messages API equivalent whose loss would change the answer. Fields
    that are safe to drop (seed, service_tier, metadata, parallel_tool_calls=true) are not
    read."""
    if conv.n is not None and conv.n > 1:
        raise _invalid("Anthropic models return one choice per request; 'n' must be 1.", "n")
    if conv.logprobs:
        raise _invalid("Anthropic models do not return log probabilities.", "logprobs")
    if conv.top_logprobs is not None:
        raise _invalid("Anthropic models do not return log probabilities.", "top_logprobs")
    if conv.logit_bias:
        raise _invalid("Anthropic models do not support logit_bias.", "logit_bias")
    for name, value in (("presence_penalty", conv.presence_penalty),
                        ("frequency_penalty", conv.frequency_penalty)):
        if value:
            raise _invalid(f"Anthropic models do not support {name}.", name)
    for item in conv.unsupported:
        if item.kind.removeprefix("param:") in ("audio", "modalities"):
            raise _invalid("Anthropic models cannot produce audio.", item.path)
        if item.kind == "embeddings":
            raise _invalid("Anthropic models have no embeddings API: use an embedding alias "
                           "on an OpenAI-kind provider.", item.path)
        raise _invalid(f"'{item.path}' cannot be sent to Anthropic models.", item.path)
    reasoning = conv.reasoning
    if reasoning is not None and reasoning.effort is not None and (
        reasoning.effort not in REASONING_BUDGETS
    ):
        raise _invalid(f"reasoning_effort must be one of {', '.join(REASONING_BUDGETS)}.",
                       "reasoning_effort")


def _thinking(
    conv: Conversation, options: EncodeOptions
) -> tuple[int, an.ThinkingConfigParam | UnsetType]:
    """max_tokens and the thinking config. An explicit budget or adaptive thinking (from a
    Messages front door) is sent as it is; a reasoning effort becomes adaptive thinking or
    a budget as ``options.thinking`` says; "off" never sends thinking."""
    limit = conv.max_output_tokens
    default = options.default_max_tokens
    max_tokens = limit if limit is not None else default
    r = conv.reasoning
    if r is None or options.thinking == "off":
        return max_tokens, UNSET
    if not r.enabled:
        return max_tokens, an.ThinkingDisabledParam()
    if r.budget_tokens is not None:
        if limit is None:
            max_tokens = default + r.budget_tokens
        return max_tokens, an.ThinkingEnabledParam(budget_tokens=r.budget_tokens)
    budget = REASONING_BUDGETS.get(r.effort) if r.effort is not None else None
    if r.adaptive or (budget is not None and options.thinking == "adaptive"):
        if limit is None and budget is not None:
            # Adaptive thinking spends max_tokens too: keep the answer the room it had.
            max_tokens = default + budget
        return max_tokens, an.ThinkingAdaptiveParam()
    if budget is None:
        return max_tokens, UNSET
    if limit is None:
        # No cap from the client: the thinking budget comes on top of the default, so the
        # visible answer keeps the room it would have had without reasoning.
        return default + budget, an.ThinkingEnabledParam(budget_tokens=budget)
    # OpenAI's max_completion_tokens covers reasoning and answer alike, as Anthropic's
    # max_tokens does: keep the cap, give thinking at most half of it. A cap too small for
    # the minimum budget leaves thinking off (a reasoning effort is a hint).
    budget = min(budget, limit // 2)
    if budget < _MIN_THINKING_BUDGET:
        return max_tokens, UNSET
    return max_tokens, an.ThinkingEnabledParam(budget_tokens=budget)


_Role = Literal["user", "assistant"]


def _turns(messages: list[Message]) -> tuple[list[str], list[an.InputMessage]]:
    """System/developer messages become the top-level system prompt (in order, wherever they
    stand); the rest become alternating user/assistant turns, consecutive same-role messages
    (and tool results, which are user turns) merged into one."""
    system: list[str] = []
    turns: list[tuple[_Role, list[an.ContentBlockParam]]] = []
    for i, m in enumerate(messages):
        role: _Role
        if m.role in ("system", "developer"):
            text = _system_text(m, i)
            if text:
                system.append(text)
            continue
        if m.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(m, i)
        else:
            role, blocks = "user", _user_blocks(m, i)
        if not blocks:
            continue  # e.g. an assistant message with empty content: Anthropic rejects those
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    if not turns:
        raise _invalid("Anthropic models need at least one user or assistant message besides "
                       "system messages.", "messages")
    if turns[0][0] == "assistant":
        turns.insert(0, ("user", [an.TextBlockParam(_OPENING_USER_TEXT)]))
    out: list[an.InputMessage] = []
    for role, blocks in turns:
        if role == "user":
            # tool_result blocks must come first in their user turn (Anthropic's tool-use
            # rules), so a user message sent between tool results moves after them.
            blocks = [b for b in blocks if isinstance(b, an.ToolResultBlockParam)] + [
                b for b in blocks if not isinstance(b, an.ToolResultBlockParam)
            ]
        out.append(an.InputMessage(role=role, content=blocks))
    return system, out


def _refuse_opaque(part: Opaque) -> InvalidRequest:
    if part.kind == "input_audio":
        return _invalid("Anthropic models do not accept audio input.", part.path)
    return _invalid(f"Content of type '{part.kind}' cannot be sent to Anthropic models.",
                    part.path)


def _system_text(m: Message, i: int) -> str:
    texts: list[str] = []
    for j, part in enumerate(m.parts):
        if isinstance(part, Opaque):
            raise _refuse_opaque(part)
        if not isinstance(part, Text):
            raise _invalid("System and developer messages may only contain text for Anthropic "
                           "models.", f"messages[{i}].content[{j}]")
        texts.append(part.text)
    return "\n\n".join(t for t in texts if t)


def _user_blocks(m: Message, i: int) -> list[an.ContentBlockParam]:
    blocks: list[an.ContentBlockParam] = []
    for j, part in enumerate(m.parts):
        path = f"messages[{i}].content[{j}]"
        if isinstance(part, Text):
            if part.text:  # Anthropic rejects empty text blocks
                blocks.append(an.TextBlockParam(part.text))
        elif isinstance(part, Image):
            blocks.append(_image_block(part, path))
        elif isinstance(part, File):
            blocks.append(_document_block(part, path))
        elif isinstance(part, ToolResult):
            blocks.append(_tool_result(part, i))
        elif isinstance(part, Opaque):
            raise _refuse_opaque(part)
        elif isinstance(part, Refusal):
            raise _invalid("Refusal parts are only valid in assistant messages.", path)
        else:
            raise _invalid(f"A {m.role} message cannot carry a {type(part).__name__} part "
                           "for Anthropic models.", path)
    return blocks


def _data_url(url: str, path: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<media type>;base64,<data>`` URL."""
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding.lower() != "base64":
        raise _invalid("Data URLs must be base64 encoded (data:<media type>;base64,<data>).",
                       path)
    return media_type.lower(), data


def _image_block(image: Image, path: str) -> an.ImageBlockParam:
    if image.data is not None:
        media_type, data = (image.media_type or "").lower(), image.data
    elif image.url is not None and image.url.startswith(("http://", "https://")):
        return an.ImageBlockParam(an.URLSourceParam(image.url))
    elif image.url is not None and image.url.startswith("data:"):
        media_type, data = _data_url(image.url, path)
    elif image.file_id is not None:
        raise _invalid("Image file ids cannot be sent to Anthropic models; send the image "
                       "as a URL or base64 data.", path)
    else:
        raise _invalid("Image URLs must be http(s) URLs or base64 data URLs.", path)
    if media_type not in _IMAGE_MEDIA_TYPES:
        raise _invalid(
            f"Anthropic models accept images of type {', '.join(sorted(_IMAGE_MEDIA_TYPES))}"
            f"; got {media_type or 'none'}.", path,
        )
    return an.ImageBlockParam(an.Base64SourceParam(media_type=media_type, data=data))


def _document_block(file: File, path: str) -> an.DocumentBlockParam:
    """A file part as a document block: PDF data, plain text or a PDF by URL."""
    title: str | UnsetType = file.filename if file.filename else UNSET
    if file.data is not None:
        media_type, data = (file.media_type or _PDF).lower(), file.data
    elif file.url is not None and file.url.startswith(("http://", "https://")):
        return an.DocumentBlockParam(an.URLSourceParam(file.url), title=title)
    elif file.url is not None and file.url.startswith("data:"):
        media_type, data = _data_url(file.url, path)
    elif file.file_id is not None:
        raise _invalid("File ids cannot be sent to Anthropic models; send the file's data.",
                       path)
    else:
        raise _invalid("A file part needs its data or a URL for Anthropic models.", path)
    if media_type == _PDF:
        return an.DocumentBlockParam(an.Base64SourceParam(media_type=_PDF, data=data),
                                     title=title)
    if media_type == _PLAIN_TEXT:
        try:
            text = base64.b64decode(data, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid("A text/plain file must be base64-encoded UTF-8.", path) from None
        return an.DocumentBlockParam(an.PlainTextSourceParam(data=text), title=title)
    raise _invalid(f"Anthropic models accept PDF and plain-text files; got "
                   f"{media_type or 'none'}.", path)


def _assistant_blocks(m: Message, i: int) -> list[an.ContentBlockParam]:
    blocks: list[an.ContentBlockParam] = []
    j = k = 0  # content part index, tool call index (as a Chat message numbers them)
    for part in m.parts:
        if isinstance(part, ToolCall):
            if part.kind == "custom":
                tool_input: dict[str, object] = {"input": part.arguments}
            else:
                tool_input = _parse_arguments(
                    part.arguments, f"messages[{i}].tool_calls[{k}].function.arguments")
            blocks.append(an.ToolUseBlockParam(id=part.id, name=part.name, input=tool_input))
            k += 1
            continue
        path = f"messages[{i}].content[{j}]"
        j += 1
        if isinstance(part, (Text, Refusal)):
            if part.text:
                blocks.append(an.TextBlockParam(part.text))
        elif isinstance(part, Reasoning):
            # Thinking goes back only to the API that signed it; anything else is dropped.
            if part.source != "messages":
                continue
            if part.redacted:
                blocks.append(an.RedactedThinkingBlockParam(data=part.redacted))
            elif part.signature:
                blocks.append(an.ThinkingBlockParam(thinking=part.text,
                                                    signature=part.signature))
        elif isinstance(part, Opaque):
            raise _refuse_opaque(part)
        else:
            raise _invalid("Assistant messages may only contain text, refusals, reasoning and "
                           "tool calls for Anthropic models.", path)
    return blocks


def _parse_arguments(arguments: str, path: str) -> dict[str, object]:
    if not arguments.strip():
        return {}  # some models emit "" for functions without parameters
    try:
        value = _json_decoder.decode(arguments)
    except msgspec.DecodeError:
        raise _invalid("Tool call arguments are not valid JSON.", path) from None
    if not isinstance(value, dict):
        raise _invalid("Tool call arguments must be a JSON object.", path)
    return value


def _tool_result(result: ToolResult, i: int) -> an.ToolResultBlockParam:
    parts: list[an.ToolResultContentParam] = []
    for k, item in enumerate(result.content):
        path = f"messages[{i}].content[{k}]"
        if isinstance(item, Text):
            if item.text:
                parts.append(an.TextBlockParam(item.text))
        elif isinstance(item, Image):
            parts.append(_image_block(item, path))
        else:
            parts.append(_document_block(item, path))
    content: str | list[an.ToolResultContentParam] | UnsetType = parts or UNSET
    if len(parts) == 1 and isinstance(parts[0], an.TextBlockParam):
        content = parts[0].text
    # An empty result is sent without content: Anthropic rejects empty text.
    return an.ToolResultBlockParam(tool_use_id=result.call_id, content=content,
                                   is_error=True if result.is_error else UNSET)


def _hosted_tool_name(kind: str) -> str | None:
    """"tool:web_search" -> "web_search"; None for a tool that is not a hosted one."""
    if not kind.startswith("tool:") or kind == "tool:custom":
        return None
    return kind[len("tool:"):]


def _tools(specs: list[ToolSpec], options: EncodeOptions,
           dropped: list[str]) -> list[an.ToolParam]:
    tools: list[an.ToolParam] = []
    for spec in specs:
        if isinstance(spec, FunctionTool):
            # `strict` is dropped: not every Claude model supports strict tool schemas.
            schema = spec.parameters if isinstance(spec.parameters, dict) else dict(
                _DEFAULT_SCHEMA)
            tools.append(an.ToolParam(
                name=spec.name, input_schema=schema,
                description=spec.description if spec.description is not None else UNSET,
            ))
            continue
        hosted = _hosted_tool_name(spec.kind)
        if hosted is None:
            raise _invalid(f"Tools of kind '{spec.kind.removeprefix('tool:')}' cannot be sent "
                           "to Anthropic models; use function tools.", spec.path)
        if options.hosted_tools == "drop":
            dropped.append(hosted)
            continue
        raise _invalid(f"The hosted tool '{hosted}' is not available on this model.",
                       spec.path)
    return tools


def _no_parallel(conv: Conversation) -> bool | UnsetType:
    return True if conv.parallel_tool_calls is False else UNSET


def _tool_choice(conv: Conversation, *, has_tools: bool) -> an.ToolChoice | UnsetType:
    choice = conv.tool_choice
    no_parallel = _no_parallel(conv)
    if choice is None:
        if has_tools and no_parallel is True:
            return an.ToolChoiceAuto(disable_parallel_tool_use=True)
        return UNSET
    if isinstance(choice, Opaque):
        raise _invalid("This tool_choice cannot be sent to Anthropic models.", choice.path)
    if not has_tools:
        if choice in ("auto", "none"):
            return UNSET  # nothing to choose from: harmless to drop
        raise _invalid("tool_choice requires tools.", "tool_choice")
    if choice == "auto":
        return an.ToolChoiceAuto(disable_parallel_tool_use=no_parallel)
    if choice == "none":
        return an.ToolChoiceNone()
    if choice == "required":
        return an.ToolChoiceAny(disable_parallel_tool_use=no_parallel)
    return an.ToolChoiceTool(name=choice.name, disable_parallel_tool_use=no_parallel)


def _json_schema_tool(
    spec: JSONSchemaFormat,
    tools: list[an.ToolParam],
    tool_choice: an.ToolChoice | UnsetType,
    conv: Conversation,
) -> tuple[str, an.ToolChoice | UnsetType]:
    """A json_schema response format becomes a tool whose input schema is the schema; the
    model "calls" it with the answer, which becomes the message content. Without other tools
    (or with tool_choice 'none') that tool is forced; with the client's tools the model must
    call some tool ('any'): one of them, or the answer tool; a named choice is kept."""
    schema = spec.schema if isinstance(spec.schema, dict) else dict(_DEFAULT_SCHEMA)
    if schema.get("type", "object") != "object":
        raise _invalid("Anthropic models need a json_schema whose root is an object.",
                       "response_format.json_schema.schema")
    if any(t.name == spec.name for t in tools):
        raise _invalid(f"response_format.json_schema.name '{spec.name}' is also the name of "
                       "a tool.", "response_format.json_schema.name")
    description = spec.description if spec.description is not None else (
        _JSON_TOOL_DESCRIPTION)
    user_tools = bool(tools) and not isinstance(tool_choice, an.ToolChoiceNone)
    if not user_tools:
        tools.clear()
    tools.append(an.ToolParam(name=spec.name, input_schema=schema, description=description))
    if not user_tools:
        return spec.name, an.ToolChoiceTool(name=spec.name)
    if isinstance(tool_choice, an.ToolChoiceTool):
        return spec.name, tool_choice
    return spec.name, an.ToolChoiceAny(disable_parallel_tool_use=_no_parallel(conv))


# --- upstream: the answer ---------------------------------------------------------------

_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    # Anthropic's streaming classifiers stopped the answer: OpenAI's content_filter.
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> FinishReason:
    """Anthropic's stop_reason as the hub's finish reason; unknown reasons read as 'stop'."""
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def hub_usage(
    usage: an.Usage | an.MessageDeltaUsage,
) -> Usage:
    """Anthropic's input_tokens leaves out cache reads and cache writes; the hub counts every
    prompt token in input_tokens, so they are added back."""
    read = usage.cache_read_input_tokens
    write = usage.cache_creation_input_tokens
    details = usage.output_tokens_details
    return Usage(
        input_tokens=(usage.input_tokens or 0) + (read or 0) + (write or 0),
        output_tokens=usage.output_tokens,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
        reasoning_tokens=details.thinking_tokens if details is not None else None,
    )


def decode_result(body: bytes, outbound: Outbound) -> Result:
    """A Messages API answer as a Result. Blocks of unknown types are dropped; the input of
    the json_schema answer tool (``outbound.json_tool``) becomes the answer's text."""
    msg = an.decode_message(body)
    parts: list[Part] = []
    answer: int | None = None
    calls = 0
    for block in msg.content:
        if isinstance(block, an.TextBlock):
            parts.append(Text(text=block.text))
        elif isinstance(block, an.ThinkingBlock):
            parts.append(Reasoning(text=block.thinking, signature=block.signature or None,
                                   source="messages"))
        elif isinstance(block, an.RedactedThinkingBlock):
            parts.append(Reasoning(redacted=block.data, source="messages"))
        elif isinstance(block, an.ToolUseBlock):
            arguments = _compact_json(block.input)
            if outbound.json_tool is not None and block.name == outbound.json_tool:
                answer = len(parts)
                parts.append(Text(text=arguments))
            else:
                calls += 1
                parts.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
    finish = finish_reason(msg.stop_reason)
    if answer is not None:
        # The answer tool's input is the response; any text around it was preamble.
        parts = [p for n, p in enumerate(parts) if n == answer or not isinstance(p, Text)]
        if finish == "tool_calls" and calls == 0:
            finish = "stop"
    return Result(id=msg.id, model=msg.model, parts=parts, finish=finish,
                  usage=hub_usage(msg.usage), stop_sequence=msg.stop_sequence)


class _UsageCounter:
    """Usage across a stream: message_start's counts, then message_delta's cumulative ones
    (its input counts only exist on newer API versions, so what message_start said is kept
    unless a newer number arrives)."""

    __slots__ = ("_cache_read", "_cache_write", "_input", "_known", "_output", "_thinking")

    def __init__(self) -> None:
        self._known = False
        self._input = 0
        self._output = 0
        self._cache_read: int | None = None
        self._cache_write: int | None = None
        self._thinking: int | None = None

    def take(self, usage: an.Usage | an.MessageDeltaUsage) -> None:
        self._known = True
        if usage.input_tokens is not None:
            self._input = usage.input_tokens
        if usage.output_tokens:
            self._output = usage.output_tokens
        if usage.cache_read_input_tokens is not None:
            self._cache_read = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens is not None:
            self._cache_write = usage.cache_creation_input_tokens
        if usage.output_tokens_details is not None:
            self._thinking = usage.output_tokens_details.thinking_tokens

    @property
    def value(self) -> Usage | None:
        if not self._known:
            return None
        return Usage(
            input_tokens=self._input + (self._cache_read or 0) + (self._cache_write or 0),
            output_tokens=self._output,
            cached_input_tokens=self._cache_read,
            cache_write_input_tokens=self._cache_write,
            reasoning_tokens=self._thinking,
        )


_TEXT = -1
_JSON = -2
_THINKING = -3
_IGNORED = -4


class MessagesStreamDecoder:
    """Anthropic stream events in, hub events out, one event at a time. Tool calls are
    numbered 0, 1, ... among tool calls, not by Anthropic's block index; the json_schema
    answer tool's input arrives as text."""

    def __init__(self, outbound: Outbound) -> None:
        self.json_tool = outbound.json_tool
        # Anthropic block index -> tool call index, or _TEXT / _JSON / _THINKING / _IGNORED.
        self._blocks: dict[int, int] = {}
        self._signatures: dict[int, str] = {}
        self._tool_calls = 0
        self._json_used = False
        self._finished = False
        self._done = False
        self._usage = _UsageCounter()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> Usage | None:
        return self._usage.value

    def feed(self, event: bytes, data: bytes) -> list[Event]:
        """One SSE event (its ``event:`` name is not needed: the data says its type).
        Unknown event, block and delta types give no events."""
        try:
            decoded = an.decode_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UpstreamError(f"The upstream stream sent an event that could not be read: "
                                f"{exc}") from None
        if decoded is None:
            return []
        if isinstance(decoded, an.ContentBlockDeltaEvent):  # the common case first
            return self._delta(decoded)
        if isinstance(decoded, an.MessageStartEvent):
            msg = decoded.message
            self._usage.take(msg.usage)
            return [Start(id=msg.id, model=msg.model, usage=self._usage.value)]
        if isinstance(decoded, an.ContentBlockStartEvent):
            return self._block_start(decoded)
        if isinstance(decoded, an.ContentBlockStopEvent):
            return self._block_stop(decoded.index)
        if isinstance(decoded, an.MessageDeltaEvent):
            self._usage.take(decoded.usage)
            out: list[Event] = []
            usage = self._usage.value
            if usage is not None:
                out.append(UsageUpdate(usage=usage))
            if decoded.delta.stop_reason is not None and not self._finished:
                out.append(self._finish(decoded.delta.stop_reason,
                                        decoded.delta.stop_sequence))
            return out
        if isinstance(decoded, an.MessageStopEvent):
            self._done = True
            return [] if self._finished else [self._finish(None, None)]
        if isinstance(decoded, an.ErrorEvent):
            raise error_from_event(decoded.error)
        return []  # ping

    def _block_start(self, event: an.ContentBlockStartEvent) -> list[Event]:
        block = event.content_block
        if isinstance(block, an.TextBlock):
            self._blocks[event.index] = _TEXT
            return [TextDelta(text=block.text)] if block.text else []
        if isinstance(block, an.ToolUseBlock):
            if self.json_tool is not None and block.name == self.json_tool:
                self._blocks[event.index] = _JSON
                self._json_used = True
                return []
            index = self._tool_calls
            self._tool_calls += 1
            self._blocks[event.index] = index
            # The input arrives as input_json_delta events; the start carries {}.
            return [ToolCallStart(index=index, id=block.id, name=block.name)]
        if isinstance(block, an.ThinkingBlock):
            self._blocks[event.index] = _THINKING
            if block.signature:
                self._signatures[event.index] = block.signature
            return [ReasoningDelta(text=block.thinking)] if block.thinking else []
        if isinstance(block, an.RedactedThinkingBlock):
            self._blocks[event.index] = _IGNORED
            return [ReasoningEnd(redacted=block.data, source="messages")]
        self._blocks[event.index] = _IGNORED  # blocks a request cannot have (tool_result)
        return []

    def _delta(self, event: an.ContentBlockDeltaEvent) -> list[Event]:
        kind = self._blocks.get(event.index, _IGNORED)
        delta = event.delta
        if isinstance(delta, an.TextDelta):
            return [TextDelta(text=delta.text)] if kind == _TEXT and delta.text else []
        if isinstance(delta, an.InputJSONDelta):
            if not delta.partial_json:
                return []
            if kind == _JSON:
                return [TextDelta(text=delta.partial_json)]
            if kind >= 0:
                return [ToolCallDelta(index=kind, arguments=delta.partial_json)]
            return []
        if kind != _THINKING:
            return []
        if isinstance(delta, an.ThinkingDelta):
            return [ReasoningDelta(text=delta.thinking)] if delta.thinking else []
        self._signatures[event.index] = delta.signature
        return []

    def _block_stop(self, index: int) -> list[Event]:
        kind = self._blocks.get(index, _IGNORED)
        if kind >= 0:
            return [ToolCallEnd(index=kind)]
        if kind == _THINKING:
            return [ReasoningEnd(signature=self._signatures.pop(index, None),
                                 source="messages")]
        return []

    def _finish(self, stop_reason: str | None, stop_sequence: str | None) -> Finish:
        self._finished = True
        reason = finish_reason(stop_reason)
        if reason == "tool_calls" and self._json_used and self._tool_calls == 0:
            reason = "stop"
        return Finish(reason=reason, stop_sequence=stop_sequence)


# --- upstream: errors -------------------------------------------------------------------


class AnthropicAPIError(GatewayError):
    """An error Anthropic answered with, in OpenAI's shape. ``upstream_status`` and
    ``upstream_type`` keep what Anthropic said (529 / overloaded_error, ...), so that an
    Anthropic-shape front door can say it back as it was."""

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
    Only the body is read, never request headers."""
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
    return _make_error(status, error.type, redact(message))


# --- front door: the request ------------------------------------------------------------

# Anthropic's output_config.effort as OpenAI's reasoning effort ("max" has no equal).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh",
            "max": "xhigh"}
_SERVER_TOOL_DATE = re.compile(r"_\d{8}$")


def _effort_for_budget(budget: int) -> str:
    """The reasoning effort whose budget (REASONING_BUDGETS) is nearest from below."""
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    if budget < 32768:
        return "high"
    return "xhigh"


def _set(value: object) -> bool:
    return value is not UNSET and value is not None


def to_conversation(typed: object) -> Conversation:
    """A /v1/messages (or count_tokens) request as a Conversation. Consecutive turns of one
    role stay separate messages (the API merges them; so do the other dialects' encoders).
    Blocks, tools and fields the hub does not model become Opaque, refused by an encoder
    that cannot send them. Raises InvalidRequest naming the field for a request the
    Messages API itself would refuse (no messages, a tool_result without its tool_use)."""
    if not isinstance(typed, (an.CreateMessageRequest, an.CountTokensRequest)):
        raise TypeError(f"expected a CreateMessageRequest, got {type(typed).__name__}")
    req = typed
    if not req.messages:
        raise _invalid("messages: at least one message is required.", "messages")
    messages: list[Message] = []
    if isinstance(req.system, str):
        if req.system:
            messages.append(Message(role="system", parts=[Text(text=req.system)]))
    elif isinstance(req.system, list):
        system: list[Part] = [Text(text=b.text) for b in req.system if b.text]
        if system:
            messages.append(Message(role="system", parts=system))
    calls: set[str] = set()
    for i, m in enumerate(req.messages):
        messages.extend(_front_messages(m, i, calls))

    unsupported: list[Opaque] = []
    if isinstance(req.mcp_servers, list) and req.mcp_servers:
        unsupported.append(Opaque(kind="mcp_servers", path="mcp_servers",
                                  value=req.mcp_servers))
    output_effort: str | None = None
    output_format: JSONSchemaFormat | None = None
    oc = req.output_config
    if isinstance(oc, an.OutputConfigParam):
        if isinstance(oc.effort, str):
            output_effort = _EFFORTS.get(oc.effort, oc.effort)
        if isinstance(oc.format, an.JSONOutputFormatParam):
            output_format = JSONSchemaFormat(name="response", schema=oc.format.schema)
    reasoning = _front_reasoning(req.thinking, output_effort)
    tools = _front_tools(req.tools)
    tool_choice, parallel = _front_tool_choice(req.tool_choice)

    conv = Conversation(messages=messages, tools=tools, tool_choice=tool_choice,
                        parallel_tool_calls=parallel, output_format=output_format,
                        reasoning=reasoning, unsupported=unsupported)
    if isinstance(req, an.CreateMessageRequest):
        conv.max_output_tokens = req.max_tokens
        conv.temperature = req.temperature if isinstance(req.temperature, float) else None
        conv.top_p = req.top_p if isinstance(req.top_p, float) else None
        conv.top_k = req.top_k if isinstance(req.top_k, int) else None
        conv.stop = list(req.stop_sequences) if isinstance(req.stop_sequences, list) else []
        conv.stream = req.stream is True
        metadata = req.metadata
        if isinstance(metadata, an.MetadataParam) and isinstance(metadata.user_id, str):
            conv.user = metadata.user_id
        if isinstance(req.service_tier, str):
            # "standard_only" asks for no priority capacity: OpenAI's default tier.
            conv.service_tier = (
                "default" if req.service_tier == "standard_only" else req.service_tier)
        if _set(req.container):
            # Code execution's container lives at Anthropic: nowhere else to send it.
            unsupported.append(Opaque(kind="container", path="container",
                                      value=req.container))
    return conv


def _front_reasoning(
    thinking: an.ThinkingConfigParam | UnsetType | None, effort: str | None
) -> ReasoningConfig | None:
    if isinstance(thinking, an.ThinkingEnabledParam):
        return ReasoningConfig(effort=effort or _effort_for_budget(thinking.budget_tokens),
                               budget_tokens=thinking.budget_tokens,
                               summary="auto" if thinking.display == "summarized" else None)
    if isinstance(thinking, an.ThinkingAdaptiveParam):
        return ReasoningConfig(effort=effort, adaptive=True,
                               summary="auto" if thinking.display == "summarized" else None)
    if isinstance(thinking, an.ThinkingBetweenToolsParam):
        return ReasoningConfig(effort=effort, adaptive=True)
    if isinstance(thinking, an.ThinkingDisabledParam):
        return ReasoningConfig(enabled=False)
    return ReasoningConfig(effort=effort) if effort is not None else None


def _front_messages(m: an.InputMessage, i: int, calls: set[str]) -> list[Message]:
    blocks: list[an.ContentBlockParam] = (
        [an.TextBlockParam(m.content)] if isinstance(m.content, str) else m.content)
    if m.role == "system":
        texts: list[Part] = []
        for j, block in enumerate(blocks):
            if not isinstance(block, an.TextBlockParam):
                raise _invalid("System messages may only contain text blocks.",
                               f"messages[{i}].content[{j}]")
            if block.text:
                texts.append(Text(text=block.text))
        return [Message(role="system", parts=texts)] if texts else []
    if m.role == "assistant":
        parts: list[Part] = []
        for j, block in enumerate(blocks):
            if isinstance(block, an.ToolUseBlockParam):
                calls.add(block.id)
            parts.extend(_front_parts(block, f"messages[{i}].content[{j}]"))
        return [Message(role="assistant", parts=parts)] if parts else []
    # A user turn: its tool results become tool messages, in order with the other content.
    out: list[Message] = []
    for j, block in enumerate(blocks):
        path = f"messages[{i}].content[{j}]"
        if isinstance(block, an.ToolResultBlockParam):
            if block.tool_use_id not in calls:
                raise _invalid(
                    f"tool_result block references tool_use id '{block.tool_use_id}', which "
                    "no earlier assistant message has.", f"{path}.tool_use_id")
            role: Literal["user", "tool"] = "tool"
            parts = _front_tool_result(block, path)
        else:
            role = "user"
            parts = _front_parts(block, path)
        if not parts:
            continue
        if out and out[-1].role == role:
            out[-1].parts.extend(parts)
        else:
            out.append(Message(role=role, parts=parts))
    return out


def _opaque(block: an.ContentBlockParam | an.ToolResultContentParam, path: str) -> Opaque:
    if isinstance(block, an.UnknownBlockParam):
        return Opaque(kind=block.block_type, path=path, value=block.value)
    value = msgspec.to_builtins(block)
    kind = value.get("type", "block") if isinstance(value, dict) else "block"
    return Opaque(kind=str(kind), path=path, value=value)


def _front_image(block: an.ImageBlockParam) -> Image:
    source = block.source
    if isinstance(source, an.Base64SourceParam):
        return Image(data=source.data, media_type=source.media_type)
    if isinstance(source, an.URLSourceParam):
        return Image(url=source.url)
    return Image(file_id=source.file_id)


def _front_document(block: an.DocumentBlockParam) -> list[Part]:
    source = block.source
    filename = block.title if isinstance(block.title, str) else None
    if isinstance(source, an.Base64SourceParam):
        return [File(data=source.data, media_type=source.media_type, filename=filename)]
    if isinstance(source, an.PlainTextSourceParam):
        return [Text(text=source.data)]
    if isinstance(source, an.ContentSourceParam):
        if isinstance(source.content, str):
            return [Text(text=source.content)]
        return [Text(text=b.text) if isinstance(b, an.TextBlockParam) else _front_image(b)
                for b in source.content]
    if isinstance(source, an.URLSourceParam):
        return [File(url=source.url, media_type=_PDF, filename=filename)]
    return [File(file_id=source.file_id, filename=filename)]


def _search_result_text(block: an.SearchResultBlockParam) -> Text:
    body = "\n\n".join(t.text for t in block.content)
    return Text(text=f"{block.title} ({block.source})\n\n{body}")


def _front_parts(block: an.ContentBlockParam, path: str) -> list[Part]:
    if isinstance(block, an.TextBlockParam):
        return [Text(text=block.text)] if block.text else []
    if isinstance(block, an.ImageBlockParam):
        return [_front_image(block)]
    if isinstance(block, an.DocumentBlockParam):
        return _front_document(block)
    if isinstance(block, an.SearchResultBlockParam):
        return [_search_result_text(block)]
    if isinstance(block, an.ThinkingBlockParam):
        return [Reasoning(text=block.thinking, signature=block.signature or None,
                          source="messages")]
    if isinstance(block, an.RedactedThinkingBlockParam):
        return [Reasoning(redacted=block.data, source="messages")]
    if isinstance(block, an.ToolUseBlockParam):
        return [ToolCall(id=block.id, name=block.name, arguments=_compact_json(block.input))]
    if isinstance(block, an.ToolResultBlockParam):
        # Only valid in user turns; in an assistant turn it is something no dialect can say.
        return [_opaque(block, path)]
    return [_opaque(block, path)]  # server tool use and results, unknown block types


def _front_tool_result(block: an.ToolResultBlockParam, path: str) -> list[Part]:
    """The ToolResult, followed by an Opaque for each content item the hub cannot carry in
    a tool result (so that an encoder refuses it, naming it)."""
    content: list[Text | Image | File] = []
    extra: list[Part] = []
    items = block.content
    if isinstance(items, str):
        if items:
            content.append(Text(text=items))
    elif isinstance(items, list):
        for k, item in enumerate(items):
            if isinstance(item, an.TextBlockParam):
                if item.text:
                    content.append(Text(text=item.text))
            elif isinstance(item, an.ImageBlockParam):
                content.append(_front_image(item))
            elif isinstance(item, an.DocumentBlockParam):
                for part in _front_document(item):
                    if isinstance(part, (Text, Image, File)):
                        content.append(part)
            elif isinstance(item, an.SearchResultBlockParam):
                content.append(_search_result_text(item))
            else:
                extra.append(_opaque(item, f"{path}.content[{k}]"))
    result = ToolResult(call_id=block.tool_use_id, content=content,
                        is_error=block.is_error is True)
    return [result, *extra]


def _front_tools(tools: list[an.ToolParam] | UnsetType | None) -> list[ToolSpec]:
    if not isinstance(tools, list):
        return []
    out: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        if not tool.is_custom:
            kind = _SERVER_TOOL_DATE.sub("", str(tool.type))
            out.append(Opaque(kind=f"tool:{kind}", path=f"tools[{i}]",
                              value=msgspec.to_builtins(tool)))
            continue
        if not isinstance(tool.input_schema, dict):
            raise _invalid("A custom tool needs an input_schema.", f"tools[{i}].input_schema")
        out.append(FunctionTool(
            name=tool.name, parameters=tool.input_schema,
            description=tool.description if isinstance(tool.description, str) else None,
            strict=tool.strict if isinstance(tool.strict, bool) else None,
        ))
    return out


def _front_tool_choice(
    choice: an.ToolChoice | UnsetType | None,
) -> tuple[ToolChoice | None, bool | None]:
    if isinstance(choice, an.ToolChoiceNone):
        return "none", None
    if not isinstance(choice, (an.ToolChoiceAuto, an.ToolChoiceAny, an.ToolChoiceTool)):
        return None, None
    parallel = False if choice.disable_parallel_tool_use is True else None
    if isinstance(choice, an.ToolChoiceAuto):
        return "auto", parallel
    if isinstance(choice, an.ToolChoiceAny):
        return "required", parallel
    return NamedToolChoice(name=choice.name), parallel


# --- front door: the answer -------------------------------------------------------------

_STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
}


def _stop_reason(finish: FinishReason, stop_sequence: str | None) -> str:
    if finish == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(finish, "end_turn")


def _message_id(result_id: str) -> str:
    return result_id if result_id.startswith("msg_") else f"msg_{result_id}"


def _new_message_id() -> str:
    return "msg_" + os.urandom(12).hex()


def _anthropic_usage(usage: Usage | None) -> an.Usage:
    """Anthropic's input_tokens excludes cache reads and writes; the hub's includes them."""
    if usage is None:
        return an.Usage(input_tokens=0, output_tokens=0, cache_creation_input_tokens=0,
                        cache_read_input_tokens=0)
    read = usage.cached_input_tokens or 0
    write = usage.cache_write_input_tokens or 0
    return an.Usage(
        input_tokens=max(usage.input_tokens - read - write, 0),
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=write,
        cache_read_input_tokens=read,
        output_tokens_details=(an.OutputTokensDetails(thinking_tokens=usage.reasoning_tokens)
                               if usage.reasoning_tokens is not None else None),
    )


def _tool_input(call: ToolCall) -> dict[str, object]:
    """The JSON arguments of a call as tool_use input. Custom (free-form) input is wrapped
    as {"input": text}; arguments that are not a JSON object (a model's slip) become {}."""
    if call.kind == "custom":
        return {"input": call.arguments}
    if not call.arguments.strip():
        return {}
    try:
        value = _json_decoder.decode(call.arguments)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _content_blocks(parts: list[Part]) -> list[an.ContentBlock]:
    blocks: list[an.ContentBlock] = []
    for part in parts:
        if isinstance(part, (Text, Refusal)):
            if part.text:
                blocks.append(an.TextBlock(part.text))
        elif isinstance(part, Reasoning):
            if part.redacted:
                blocks.append(an.RedactedThinkingBlock(part.redacted))
            elif part.text or part.summary or part.signature:
                text = part.text or "\n\n".join(part.summary)
                # Only Anthropic's own signature is passed on; other reasoning comes with an
                # empty one, which is never sent back upstream (see _assistant_blocks).
                signature = part.signature if part.source == "messages" else None
                blocks.append(an.ThinkingBlock(text, signature or ""))
        elif isinstance(part, ToolCall):
            blocks.append(an.ToolUseBlock(part.id, part.name, _tool_input(part)))
    return blocks


def encode_result(result: Result, request: LLMRequest) -> bytes:
    """A Result as an Anthropic ``message`` JSON body."""
    return _encode(an.Message(
        id=_message_id(result.id),
        model=result.model or request.model,
        content=_content_blocks(result.parts),
        stop_reason=_stop_reason(result.finish, result.stop_sequence),
        stop_sequence=result.stop_sequence,
        usage=_anthropic_usage(result.usage),
    ))


def _sse(event: msgspec.Struct, name: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(event) + b"\n\n"


class MessagesStreamEncoder:
    """Hub events in, Anthropic SSE events out, in the order the anthropic SDK's
    MessageStream accumulates: message_start, then content blocks (start, deltas, stop),
    then message_delta and message_stop on close(): an OpenAI upstream sends its usage after
    its finish chunk, so the stop reason waits until the stream has ended."""

    def __init__(self, request: LLMRequest) -> None:
        self._model = request.model
        self._started = False
        self._closed = False
        self._next = 0  # the next block index
        self._open: int | None = None  # the index of the open block
        self._open_kind: Literal["text", "thinking", "tool"] | None = None
        self._tools: dict[int, int] = {}  # tool call index -> block index
        self._custom: dict[int, list[str]] = {}  # custom tool call index -> input so far
        self._ended: set[int] = set()
        self._finish: FinishReason = "stop"
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None

    def _start(self, id: str | None, model: str | None, usage: Usage | None) -> list[bytes]:
        self._started = True
        self._usage = usage
        anthropic = _anthropic_usage(usage)
        message = an.Message(id=_message_id(id) if id else _new_message_id(),
                             model=model or self._model, usage=anthropic)
        return [_sse(an.MessageStartEvent(message), b"message_start")]

    def _begin(self, kind: Literal["text", "thinking", "tool"],
               block: an.ContentBlock) -> list[bytes]:
        out = self._stop_open()
        index = self._next
        self._next += 1
        self._open, self._open_kind = index, kind
        out.append(_sse(an.ContentBlockStartEvent(index, block), b"content_block_start"))
        return out

    def _stop_open(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [_sse(an.ContentBlockStopEvent(index), b"content_block_stop")]

    def _delta(self, index: int, delta: an.BlockDelta) -> bytes:
        return _sse(an.ContentBlockDeltaEvent(index, delta), b"content_block_delta")

    def feed(self, event: Event) -> list[bytes]:
        if self._closed:
            return []
        out: list[bytes] = []
        if isinstance(event, Start):
            return [] if self._started else self._start(event.id, event.model, event.usage)
        if not self._started:
            out = self._start(None, None, None)
        if isinstance(event, (TextDelta, RefusalDelta)):
            if not event.text:
                return out
            if self._open_kind != "text":
                out += self._begin("text", an.TextBlock(""))
            assert self._open is not None
            out.append(self._delta(self._open, an.TextDelta(event.text)))
        elif isinstance(event, ReasoningDelta):
            if not event.text:
                return out
            if self._open_kind != "thinking":
                out += self._begin("thinking", an.ThinkingBlock("", ""))
            assert self._open is not None
            out.append(self._delta(self._open, an.ThinkingDelta(event.text)))
        elif isinstance(event, ReasoningEnd):
            out += self._reasoning_end(event)
        elif isinstance(event, ToolCallStart):
            out += self._begin("tool", an.ToolUseBlock(event.id, event.name, {}))
            assert self._open is not None
            self._tools[event.index] = self._open
            if event.kind == "custom":
                self._custom[event.index] = []
        elif isinstance(event, ToolCallDelta):
            block = self._tools.get(event.index)
            if block is None or not event.arguments:
                return out
            if event.index in self._custom:
                self._custom[event.index].append(event.arguments)
            else:
                out.append(self._delta(block, an.InputJSONDelta(event.arguments)))
        elif isinstance(event, ToolCallEnd):
            out += self._tool_end(event.index)
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason
            self._stop_sequence = event.stop_sequence
            out += self._end_tools()
            out += self._stop_open()
        return out

    def _reasoning_end(self, event: ReasoningEnd) -> list[bytes]:
        signature = event.signature if event.source == "messages" else None
        if self._open_kind == "thinking":
            assert self._open is not None
            out = [self._delta(self._open, an.SignatureDelta(signature))] if signature else []
            return out + self._stop_open()
        if event.redacted and event.source == "messages":
            return self._begin("thinking", an.RedactedThinkingBlock(event.redacted)) + (
                self._stop_open())
        if signature:  # a signed thinking block without text
            out = self._begin("thinking", an.ThinkingBlock("", ""))
            assert self._open is not None
            return out + [self._delta(self._open, an.SignatureDelta(signature))] + (
                self._stop_open())
        return []

    def _tool_end(self, index: int) -> list[bytes]:
        block = self._tools.get(index)
        if block is None or index in self._ended:
            return []
        self._ended.add(index)
        out: list[bytes] = []
        if index in self._custom:
            text = "".join(self._custom.pop(index))
            out.append(self._delta(block, an.InputJSONDelta(_compact_json({"input": text}))))
        if self._open == block:
            out += self._stop_open()
        return out

    def _end_tools(self) -> list[bytes]:
        out: list[bytes] = []
        for index in list(self._tools):
            out += self._tool_end(index)
        return out

    def close(self) -> list[bytes]:
        if self._closed:
            return []
        out = [] if self._started else self._start(None, None, None)
        out += self._end_tools()
        out += self._stop_open()
        self._closed = True
        usage = _anthropic_usage(self._usage)
        delta_usage = an.MessageDeltaUsage(
            output_tokens=usage.output_tokens,
            input_tokens=usage.input_tokens if self._usage is not None else None,
            cache_creation_input_tokens=(usage.cache_creation_input_tokens
                                         if self._usage is not None else None),
            cache_read_input_tokens=(usage.cache_read_input_tokens
                                     if self._usage is not None else None),
            output_tokens_details=usage.output_tokens_details,
        )
        delta = an.MessageDelta(stop_reason=_stop_reason(self._finish, self._stop_sequence),
                                stop_sequence=self._stop_sequence)
        out.append(_sse(an.MessageDeltaEvent(delta, delta_usage), b"message_delta"))
        out.append(_sse(an.MessageStopEvent(), b"message_stop"))
        return out

    def fail(self, error: GatewayError) -> list[bytes]:
        self._closed = True
        return [b"event: error\ndata: " + error_body(error) + b"\n\n"]


# --- front door: errors -----------------------------------------------------------------

# The status a gateway error has -> the Anthropic error type a client expects for it.
_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _ErrorOut(msgspec.Struct):
    type: str
    message: str


class _ErrorBodyOut(msgspec.Struct, tag="error", tag_field="type"):
    error: _ErrorOut


def error_type(error: GatewayError) -> str:
    """The Anthropic error type for a gateway error: what Anthropic itself said when the
    error came from an Anthropic upstream, else by status."""
    upstream = getattr(error, "upstream_type", None)
    if isinstance(upstream, str) and upstream in _ERROR_TYPES:
        return upstream
    found = _STATUS_ERROR_TYPES.get(error.status)
    if found is not None:
        return found
    return "invalid_request_error" if 400 <= error.status < 500 else "api_error"


def error_status(error: GatewayError) -> int:
    """The HTTP status the /v1/messages route answers with: Anthropic's own 529 for an
    overloaded error (an Anthropic upstream's 529, which OpenAI-shape clients see as 503, or
    the gateway's 503), which the anthropic SDK and Claude Code retry; else the error's."""
    return 529 if error_type(error) == "overloaded_error" else error.status


def error_body(error: GatewayError) -> bytes:
    """``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return _encode(_ErrorBodyOut(_ErrorOut(error_type(error), error.message)))


# --- native passthrough -----------------------------------------------------------------


class _UsageOnly(msgspec.Struct):
    usage: an.Usage | None = None


class _StartUsage(msgspec.Struct):
    message: _UsageOnly


class _DeltaUsage(msgspec.Struct):
    usage: an.MessageDeltaUsage | None = None


class _TypeOnly(msgspec.Struct):
    type: str = ""


_usage_only_decoder = msgspec.json.Decoder(_UsageOnly)
_start_usage_decoder = msgspec.json.Decoder(_StartUsage)
_delta_usage_decoder = msgspec.json.Decoder(_DeltaUsage)
_type_decoder = msgspec.json.Decoder(_TypeOnly)
_error_event_decoder = msgspec.json.Decoder(an.ErrorEvent)


def native_body(raw: dict[str, object], *, model: str, stream: bool) -> bytes:
    """The client's body with only the model replaced (and the stream flag as routed)."""
    body = dict(raw)
    body["model"] = model
    if stream:
        body["stream"] = True
    elif body.get("stream"):
        body["stream"] = False
    return _encode(body)


def native_usage(body: bytes) -> Usage | None:
    try:
        usage = _usage_only_decoder.decode(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return hub_usage(usage) if usage is not None else None


class MessagesNativeRelay:
    """Forwards each Anthropic stream event unchanged, reading usage from message_start and
    message_delta on the way; message_stop ends the stream, an error event raises."""

    def __init__(self) -> None:
        self._done = False
        self._usage = _UsageCounter()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> Usage | None:
        return self._usage.value

    def relay(self, event: bytes, data: bytes) -> bytes | None:
        kind = event
        if not kind:
            try:
                kind = _type_decoder.decode(data).type.encode()
            except (msgspec.DecodeError, msgspec.ValidationError):
                kind = b""
        if kind == b"message_start":
            self._take(_start_usage_decoder, data)
        elif kind == b"message_delta":
            self._take(_delta_usage_decoder, data)
        elif kind == b"message_stop":
            self._done = True
        elif kind == b"error":
            try:
                error = _error_event_decoder.decode(data).error
            except (msgspec.DecodeError, msgspec.ValidationError):
                error = an.ErrorObject(type="api_error", message=data.decode(errors="replace"))
            raise error_from_event(error)
        head = b"event: " + event + b"\n" if event else b""
        return head + b"data: " + data + b"\n\n"

    def _take(
        self, decoder: msgspec.json.Decoder[_StartUsage] | msgspec.json.Decoder[_DeltaUsage],
        data: bytes,
    ) -> None:
        # A usage the relay cannot read must not break a stream the client can.
        try:
            decoded = decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        usage = decoded.message.usage if isinstance(decoded, _StartUsage) else decoded.usage
        if usage is not None:
            self._usage.take(usage)


# --- the dialect ------------------------------------------------------------------------


class MessagesDialect:
    """The Anthropic Messages API as a front door, an upstream and a native passthrough."""

    @property
    def name(self) -> DialectName:
        return "messages"

    def to_conversation(self, typed: object) -> Conversation:
        return to_conversation(typed)

    def encode_result(self, result: Result, request: LLMRequest) -> bytes:
        return encode_result(result, request)

    def stream_encoder(self, request: LLMRequest) -> MessagesStreamEncoder:
        return MessagesStreamEncoder(request)

    def error_body(self, error: GatewayError) -> bytes:
        return error_body(error)

    def encode_request(
        self, conversation: Conversation, *, model: str, stream: bool, options: EncodeOptions
    ) -> Outbound:
        return encode_request(conversation, model=model, stream=stream, options=options)

    def decode_result(self, body: bytes, outbound: Outbound) -> Result:
        return decode_result(body, outbound)

    def stream_decoder(self, outbound: Outbound) -> MessagesStreamDecoder:
        return MessagesStreamDecoder(outbound)

    def error_from(self, status: int, body: bytes, provider: str) -> GatewayError:
        error = error_from_anthropic(status, body)
        error.message = redact(error.message)
        return error

    def native_body(self, raw: dict[str, object], *, model: str, stream: bool) -> bytes:
        return native_body(raw, model=model, stream=stream)

    def native_usage(self, body: bytes) -> Usage | None:
        return native_usage(body)

    def native_relay(self, request: LLMRequest) -> MessagesNativeRelay:
        return MessagesNativeRelay()


MESSAGES = MessagesDialect()

if TYPE_CHECKING:
    _dialect: Dialect = MESSAGES
