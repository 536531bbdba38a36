"""The translation hub: one internal conversation form and one stream vocabulary between
every front door and every provider dialect."""

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
    OutputFormat,
    Part,
    Reasoning,
    ReasoningConfig,
    Refusal,
    Result,
    Role,
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
    NativeRelay,
    Outbound,
    StreamDecoder,
    StreamEncoder,
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
    result_events,
)

__all__ = [
    "Conversation", "Dialect", "DialectName", "EncodeOptions", "Event", "File", "Finish",
    "FinishReason", "FunctionTool", "Image", "JSONSchemaFormat", "LLMRequest", "Message",
    "NamedToolChoice", "NativeRelay", "Opaque", "Outbound", "OutputFormat", "Part",
    "Reasoning", "ReasoningConfig", "ReasoningDelta", "ReasoningEnd", "Refusal",
    "RefusalDelta", "Result", "Role", "Start", "StreamDecoder", "StreamEncoder", "Text",
    "TextDelta", "ToolCall", "ToolCallDelta", "ToolCallEnd", "ToolCallStart", "ToolChoice",
    "ToolResult", "ToolSpec", "Usage", "UsageUpdate", "result_events",
]
