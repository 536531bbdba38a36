"""One stream vocabulary for every dialect: a provider's stream decoder turns upstream SSE
events into these, a front door's stream encoder turns these into its own SSE events.

Order within a stream: ``Start`` first; then any number of content events (a text, refusal
or reasoning run is ended by the next event of another kind or by its explicit end; tool
calls by ``ToolCallEnd`` or the next block); ``UsageUpdate`` whenever counts arrive; then
``Finish`` once. Upstream failures are raised as ``GatewayError``, not sent as events."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway_llm.hub.conversation import (
    FinishReason,
    Reasoning,
    Refusal,
    Result,
    Text,
    ToolCall,
    Usage,
)

__all__ = [
    "Event",
    "Finish",
    "ReasoningDelta",
    "ReasoningEnd",
    "RefusalDelta",
    "Start",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "UsageUpdate",
    "result_events",
]


class Start(msgspec.Struct, tag="start", kw_only=True):
    id: str
    model: str
    usage: Usage | None = None  # input counts, where the upstream says them up front
    created: int = 0


class TextDelta(msgspec.Struct, tag="text_delta", kw_only=True):
    text: str


class RefusalDelta(msgspec.Struct, tag="refusal_delta", kw_only=True):
    text: str


class ReasoningDelta(msgspec.Struct, tag="reasoning_delta", kw_only=True):
    text: str
    summary: bool = False  # a summary of reasoning (Responses) rather than its text


class ReasoningEnd(msgspec.Struct, tag="reasoning_end", kw_only=True):
    """Closes a reasoning run, with the opaque data that lets it be sent back later."""

    signature: str | None = None
    redacted: str | None = None
    encrypted_content: str | None = None
    item_id: str | None = None
    source: Literal["chat", "responses", "messages"] | None = None


class ToolCallStart(msgspec.Struct, tag="tool_call_start", kw_only=True):
    index: int  # 0, 1, ... among this answer's tool calls
    id: str
    name: str
    kind: Literal["function", "custom"] = "function"
    item_id: str | None = None


class ToolCallDelta(msgspec.Struct, tag="tool_call_delta", kw_only=True):
    index: int
    arguments: str


class ToolCallEnd(msgspec.Struct, tag="tool_call_end", kw_only=True):
    index: int


class UsageUpdate(msgspec.Struct, tag="usage", kw_only=True):
    usage: Usage  # cumulative: replaces what was known before


class Finish(msgspec.Struct, tag="finish", kw_only=True):
    reason: FinishReason
    stop_sequence: str | None = None


Event = (Start | TextDelta | RefusalDelta | ReasoningDelta | ReasoningEnd | ToolCallStart
         | ToolCallDelta | ToolCallEnd | UsageUpdate | Finish)


def result_events(result: Result) -> list[Event]:
    """A finished answer as the stream that would have produced it (for an upstream that
    answered a streamed request with a whole body)."""
    events: list[Event] = [Start(id=result.id, model=result.model, created=result.created)]
    calls = 0
    for part in result.parts:
        if isinstance(part, Text):
            if part.text:
                events.append(TextDelta(text=part.text))
        elif isinstance(part, Refusal):
            events.append(RefusalDelta(text=part.text))
        elif isinstance(part, Reasoning):
            if part.text:
                events.append(ReasoningDelta(text=part.text))
            for summary in part.summary:
                events.append(ReasoningDelta(text=summary, summary=True))
            events.append(ReasoningEnd(signature=part.signature, redacted=part.redacted,
                                       encrypted_content=part.encrypted_content,
                                       item_id=part.item_id, source=part.source))
        elif isinstance(part, ToolCall):
            events.append(ToolCallStart(index=calls, id=part.id, name=part.name,
                                        kind=part.kind, item_id=part.item_id))
            if part.arguments:
                events.append(ToolCallDelta(index=calls, arguments=part.arguments))
            events.append(ToolCallEnd(index=calls))
            calls += 1
    events.append(Finish(reason=result.finish, stop_sequence=result.stop_sequence))
    if result.usage is not None:
        events.append(UsageUpdate(usage=result.usage))
    return events
