"""The Anthropic Messages dialect, table-style, on the examples of the Messages API reference
(https://docs.anthropic.com/en/api/messages, .../build-with-claude/streaming, .../api/errors)
and the anthropic SDK's own types: as an upstream behind the Chat Completions front door
(chat request -> CHAT.to_conversation -> MESSAGES.encode_request; answers and streams back
through CHAT), as the /v1/messages front door (what the anthropic SDK makes of our JSON and
SSE), and as a native passthrough."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import msgspec
import pydantic
import pytest
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion as SDKChatCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from gateway_core import anthropic_types as an
from gateway_core import openai_types as oa
from gateway_core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway_llm.dialects.chat import CHAT
from gateway_llm.dialects.messages import (
    MESSAGES,
    AnthropicAPIError,
    error_from_anthropic,
    error_status,
)
from gateway_llm.hub import (
    Conversation,
    EncodeOptions,
    Event,
    File,
    Finish,
    FunctionTool,
    Image,
    JSONSchemaFormat,
    LLMRequest,
    Message,
    NamedToolChoice,
    Opaque,
    Outbound,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    ReasoningEnd,
    Result,
    Start,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    Usage,
    UsageUpdate,
)

MODEL = "claude-sonnet-4-20250514"
OPTIONS = EncodeOptions()
create_params = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)


def sent(conv: Conversation, *, stream: bool = False,
         options: EncodeOptions = OPTIONS) -> tuple[dict[str, Any], Outbound]:
    """The JSON MESSAGES would send upstream for a conversation, and its Outbound."""
    out = MESSAGES.encode_request(conv, model=MODEL, stream=stream, options=options)
    body: dict[str, Any] = json.loads(out.body)
    return body, out


def user(*parts: Any) -> Message:
    return Message(role="user", parts=list(parts))


HELLO = [user(Text(text="Hello!"))]


def front(body: dict[str, Any]) -> Conversation:
    """A /v1/messages body decoded as the route does, as a Conversation."""
    return MESSAGES.to_conversation(an.decode_create_message(json.dumps(body).encode()))


def front_request(body: dict[str, Any] | None = None, *, stream: bool = False) -> LLMRequest:
    raw = body or {"model": "claude-alias", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Hi"}]}
    return LLMRequest(dialect=MESSAGES, model=str(raw["model"]),
                      typed=an.convert_create_message(raw), raw=raw, stream=stream)


# === the front door: what clients send ==================================================

# A Claude Code-like turn: cached system blocks, a signed thinking block, parallel tool use
# answered by string, block and error results, a custom and a server tool.
CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Work in /repo.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "List the files, then read a.py",
                                      "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two tools.", "signature": "EqQBsig"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01", "name": "Bash",
             "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_02", "name": "Read",
             "input": {"file_path": "a.py"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.py\nb.py"},
            {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": True,
             "content": [{"type": "text", "text": "permission denied"}]},
            {"type": "text", "text": "Go on."},
        ]},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command",
         "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                          "required": ["command"]},
         "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 10000},
    "metadata": {"user_id": "user_abc"},
    "stop_sequences": ["</done>"],
    "temperature": 1,
    "stream": True,
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "some_future_field": {"x": 1},
}


def test_a_claude_code_request_as_a_conversation() -> None:
    # What the anthropic SDK itself accepts as a request.
    create_params.validate_python({k: v for k, v in CLAUDE_CODE_BODY.items()
                                   if k not in ("stream", "some_future_field",
                                                "context_management", "temperature")})
    conv = front(CLAUDE_CODE_BODY)
    assert conv.messages == [
        Message(role="system", parts=[Text(text="You are Claude Code."),
                                      Text(text="Work in /repo.")]),
        Message(role="user", parts=[Text(text="List the files, then read a.py")]),
        Message(role="assistant", parts=[
            Reasoning(text="Two tools.", signature="EqQBsig", source="messages"),
            Text(text="Let me look."),
            ToolCall(id="toolu_01", name="Bash", arguments='{"command":"ls"}'),
            ToolCall(id="toolu_02", name="Read", arguments='{"file_path":"a.py"}'),
        ]),
        Message(role="tool", parts=[
            ToolResult(call_id="toolu_01", content=[Text(text="a.py\nb.py")]),
            ToolResult(call_id="toolu_02", content=[Text(text="permission denied")],
                       is_error=True),
        ]),
        Message(role="user", parts=[Text(text="Go on.")]),
    ]
    assert conv.tools[0] == FunctionTool(
        name="Bash", description="Run a command",
        parameters=CLAUDE_CODE_BODY["tools"][0]["input_schema"])
    server = conv.tools[1]
    assert isinstance(server, Opaque)
    assert (server.kind, server.path) == ("tool:web_search", "tools[1]")
    assert (conv.tool_choice, conv.parallel_tool_calls) == ("auto", False)
    assert conv.reasoning == ReasoningConfig(effort="medium", budget_tokens=10000)
    assert (conv.max_output_tokens, conv.stop, conv.temperature, conv.user, conv.stream) == (
        32000, ["</done>"], 1.0, "user_abc", True)
    assert conv.unsupported == []  # context_management is Anthropic's own bookkeeping


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"thinking": {"type": "adaptive"}}, ReasoningConfig(adaptive=True)),
        ({"thinking": {"type": "adaptive", "display": "summarized"},
          "output_config": {"effort": "max"}},
         ReasoningConfig(adaptive=True, effort="xhigh", summary="auto")),
        ({"thinking": {"type": "disabled"}}, ReasoningConfig(enabled=False)),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}},
         ReasoningConfig(effort="low", budget_tokens=1024)),
        ({"thinking": {"type": "enabled", "budget_tokens": 40000}},
         ReasoningConfig(effort="xhigh", budget_tokens=40000)),
        ({"output_config": {"effort": "low"}}, ReasoningConfig(effort="low")),
        ({}, None),
    ],
)
def test_thinking_configs(fields: dict[str, Any], expected: ReasoningConfig | None) -> None:
    conv = front({"model": "m", "max_tokens": 50000,
                  "messages": [{"role": "user", "content": "Hi"}], **fields})
    assert conv.reasoning == expected


PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")
PDF_B64 = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"


def test_images_documents_and_blocks_the_hub_does_not_model() -> None:
    conv = front({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
            {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
            {"type": "document", "title": "Spec", "source": {
                "type": "base64", "media_type": "application/pdf", "data": PDF_B64}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "Plain words."}},
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "text", "text": "Part one."}]}},
            {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
            {"type": "container_upload", "file_id": "file_022"},
        ]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "tool_reference", "tool_name": "g"},
                {"type": "text", "text": "done"}]}]},
    ]})
    first, second, third = conv.messages
    assert first.parts[:7] == [
        Image(data=PNG_B64, media_type="image/png"),
        Image(url="https://x.test/a.jpg"),
        Image(file_id="file_011"),
        File(data=PDF_B64, media_type="application/pdf", filename="Spec"),
        Text(text="Plain words."),
        Text(text="Part one."),
        File(url="https://x.test/a.pdf", media_type="application/pdf"),
    ]
    unknown = first.parts[7]
    assert isinstance(unknown, Opaque)
    assert (unknown.kind, unknown.path) == ("container_upload", "messages[0].content[7]")
    kinds = [(p.kind, p.path) if isinstance(p, Opaque) else type(p).__name__
             for p in second.parts]
    assert kinds == [("server_tool_use", "messages[1].content[0]"),
                     ("web_search_tool_result", "messages[1].content[1]"),
                     "Reasoning", "ToolCall"]
    assert second.parts[2] == Reasoning(redacted="EmwKAhgB", source="messages")
    # A tool result item the hub cannot carry stands next to the result, to be refused.
    assert third.role == "tool"
    assert third.parts[0] == ToolResult(call_id="toolu_1", content=[Text(text="done")])
    ref = third.parts[1]
    assert isinstance(ref, Opaque) and ref.path == "messages[2].content[0].content[0]"


def test_system_turns_output_format_service_tier_and_mcp_servers() -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"a": {"type": "string"}}}
    conv = front({"model": "m", "max_tokens": 10, "service_tier": "standard_only",
                  "output_config": {"format": {"type": "json_schema", "schema": schema}},
                  "mcp_servers": [{"type": "url", "url": "https://mcp.test", "name": "x"}],
                  "tool_choice": {"type": "tool", "name": "f"},
                  "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                  "messages": [{"role": "user", "content": "Hi"},
                               {"role": "system", "content": "Be terse."},
                               {"role": "user", "content": "Again"}]})
    assert [m.role for m in conv.messages] == ["user", "system", "user"]
    assert conv.output_format == JSONSchemaFormat(name="response", schema=schema)
    assert conv.service_tier == "default"
    assert conv.tool_choice == NamedToolChoice(name="f")
    assert [(u.kind, u.path) for u in conv.unsupported] == [("mcp_servers", "mcp_servers")]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "max_tokens": 10, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_missing", "content": "x"}]}]},
         "messages[2].content[0].tool_use_id"),
        # A result must answer an *earlier* tool_use.
        ({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}]},
         "messages[0].content[0].tool_use_id"),
        ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}],
          "tools": [{"name": "f", "description": "no schema"}]}, "tools[0].input_schema"),
        ({"model": "m", "max_tokens": 10, "messages": [
            {"role": "system", "content": [{"type": "image", "source": {
                "type": "url", "url": "https://x.test/a.png"}}]},
            {"role": "user", "content": "Hi"}]}, "messages[0].content[0]"),
    ],
)
def test_front_door_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        front(body)
    assert exc.value.param == param


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": -1, "messages": []}, "$.max_tokens"),
        ({"model": "m", "max_tokens": 1, "temperature": 1.5, "messages": []},
         "$.temperature"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "tool_use", "id": 7, "name": "f", "input": {}}]}]},
         "$.messages[0].content[0].id"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "brand_new_block"}, {"type": "text"}]}]},
         "$.messages[0].content[1]"),
    ],
)
def test_what_the_api_refuses_fails_to_decode_naming_the_path(body: dict[str, Any],
                                                              where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as exc:
        an.decode_create_message(json.dumps(body).encode())
    assert where in str(exc.value)
    with pytest.raises(msgspec.ValidationError):
        an.convert_create_message(body)


def test_unknown_fields_and_block_types_decode() -> None:
    body = {"model": "m", "max_tokens": 1, "future": True, "messages": [
        {"role": "user", "content": [{"type": "brand_new_block", "x": 1},
                                     {"type": "text", "text": "Hi", "future": 2}]}]}
    req = an.decode_create_message(json.dumps(body).encode())
    assert req == an.convert_create_message(body)
    content = req.messages[0].content
    assert isinstance(content, list)
    assert content[0] == an.UnknownBlockParam(block_type="brand_new_block",
                                              value={"type": "brand_new_block", "x": 1})
    count = an.decode_count_tokens(json.dumps({
        "model": "m", "messages": body["messages"], "system": "s"}).encode())
    conv = MESSAGES.to_conversation(count)
    assert conv.messages[0] == Message(role="system", parts=[Text(text="s")])
    assert msgspec.json.decode(msgspec.json.encode(an.MessageTokensCount(input_tokens=12))) == {
        "input_tokens": 12}


# === the upstream side, from a conversation =============================================


@pytest.mark.parametrize(
    ("mode", "reasoning", "limit", "expected"),
    [
        # "budget": the effort's budget on top of the default, or half a client cap.
        ("budget", ReasoningConfig(effort="medium"), None,
         {"max_tokens": 4096 + 4096, "thinking": {"type": "enabled", "budget_tokens": 4096}}),
        ("budget", ReasoningConfig(effort="high"), 10000,
         {"max_tokens": 10000, "thinking": {"type": "enabled", "budget_tokens": 5000}}),
        ("budget", ReasoningConfig(effort="none"), None, {"max_tokens": 4096}),
        # "adaptive": adaptive thinking whatever the effort, the same room kept for the answer.
        ("adaptive", ReasoningConfig(effort="low"), None,
         {"max_tokens": 4096 + 1024, "thinking": {"type": "adaptive"}}),
        ("adaptive", ReasoningConfig(effort="xhigh"), 2000,
         {"max_tokens": 2000, "thinking": {"type": "adaptive"}}),
        ("adaptive", ReasoningConfig(effort="minimal"), None, {"max_tokens": 4096}),
        # "off": never.
        ("off", ReasoningConfig(effort="high"), None, {"max_tokens": 4096}),
        ("off", ReasoningConfig(budget_tokens=2048), 8000, {"max_tokens": 8000}),
        # An explicit budget or adaptive thinking (a Messages front door's) wins over the mode.
        ("adaptive", ReasoningConfig(effort="medium", budget_tokens=3000), 8000,
         {"max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 3000}}),
        ("budget", ReasoningConfig(adaptive=True), 8000,
         {"max_tokens": 8000, "thinking": {"type": "adaptive"}}),
        ("budget", ReasoningConfig(enabled=False), 8000,
         {"max_tokens": 8000, "thinking": {"type": "disabled"}}),
        ("budget", None, None, {"max_tokens": 4096}),
    ],
)
def test_thinking_modes(mode: Any, reasoning: ReasoningConfig | None, limit: int | None,
                        expected: dict[str, Any]) -> None:
    body, _ = sent(Conversation(messages=HELLO, reasoning=reasoning, max_output_tokens=limit,
                                temperature=0.3),
                   options=EncodeOptions(thinking=mode))
    body.pop("messages")
    body.pop("model")
    if "thinking" not in expected or expected["thinking"]["type"] == "disabled":
        expected = {**expected, "temperature": 0.3}  # sampling is only left out for thinking
    assert body == expected
    create_params.validate_python({**body, "model": MODEL, "messages": []})


@pytest.mark.parametrize(
    ("conv", "drop", "expected", "dropped"),
    [
        (Conversation(messages=HELLO, temperature=0.5, top_p=0.9), ("temperature",),
         {"top_p": 0.9}, ["temperature"]),
        (Conversation(messages=HELLO, temperature=0.5, top_p=0.9), ("temperature", "top_p"),
         {}, ["temperature", "top_p"]),
        (Conversation(messages=HELLO, top_p=0.9, top_k=40, stop=["X"]),
         ("top_p", "top_k", "stop_sequences"), {}, ["top_p", "top_k", "stop_sequences"]),
        # Only what would have been sent is named.
        (Conversation(messages=HELLO, temperature=0.5), ("top_p", "top_k"),
         {"temperature": 0.5}, []),
        (Conversation(messages=HELLO), ("max_tokens", "model"), {}, []),
    ],
)
def test_drop_params(conv: Conversation, drop: tuple[str, ...], expected: dict[str, Any],
                     dropped: list[str]) -> None:
    body, out = sent(conv, options=EncodeOptions(drop_params=drop))
    assert {k: v for k, v in body.items() if k not in ("model", "messages", "max_tokens")} == (
        expected)
    assert out.dropped_params == dropped
    assert body["max_tokens"] == 4096


WEB_SEARCH = Opaque(kind="tool:web_search", path="tools[1]", value={"type": "web_search"})
FUNCTION = FunctionTool(name="now", parameters={"type": "object", "properties": {}})


def test_hosted_tools_are_dropped_or_refused() -> None:
    conv = Conversation(messages=HELLO, tools=[FUNCTION, WEB_SEARCH])
    body, out = sent(conv)
    assert [t["name"] for t in body["tools"]] == ["now"]
    assert out.dropped_tools == ["web_search"]
    body, out = sent(Conversation(messages=HELLO, tools=[WEB_SEARCH], tool_choice="auto"))
    assert "tools" not in body and "tool_choice" not in body
    assert out.dropped_tools == ["web_search"]
    with pytest.raises(InvalidRequest) as exc:
        sent(conv, options=EncodeOptions(hosted_tools="reject"))
    assert exc.value.param == "tools[1]"
    # A custom (free-form) tool is the client's own: never silently dropped.
    custom = Opaque(kind="tool:custom", path="tools[0]", value={"type": "custom"})
    with pytest.raises(InvalidRequest) as exc:
        sent(Conversation(messages=HELLO, tools=[custom]))
    assert exc.value.param == "tools[0]"


@pytest.mark.parametrize(
    ("part", "block"),
    [
        (File(data=PDF_B64, media_type="application/pdf", filename="spec.pdf"),
         {"type": "document", "title": "spec.pdf",
          "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}),
        (File(data=PDF_B64),
         {"type": "document",
          "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}),
        (File(url=f"data:application/pdf;base64,{PDF_B64}"),
         {"type": "document",
          "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}),
        (File(url="https://x.test/a.pdf"),
         {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}),
        (File(data="SGVsbG8gdGhlcmUu", media_type="text/plain"),
         {"type": "document",
          "source": {"type": "text", "media_type": "text/plain", "data": "Hello there."}}),
    ],
)
def test_file_parts_become_document_blocks(part: File, block: dict[str, Any]) -> None:
    body, _ = sent(Conversation(messages=[user(Text(text="Summarise"), part)]))
    assert body["messages"][0]["content"][1] == block
    create_params.validate_python(body)


@pytest.mark.parametrize(
    ("part", "why"),
    [
        (File(file_id="file-abc"), "File ids"),
        (File(data="AAAA", media_type="application/zip"), "application/zip"),
        (File(data="@@@", media_type="text/plain"), "base64"),
        (File(filename="a.pdf"), "data or a URL"),
    ],
)
def test_unusable_file_parts_name_the_part(part: File, why: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        sent(Conversation(messages=[user(Text(text="Hi")), user(part)]))
    assert exc.value.param == "messages[1].content[0]"
    assert why in exc.value.message


def test_reasoning_goes_back_only_to_the_api_that_signed_it() -> None:
    history = Message(role="assistant", parts=[
        Reasoning(text="Anthropic's.", signature="sig-1", source="messages"),
        Reasoning(redacted="EmwKAhgB", source="messages"),
        Reasoning(text="unsigned", source="messages"),
        Reasoning(text="An OpenAI summary.", encrypted_content="gAAA", source="responses"),
        Reasoning(text="DeepSeek's.", source="chat"),
        Text(text="Answer."),
        ToolCall(id="toolu_1", name="now", arguments="{}"),
    ])
    body, _ = sent(Conversation(messages=[
        *HELLO, history,
        Message(role="tool", parts=[ToolResult(call_id="toolu_1", content=[Text(text="12")],
                                               is_error=True)])],
        tools=[FUNCTION]))
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Anthropic's.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Answer."},
            {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12",
             "is_error": True}]},
    ]
    create_params.validate_python(body)


@pytest.mark.parametrize(
    ("conv", "param"),
    [
        (Conversation(messages=HELLO, unsupported=[
            Opaque(kind="audio", path="audio", value={"voice": "alloy"})]), "audio"),
        (Conversation(messages=HELLO, unsupported=[
            Opaque(kind="prediction", path="prediction")]), "prediction"),
        (Conversation(messages=[user(Opaque(kind="input_audio", path="input[0].content[1]"))]),
         "input[0].content[1]"),
        (Conversation(messages=HELLO, tool_choice=Opaque(kind="tool_choice:web_search",
                                                         path="tool_choice")), "tool_choice"),
        (Conversation(messages=HELLO, tools=[FUNCTION], tool_choice="required",
                      reasoning=ReasoningConfig(adaptive=True), max_output_tokens=100),
         "thinking"),
        (Conversation(messages=HELLO, n=3), "n"),
        (Conversation(messages=[user(Image(file_id="file-1"))]), "messages[0].content[0]"),
    ],
)
def test_upstream_refusals_name_the_field(conv: Conversation, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        sent(conv)
    assert exc.value.param == param


def test_a_messages_request_through_the_hub_keeps_what_anthropic_needs() -> None:
    """/v1/messages -> hub -> Messages (what a translating route would send): signatures,
    tool results first in their turn, the explicit budget, top_k and the stop sequence."""
    body, out = sent(front(CLAUDE_CODE_BODY), stream=True,
                     options=EncodeOptions(thinking="adaptive"))
    assert out.dropped_tools == ["web_search"]
    assert body["system"] == "You are Claude Code.\n\nWork in /repo."
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert body["max_tokens"] == 32000
    assert "temperature" not in body
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "user_abc"}
    assert body["stop_sequences"] == ["</done>"]
    assert body["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Two tools.", "signature": "EqQBsig"}
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.py\nb.py"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "permission denied",
         "is_error": True},
        {"type": "text", "text": "Go on."},
    ]
    create_params.validate_python({k: v for k, v in body.items() if k != "stream"})


# === the upstream side: answers ==========================================================

# The response example of the Messages API reference.
DOCS_MESSAGE = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": "claude-sonnet-4-20250514",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}
NO_TOOL = Outbound(body=b"")


def decoded(outbound: Outbound = NO_TOOL, **changes: Any) -> Result:
    return MESSAGES.decode_result(json.dumps({**DOCS_MESSAGE, **changes}).encode(), outbound)


def test_decoded_answer_keeps_thinking_signatures_and_cache_counts() -> None:
    result = decoded(
        stop_reason="tool_use",
        content=[
            {"type": "thinking", "thinking": "The user wants SF weather.", "signature": "EqQB"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "I'll check."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "weather"}},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
             "input": {"location": "San Francisco, CA"}, "caller": {"type": "direct"}},
        ],
        usage={"input_tokens": 21, "cache_creation_input_tokens": 188086,
               "cache_read_input_tokens": 1000, "output_tokens": 393,
               "output_tokens_details": {"thinking_tokens": 120}})
    assert result == Result(
        id="msg_013Zva2CMHLNnXjNJJKqJ2EF", model=MODEL, finish="tool_calls",
        parts=[
            Reasoning(text="The user wants SF weather.", signature="EqQB", source="messages"),
            Reasoning(redacted="EmwKAhgB", source="messages"),
            Text(text="I'll check."),
            ToolCall(id="toolu_01", name="get_weather",
                     arguments='{"location":"San Francisco, CA"}'),
        ],
        usage=Usage(input_tokens=21 + 188086 + 1000, output_tokens=393,
                    cached_input_tokens=1000, cache_write_input_tokens=188086,
                    reasoning_tokens=120))


def test_decoded_json_answer_tool_becomes_the_text() -> None:
    result = decoded(Outbound(body=b"", json_tool="answer"), stop_reason="tool_use", content=[
        {"type": "text", "text": "Here it is:"},
        {"type": "tool_use", "id": "toolu_1", "name": "answer", "input": {"x": 1}}])
    assert (result.parts, result.finish) == ([Text(text='{"x":1}')], "stop")


# === streams, at the hub's level ========================================================


def events(*items: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [(str(i["type"]).encode(), json.dumps(i).encode()) for i in items]


START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": MODEL,
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 90,
              "cache_creation_input_tokens": 5, "output_tokens": 1}}}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def stop(reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}}, {"type": "message_stop"}]


def decode_stream(items: list[tuple[bytes, bytes]],
                  outbound: Outbound = NO_TOOL) -> tuple[list[Event], bool]:
    decoder = MESSAGES.stream_decoder(outbound)
    out = [e for name, data in items for e in decoder.feed(name, data)]
    return out, decoder.done


THINKING_TOOL_STREAM = events(
    START,
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    block_delta(0, {"type": "thinking_delta", "thinking": "Two cities."}),
    block_delta(0, {"type": "signature_delta", "signature": "EqQB"}),
    block_stop(0),
    block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgB"}),
    block_stop(1),
    block_start(2, {"type": "text", "text": ""}),
    block_delta(2, {"type": "text_delta", "text": "Checking."}),
    block_stop(2),
    block_start(3, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    block_delta(3, {"type": "input_json_delta", "partial_json": "{\"location\": \"Oslo\"}"}),
    block_stop(3),
    *stop("tool_use", 120),
)
CACHED = Usage(input_tokens=105, output_tokens=1, cached_input_tokens=90,
               cache_write_input_tokens=5)


def test_stream_events_in_the_hub_vocabulary() -> None:
    out, done = decode_stream(THINKING_TOOL_STREAM)
    assert out == [
        Start(id="msg_1", model=MODEL, usage=CACHED),
        ReasoningDelta(text="Two cities."),
        ReasoningEnd(signature="EqQB", source="messages"),
        ReasoningEnd(redacted="EmwKAhgB", source="messages"),
        TextDelta(text="Checking."),
        ToolCallStart(index=0, id="toolu_a", name="get_weather"),
        ToolCallDelta(index=0, arguments="{\"location\": \"Oslo\"}"),
        ToolCallEnd(index=0),
        UsageUpdate(usage=Usage(input_tokens=105, output_tokens=120, cached_input_tokens=90,
                                cache_write_input_tokens=5)),
        Finish(reason="tool_calls"),
    ]
    assert done


def test_stream_done_only_at_message_stop() -> None:
    out, done = decode_stream(events(START, block_start(0, {"type": "text", "text": "Hi"})))
    assert not done
    assert out[-1] == TextDelta(text="Hi")
    out, done = decode_stream(events(START, {"type": "message_stop"}))
    assert done and out[-1] == Finish(reason="stop")


# === the front door: our answers as the anthropic SDK reads them =========================


@pytest.mark.parametrize(
    ("finish", "stop_sequence", "stop_reason"),
    [("stop", None, "end_turn"), ("stop", "</done>", "stop_sequence"),
     ("length", None, "max_tokens"), ("tool_calls", None, "tool_use"),
     ("content_filter", None, "refusal"), ("refusal", None, "refusal")],
)
def test_encoded_stop_reasons(finish: Any, stop_sequence: str | None,
                              stop_reason: str) -> None:
    result = Result(id="chatcmpl-1", model="gpt-4o", parts=[Text(text="x")], finish=finish,
                    stop_sequence=stop_sequence)
    message = SDKMessage.model_validate_json(MESSAGES.encode_result(result, front_request()))
    assert (message.stop_reason, message.stop_sequence) == (stop_reason, stop_sequence)


def test_encoded_message_parses_with_the_sdk() -> None:
    result = Result(
        id="chatcmpl-abc", model="gpt-4o", finish="tool_calls",
        parts=[
            Reasoning(text="Thinking it over.", signature="sig", source="messages"),
            Reasoning(text="A summary from OpenAI.", source="responses",
                      encrypted_content="gAAA"),
            Reasoning(redacted="EmwK", source="messages"),
            Text(text="Let me check."),
            ToolCall(id="call_1", name="get_weather", arguments='{"location": "Oslo"}'),
            ToolCall(id="call_2", name="now", arguments=""),
            ToolCall(id="call_3", name="patch", arguments="*** Begin", kind="custom"),
        ],
        usage=Usage(input_tokens=1200, output_tokens=80, cached_input_tokens=1000,
                    cache_write_input_tokens=100, reasoning_tokens=30))
    body = json.loads(MESSAGES.encode_result(result, front_request()))
    message = SDKMessage.model_validate(body)
    assert message.id == "msg_chatcmpl-abc"
    assert (message.type, message.role, message.model) == ("message", "assistant", "gpt-4o")
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Thinking it over.", "signature": "sig"},
        {"type": "thinking", "thinking": "A summary from OpenAI.", "signature": ""},
        {"type": "redacted_thinking", "data": "EmwK"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather",
         "input": {"location": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        {"type": "tool_use", "id": "call_3", "name": "patch", "input": {"input": "*** Begin"}},
    ]
    # Anthropic's input_tokens leaves out cache reads and writes.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (
        100, 1000, 100, 80)
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 30


def test_a_result_without_usage_still_has_anthropics_usage_fields() -> None:
    body = json.loads(MESSAGES.encode_result(
        Result(id="msg_x", model="", parts=[]), front_request()))
    assert body["id"] == "msg_x" and body["model"] == "claude-alias"
    assert body["content"] == []
    assert body["usage"]["input_tokens"] == 0 and body["usage"]["output_tokens"] == 0
    SDKMessage.model_validate(body)


def sse_blocks(chunks: list[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    for chunk in chunks:
        assert chunk.endswith(b"\n\n")
        name_line, data_line = chunk.decode().rstrip("\n").split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        yield name_line[len("event: "):], json.loads(data_line[len("data: "):])


def sdk_stream(chunks: list[bytes]) -> anthropic.Anthropic:
    """An anthropic client whose /v1/messages answers with these SSE bytes (in-process)."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=b"".join(chunks))
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def final_message(chunks: list[bytes]) -> SDKMessage:
    client = sdk_stream(chunks)
    with client.messages.stream(model="claude-alias", max_tokens=100,
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


def encode_stream(hub: list[Event], *, fail: GatewayError | None = None) -> list[bytes]:
    encoder = MESSAGES.stream_encoder(front_request(stream=True))
    chunks = [c for e in hub for c in encoder.feed(e)]
    chunks += encoder.fail(fail) if fail is not None else encoder.close()
    return chunks


# What an OpenAI upstream's stream looks like in the hub: usage after the finish.
OPENAI_LIKE: list[Event] = [
    Start(id="chatcmpl-9", model="gpt-4o"),
    ReasoningDelta(text="Hmm, "), ReasoningDelta(text="the weather."), ReasoningEnd(),
    TextDelta(text="Checking "), TextDelta(text="both."),
    ToolCallStart(index=0, id="call_a", name="get_weather"),
    ToolCallDelta(index=0, arguments='{"location":'), ToolCallDelta(index=0, arguments='"Oslo"}'),
    ToolCallStart(index=1, id="call_b", name="get_weather"),
    ToolCallDelta(index=1, arguments='{"location":"Rome"}'),
    Finish(reason="tool_calls"),
    UsageUpdate(usage=Usage(input_tokens=300, output_tokens=42, cached_input_tokens=256)),
]


def test_stream_encoder_events_in_the_order_the_sdk_accumulates() -> None:
    chunks = encode_stream(OPENAI_LIKE)
    names = [name for name, _ in sse_blocks(chunks)]
    assert names == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    for name, data in sse_blocks(chunks):
        assert data["type"] == name
        pydantic.TypeAdapter(RawMessageStreamEvent).validate_python(data)
    final = final_message(chunks)
    assert final.id == "msg_chatcmpl-9"
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "thinking", "thinking": "Hmm, the weather.", "signature": ""},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather",
         "input": {"location": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather",
         "input": {"location": "Rome"}},
    ]
    assert final.stop_reason == "tool_use"
    # The usage that came after the finish chunk, in Anthropic's convention.
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.output_tokens) == (44, 256, 42)


def test_anthropic_stream_through_the_hub_and_back_is_the_same_message() -> None:
    """An Anthropic upstream's stream, decoded to hub events and encoded again, gives the
    SDK the message the upstream sent: signatures and redacted thinking included."""
    hub, _ = decode_stream(THINKING_TOOL_STREAM)
    final = final_message(encode_stream(hub))
    assert final.id == "msg_1" and final.model == MODEL
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "thinking", "thinking": "Two cities.", "signature": "EqQB"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather",
         "input": {"location": "Oslo"}},
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.cache_creation_input_tokens, final.usage.output_tokens) == (
        10, 90, 5, 120)


def test_stream_encoder_start_usage_custom_tools_and_stop_sequences() -> None:
    chunks = encode_stream([
        Start(id="msg_2", model="m", usage=Usage(input_tokens=50, cached_input_tokens=20)),
        ToolCallStart(index=0, id="call_c", name="apply_patch", kind="custom"),
        ToolCallDelta(index=0, arguments="*** Begin"), ToolCallDelta(index=0, arguments=" Patch"),
        ToolCallEnd(index=0),
        TextDelta(text="done"),
        Finish(reason="stop", stop_sequence="</x>"),
    ])
    first = next(sse_blocks(chunks))[1]
    assert first["message"]["usage"]["input_tokens"] == 30
    assert first["message"]["usage"]["cache_read_input_tokens"] == 20
    final = final_message(chunks)
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "tool_use", "id": "call_c", "name": "apply_patch",
         "input": {"input": "*** Begin Patch"}},
        {"type": "text", "text": "done"},
    ]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "</x>")


def test_stream_encoder_without_start_or_events_still_makes_a_message() -> None:
    final = final_message(encode_stream([]))
    assert final.id.startswith("msg_") and final.content == []
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (AnthropicAPIError("Overloaded", status=503, type="overloaded_error", code="overloaded",
                           upstream_status=529, upstream_type="overloaded_error"),
         "overloaded_error"),
        (RateLimited("Slow down."), "rate_limit_error"),
        (UpstreamError("The upstream stream ended early."), "api_error"),
    ],
)
def test_a_failure_mid_stream_is_an_error_event_the_sdk_raises(error: GatewayError,
                                                               error_type: str) -> None:
    chunks = encode_stream([Start(id="x", model="m"), TextDelta(text="Hel")], fail=error)
    name, data = list(sse_blocks(chunks))[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": error_type, "message": error.message}}
    with pytest.raises(anthropic.APIStatusError) as exc:
        final_message(chunks)
    body = exc.value.body
    assert isinstance(body, dict) and body["error"]["type"] == error_type


# === errors in Anthropic's shape ========================================================


def overloaded_from_upstream() -> GatewayError:
    return MESSAGES.error_from(529, json.dumps({"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}).encode(), "anthropic")


@pytest.mark.parametrize(
    ("make", "status", "error_type", "sdk_error"),
    [
        (lambda: InvalidRequest("bad", param="messages"), 400, "invalid_request_error",
         anthropic.BadRequestError),
        (lambda: AuthenticationError("no key"), 401, "authentication_error",
         anthropic.AuthenticationError),
        (lambda: PermissionDenied("not yours"), 403, "permission_error",
         anthropic.PermissionDeniedError),
        (lambda: NotFound("no model"), 404, "not_found_error", anthropic.NotFoundError),
        (lambda: PayloadTooLarge("too big"), 413, "request_too_large", anthropic.APIStatusError),
        (lambda: RateLimited("slow down"), 429, "rate_limit_error", anthropic.RateLimitError),
        (lambda: UpstreamError("bad gateway"), 502, "api_error", anthropic.InternalServerError),
        (lambda: UpstreamTimeout("timed out"), 504, "timeout_error",
         anthropic.InternalServerError),
        (lambda: ServiceUnavailable("all providers cooling down"), 529, "overloaded_error",
         anthropic.OverloadedError),
        # An Anthropic upstream's 529: 503 for OpenAI-shape clients, 529 again here.
        (overloaded_from_upstream, 529, "overloaded_error", anthropic.OverloadedError),
        (lambda: MESSAGES.error_from(402, json.dumps({"type": "error", "error": {
            "type": "billing_error", "message": "Your credit balance is too low."}}).encode(),
            "anthropic"), 402, "billing_error", anthropic.APIStatusError),
    ],
)
def test_error_bodies_in_anthropics_shape(make: Callable[[], GatewayError], status: int,
                                          error_type: str, sdk_error: type[Exception]) -> None:
    error = make()
    body = json.loads(MESSAGES.error_body(error))
    assert body == {"type": "error", "error": {"type": error_type, "message": error.message}}
    assert error_status(error) == status

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json=body)
    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with pytest.raises(sdk_error) as exc:
        client.messages.create(model="m", max_tokens=1,
                               messages=[{"role": "user", "content": "Hi"}])
    assert isinstance(exc.value, anthropic.APIStatusError)
    assert exc.value.status_code == status


def test_overloaded_upstream_error_keeps_what_anthropic_said() -> None:
    error = overloaded_from_upstream()
    assert isinstance(error, AnthropicAPIError)
    assert (error.status, error.upstream_status, error.upstream_type) == (
        503, 529, "overloaded_error")


def test_upstream_error_messages_are_redacted() -> None:
    error = MESSAGES.error_from(401, json.dumps({"type": "error", "error": {
        "type": "authentication_error",
        "message": "invalid x-api-key sk-ant-api03-abcdefgh1234"}}).encode(), "anthropic")
    assert "sk-ant" not in error.message and "[redacted]" in error.message


# === native passthrough =================================================================


def test_native_body_replaces_only_the_model() -> None:
    raw: dict[str, Any] = {**CLAUDE_CODE_BODY}
    body = json.loads(MESSAGES.native_body(raw, model="claude-sonnet-4-5-20250929",
                                           stream=True))
    assert body == {**CLAUDE_CODE_BODY, "model": "claude-sonnet-4-5-20250929"}
    assert raw["model"] == "claude-sonnet-4-5"  # the client's body is left as it was
    assert json.loads(MESSAGES.native_body({"model": "a", "messages": []}, model="b",
                                           stream=False)) == {"model": "b", "messages": []}


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (json.dumps({**DOCS_MESSAGE, "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 90,
            "cache_creation_input_tokens": 5, "output_tokens": 7}}).encode(),
         Usage(input_tokens=105, output_tokens=7, cached_input_tokens=90,
               cache_write_input_tokens=5)),
        (json.dumps(DOCS_MESSAGE).encode(), Usage(input_tokens=2095, output_tokens=503)),
        (b'{"id": "msg_1"}', None),
        (b"not json", None),
    ],
)
def test_native_usage(body: bytes, usage: Usage | None) -> None:
    assert MESSAGES.native_usage(body) == usage


def test_native_relay_forwards_events_unchanged_and_reads_usage() -> None:
    relay = MESSAGES.native_relay(front_request(stream=True))
    assert relay.usage is None
    items = [*THINKING_TOOL_STREAM[:3], (b"ping", b'{"type": "ping"}'),
             (b"future_event", b'{"type":"future_event"}'), *THINKING_TOOL_STREAM[3:]]
    out = [relay.relay(name, data) for name, data in items]
    assert out == [b"event: " + name + b"\ndata: " + data + b"\n\n" for name, data in items]
    assert relay.done
    assert relay.usage == Usage(input_tokens=105, output_tokens=120, cached_input_tokens=90,
                                cache_write_input_tokens=5)


def test_native_relay_not_done_before_message_stop_and_raises_error_events() -> None:
    relay = MESSAGES.native_relay(front_request(stream=True))
    relay.relay(*events(START)[0])
    assert not relay.done and relay.usage == CACHED
    with pytest.raises(AnthropicAPIError) as exc:
        relay.relay(b"error", b'{"type": "error", "error": {"type": "overloaded_error", '
                              b'"message": "Overloaded"}}')
    assert (exc.value.status, exc.value.upstream_status) == (503, 529)


def test_error_from_anthropic_is_exported_for_providers() -> None:
    assert error_from_anthropic(529, b"").upstream_status == 529


# === behind the Chat Completions front door (the old translate/anthropic.py spec) ========
# chat request -> CHAT.to_conversation -> MESSAGES.encode_request; Anthropic answers ->
# MESSAGES.decode_result -> CHAT.encode_result; streams -> MESSAGES.stream_decoder ->
# CHAT.stream_encoder, reassembled by the openai SDK's own accumulator, as a client would.


def chat_request(body: dict[str, Any] | None = None, *, include_usage: bool = False,
                 created: int = 1700000000) -> LLMRequest:
    raw = body or {"model": "gpt-4o", "messages": USER_HELLO}
    return LLMRequest(dialect=CHAT, model=str(raw["model"]),
                      typed=oa.decode_request(json.dumps(raw).encode()), raw=raw,
                      include_usage=include_usage, created=created)


def translate_out(body: dict[str, Any], *, stream: bool = False,
                  options: EncodeOptions = OPTIONS) -> tuple[dict[str, Any], Outbound]:
    """Decode an OpenAI request body as the server does, take it through the hub, and return
    the JSON that would be sent to Anthropic."""
    conv = CHAT.to_conversation(chat_request(body).typed)
    out = MESSAGES.encode_request(conv, model=MODEL, stream=stream, options=options)
    sent_body: dict[str, Any] = json.loads(out.body)
    return sent_body, out


def translate(body: dict[str, Any], *, stream: bool = False,
              options: EncodeOptions = OPTIONS) -> tuple[dict[str, Any], str | None]:
    sent_body, out = translate_out(body, stream=stream, options=options)
    return sent_body, out.json_tool


def openai_body(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": messages, **fields}


USER_HELLO = [{"role": "user", "content": "Hello!"}]

# The function-calling round trip of OpenAI's guide, with two parallel calls answered by two
# tool messages and a follow-up user message: one user turn must carry all of it.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string",
                             "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}


def test_tool_round_trip_merges_tool_results_into_one_user_turn() -> None:
    body = openai_body(
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like in Boston and Paris today?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_abc123", "type": "function", "function": {
                    "name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}},
                {"id": "call_def456", "type": "function", "function": {
                    "name": "get_current_weather",
                    "arguments": "{\"location\": \"Paris\", \"unit\": \"celsius\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "22 degrees, sunny"},
            {"role": "tool", "tool_call_id": "call_def456",
             "content": [{"type": "text", "text": "18 degrees, rain"}]},
            {"role": "user", "content": "Which one is warmer?"},
        ],
        tools=[WEATHER_TOOL],
    )
    sent_body, json_tool = translate(body)
    assert json_tool is None
    assert sent_body == {
        "model": MODEL,
        "max_tokens": 4096,
        "system": "You are a helpful assistant.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What's the weather like in Boston and Paris today?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                 "input": {"location": "Boston, MA"}},
                {"type": "tool_use", "id": "call_def456", "name": "get_current_weather",
                 "input": {"location": "Paris", "unit": "celsius"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123",
                 "content": "22 degrees, sunny"},
                # One text part reads the same as a string (the hub keeps no difference).
                {"type": "tool_result", "tool_use_id": "call_def456",
                 "content": "18 degrees, rain"},
                {"type": "text", "text": "Which one is warmer?"},
            ]},
        ],
        "tools": [{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }],
    }
    # The official SDK's request type accepts what we send.
    create_params.validate_python(sent_body)


def test_tool_results_with_images_keep_their_blocks() -> None:
    sent_body, _ = translate(openai_body([
        {"role": "user", "content": "Take a screenshot."},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [
            {"type": "text", "text": "Here:"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]},
    ], tools=[{"type": "function", "function": {"name": "shot"}}]))
    assert sent_body["messages"][2]["content"] == [{
        "type": "tool_result", "tool_use_id": "call_1", "content": [
            {"type": "text", "text": "Here:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}}]}]
    create_params.validate_python(sent_body)


def test_assistant_text_and_tool_calls_and_consecutive_turns_merge() -> None:
    sent_body, _ = translate(openai_body([
        {"role": "user", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "Use the tool."}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "now", "arguments": ""}},
            {"id": "call_2", "type": "function",
             "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
        {"role": "tool", "tool_call_id": "call_2", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": [{"type": "text", "text": "It is noon."}]},
    ], tools=[{"type": "function", "function": {"name": "now"}}]))
    assert sent_body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi."},
                                     {"type": "text", "text": "Use the tool."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "now", "input": {}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "12:00"},
            {"type": "tool_result", "tool_use_id": "call_2"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is noon."}]},
    ]
    # A tool without parameters gets the empty object schema Anthropic requires.
    assert sent_body["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}]


def test_conversation_opening_with_assistant_gets_a_user_turn_first() -> None:
    sent_body, _ = translate(openai_body([
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]))
    assert [m["role"] for m in sent_body["messages"]] == ["user", "assistant", "user"]
    assert sent_body["messages"][0] == {"role": "user",
                                        "content": [{"type": "text", "text": "."}]}


def test_system_and_developer_messages_join_in_order() -> None:
    sent_body, _ = translate(openai_body([
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "You are a pirate."},
                                       {"type": "text", "text": "Say arr."}]},
        {"role": "user", "content": "Hello!"},
        {"role": "system", "content": "Never mention treasure."},
    ]))
    assert sent_body["system"] == (
        "Be brief.\n\nYou are a pirate.\n\nSay arr.\n\nNever mention treasure.")
    assert sent_body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]


# OpenAI's vision example (an https URL) and a base64 data URL.
IMAGE_URL = ("https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/"
             "Gfp-wisconsin-madison-the-nature-boardwalk.jpg/"
             "2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg")


def test_images_by_url_and_by_data_url() -> None:
    sent_body, _ = translate(openai_body([{"role": "user", "content": [
        {"type": "text", "text": "What's in these images?"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]}]))
    assert sent_body["messages"][0]["content"] == [
        {"type": "text", "text": "What's in these images?"},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG_B64}},
    ]
    create_params.validate_python(sent_body)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("data:image/bmp;base64,Qk0=", "image/bmp"),
        ("data:image/png,rawbytes", "base64"),
        ("ftp://example.com/a.png", "http(s)"),
    ],
)
def test_unusable_image_urls_name_the_part(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate(openai_body([{"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": url}}]}]))
    # The part, as the upstream encoder knows it (it does not know the Chat field names).
    assert exc.value.param == "messages[0].content[1]"
    assert why in exc.value.message


def test_chat_file_parts_become_document_blocks() -> None:
    # New: a PDF sent as a Chat file part is an Anthropic document, not a 400.
    sent_body, _ = translate(openai_body([{"role": "user", "content": [
        {"type": "text", "text": "Summarise this."},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}",
                                  "filename": "report.pdf"}},
    ]}]))
    assert sent_body["messages"][0]["content"][1] == {
        "type": "document", "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}
    create_params.validate_python(sent_body)


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
        ("auto", None, {"type": "auto"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "get_current_weather"}}, None,
         {"type": "tool", "name": "get_current_weather"}),
        ({"type": "function", "function": {"name": "get_current_weather"}}, False,
         {"type": "tool", "name": "get_current_weather", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_mapping(tool_choice: Any, parallel: bool | None,
                             expected: dict[str, Any] | None) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        fields["tool_choice"] = tool_choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    sent_body, _ = translate(openai_body(USER_HELLO, **fields))
    assert sent_body.get("tool_choice") == expected


def test_tool_choice_without_tools() -> None:
    sent_body, _ = translate(openai_body(USER_HELLO, tool_choice="auto"))
    assert "tool_choice" not in sent_body and "tools" not in sent_body
    with pytest.raises(InvalidRequest) as exc:
        translate(openai_body(USER_HELLO, tool_choice="required"))
    assert exc.value.param == "tool_choice"


def test_chat_web_search_is_a_hosted_tool() -> None:
    body = openai_body(USER_HELLO, tools=[WEATHER_TOOL], web_search_options={})
    sent_body, out = translate_out(body)
    assert [t["name"] for t in sent_body["tools"]] == ["get_current_weather"]
    assert out.dropped_tools == ["web_search"]
    with pytest.raises(InvalidRequest) as exc:
        translate(body, options=EncodeOptions(hosted_tools="reject"))
    assert exc.value.param == "web_search_options"


# OpenAI's structured-outputs example.
MATH_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "math_reasoning",
        "schema": {
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"},
                                   "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False}},
                "final_answer": {"type": "string"},
            },
            "required": ["steps", "final_answer"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def wire(obj: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(obj)
    return data


def chat_completion(message: dict[str, Any], *, json_tool: str | None = None,
                    created: int = 1) -> SDKChatCompletion:
    """An Anthropic answer through the hub to the Chat front door, as the openai SDK reads
    the JSON we would send."""
    result = MESSAGES.decode_result(json.dumps(message).encode(),
                                    Outbound(body=b"", json_tool=json_tool))
    return SDKChatCompletion.model_validate_json(
        CHAT.encode_result(result, chat_request(created=created)))


def test_json_schema_becomes_a_forced_tool_and_its_input_the_content() -> None:
    sent_body, json_tool = translate(openai_body(
        [{"role": "system", "content": "You are a helpful math tutor."},
         {"role": "user", "content": "how can I solve 8x + 7 = -23"}],
        response_format=MATH_FORMAT))
    assert json_tool == "math_reasoning"
    assert sent_body["tools"] == [{
        "name": "math_reasoning",
        "input_schema": MATH_FORMAT["json_schema"]["schema"],  # type: ignore[index]
        "description": "Give your final answer by calling this tool; its input is the response.",
    }]
    assert sent_body["tool_choice"] == {"type": "tool", "name": "math_reasoning"}

    answer = {"steps": [{"explanation": "Subtract 7", "output": "8x = -30"},
                        {"explanation": "Divide by 8", "output": "x = -15/4"}],
              "final_answer": "x = -15/4"}
    completion = chat_completion({
        "id": "msg_01JSON", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "math_reasoning",
                     "input": answer}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 500, "output_tokens": 80},
    }, json_tool=json_tool)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert json.loads(choice.message.content or "") == answer


def test_json_schema_alongside_client_tools_lets_the_model_choose() -> None:
    sent_body, json_tool = translate(openai_body(USER_HELLO, tools=[WEATHER_TOOL],
                                                 response_format=MATH_FORMAT))
    assert json_tool == "math_reasoning"
    assert [t["name"] for t in sent_body["tools"]] == ["get_current_weather", "math_reasoning"]
    assert sent_body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("json_schema", "param"),
    [
        ({"name": "list", "schema": {"type": "array", "items": {"type": "string"}}},
         "response_format.json_schema.schema"),
        ({"name": "get_current_weather", "schema": {"type": "object"}},
         "response_format.json_schema.name"),
    ],
)
def test_json_schemas_that_cannot_be_a_tool(json_schema: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate(openai_body(USER_HELLO, tools=[WEATHER_TOOL],
                              response_format={"type": "json_schema",
                                               "json_schema": json_schema}))
    assert exc.value.param == param


def test_json_object_asks_for_json_in_the_system_prompt() -> None:
    sent_body, json_tool = translate(openai_body(
        [{"role": "system", "content": "Extract the names."},
         {"role": "user", "content": "Ann met Bob."}],
        response_format={"type": "json_object"}))
    assert json_tool is None
    assert sent_body["system"] == ("Extract the names.\n\nRespond only with a single valid "
                                   "JSON object, with no text before or after it.")
    assert "tools" not in sent_body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"2435": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1.0}, "frequency_penalty"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this recording?"},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]},
         "messages[0].content[1]"),
        # A file by id (an OpenAI file id means nothing to Anthropic).
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "?"},
                       {"role": "user", "content": [
                           {"type": "file", "file": {"file_id": "file-abc"}}]}]},
         "messages[2].content[0]"),
        ({"messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": IMAGE_URL}}]},
            {"role": "user", "content": "Hi"}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "assistant", "tool_calls": [
                           {"id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\": 1"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "assistant", "tool_calls": [
                           {"id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "[1, 2]"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        # The deprecated role "function": the Chat front door names the message.
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "function", "name": "f", "content": "1"}]}, "messages[1]"),
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "assistant", "function_call": {"name": "f",
                                                               "arguments": "{}"}}]},
         "messages[1].function_call"),
        ({"messages": [{"role": "system", "content": "Only a system prompt."}]}, "messages"),
        ({"reasoning_effort": "high", "tools": [WEATHER_TOOL], "tool_choice": "required"},
         "reasoning_effort"),
        ({"reasoning_effort": "low", "response_format": MATH_FORMAT}, "reasoning_effort"),
        ({"tools": [{"type": "custom", "custom": {"name": "patch"}}]}, "tools[0]"),
    ],
)
def test_what_anthropic_cannot_honour_is_refused_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate({"model": "gpt-4o", "messages": USER_HELLO, **fields})
    assert exc.value.param == param
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_tokens": 100, "max_completion_tokens": 200}, {"max_tokens": 200}),
        ({"temperature": 0.2}, {"max_tokens": 4096, "temperature": 0.2}),
        ({"temperature": 1.7}, {"max_tokens": 4096, "temperature": 1.0}),
        ({"top_p": 0.9}, {"max_tokens": 4096, "top_p": 0.9}),
        ({"temperature": 0.5, "top_p": 0.9}, {"max_tokens": 4096, "temperature": 0.5}),
        ({"stop": "\n\nHuman:"}, {"max_tokens": 4096, "stop_sequences": ["\n\nHuman:"]}),
        ({"stop": ["END", "STOP"]}, {"max_tokens": 4096, "stop_sequences": ["END", "STOP"]}),
        ({"stop": []}, {"max_tokens": 4096}),
        ({"user": "user-1234"}, {"max_tokens": 4096, "metadata": {"user_id": "user-1234"}}),
        # Harmless to drop: nothing of them reaches Anthropic.
        ({"seed": 7, "service_tier": "auto", "store": True, "metadata": {"a": "b"},
          "parallel_tool_calls": True, "stream_options": {"include_usage": True},
          "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0,
          "modalities": ["text"], "verbosity": "low"},
         {"max_tokens": 4096}),
        ({"reasoning_effort": "minimal", "temperature": 0.3},
         {"max_tokens": 4096, "temperature": 0.3}),
        # "none" asks for no reasoning at all: said explicitly.
        ({"reasoning_effort": "none", "temperature": 0.3},
         {"max_tokens": 4096, "temperature": 0.3, "thinking": {"type": "disabled"}}),
        # Thinking: budget per effort on top of the default; sampling left at its defaults.
        ({"reasoning_effort": "low", "temperature": 0.3},
         {"max_tokens": 4096 + 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ({"reasoning_effort": "medium"},
         {"max_tokens": 4096 + 4096, "thinking": {"type": "enabled", "budget_tokens": 4096}}),
        ({"reasoning_effort": "high", "top_p": 0.5},
         {"max_tokens": 4096 + 16384,
          "thinking": {"type": "enabled", "budget_tokens": 16384}}),
        # A client cap is kept; thinking gets at most half of it, or nothing below the minimum.
        ({"reasoning_effort": "high", "max_completion_tokens": 10000},
         {"max_tokens": 10000, "thinking": {"type": "enabled", "budget_tokens": 5000}}),
        ({"reasoning_effort": "low", "max_completion_tokens": 1500}, {"max_tokens": 1500}),
    ],
)
def test_sampling_limits_and_metadata(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    sent_body, _ = translate(openai_body(USER_HELLO, **fields))
    sent_body.pop("messages")
    assert sent_body == {"model": MODEL, **expected}


@pytest.mark.parametrize(
    ("mode", "effort", "expected"),
    [
        ("adaptive", "low", {"type": "adaptive"}),
        ("adaptive", "xhigh", {"type": "adaptive"}),
        ("budget", "high", {"type": "enabled", "budget_tokens": 16384}),
        ("off", "high", None),
    ],
)
def test_reasoning_effort_per_thinking_mode(mode: Any, effort: str,
                                            expected: dict[str, Any] | None) -> None:
    sent_body, _ = translate(openai_body(USER_HELLO, reasoning_effort=effort),
                             options=EncodeOptions(thinking=mode))
    assert sent_body.get("thinking") == expected


def test_stream_flag_and_extended_thinking_with_tools() -> None:
    sent_body, _ = translate(openai_body(USER_HELLO, tools=[WEATHER_TOOL], tool_choice="auto",
                                         reasoning_effort="medium"), stream=True)
    assert sent_body["stream"] is True
    assert sent_body["tool_choice"] == {"type": "auto"}
    assert sent_body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "stream" not in translate(openai_body(USER_HELLO))[0]


# --- responses ---------------------------------------------------------------------------


def test_encoded_responses_carry_every_field_openai_always_sends() -> None:
    result = MESSAGES.decode_result(json.dumps(
        {**DOCS_MESSAGE, "usage": {"input_tokens": 0, "output_tokens": 0}}).encode(), NO_TOOL)
    data = wire(CHAT.encode_result(result, chat_request()))
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"]["prompt_tokens"] == 0
    chunks, _ = run(TEXT_SSE)
    assert wire(chunks[0])["object"] == "chat.completion.chunk"


def test_text_response() -> None:
    completion = chat_completion(DOCS_MESSAGE, created=1700000000)
    assert completion.id == "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert completion.object == "chat.completion"
    assert completion.created == 1700000000
    assert completion.model == "claude-sonnet-4-20250514"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hi! My name is Claude."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (2095, 503, 2598)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("some_future_reason", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish_reason: str) -> None:
    completion = chat_completion({**DOCS_MESSAGE, "stop_reason": stop_reason})
    assert completion.choices[0].finish_reason == finish_reason


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    completion = chat_completion({**DOCS_MESSAGE, "usage": {
        "input_tokens": 21, "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 1000, "output_tokens": 393,
        "output_tokens_details": {"thinking_tokens": 120},
        "service_tier": "standard"}})
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 21 + 188086 + 1000
    assert usage.completion_tokens == 393
    assert usage.total_tokens == 21 + 188086 + 1000 + 393
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 120


def test_tool_use_response_from_the_tool_use_guide() -> None:
    completion = chat_completion({
        **DOCS_MESSAGE,
        "id": "msg_01Aq9w938a90dw8q",
        "stop_reason": "tool_use",
        "content": [
            {"type": "thinking", "thinking": "The user wants SF weather.", "signature": "EqQB"},
            {"type": "text", "text": "I'll check the weather in San Francisco."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_time",
             "input": {"timezone": "America/Los_Angeles"}},
        ],
    })
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the weather in San Francisco."
    calls = choice.message.tool_calls
    assert calls is not None
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "function", "get_weather",
         {"location": "San Francisco, CA", "unit": "celsius"}),
        ("toolu_02", "function", "get_time", {"timezone": "America/Los_Angeles"}),
    ]
    # Compact JSON, as OpenAI sends it.
    assert calls[0].function.arguments == (  # type: ignore[union-attr]
        '{"location":"San Francisco, CA","unit":"celsius"}')


def test_only_tool_calls_gives_null_content_and_unknown_blocks_are_dropped() -> None:
    message = {**DOCS_MESSAGE, "stop_reason": "tool_use", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
         "input": {"query": "weather"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {},
         "caller": {"type": "direct"}},
    ]}
    assert [type(b) for b in an.decode_message(json.dumps(message).encode()).content] == [
        an.ToolUseBlock]
    choice = chat_completion(message).choices[0]
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == "{}"  # type: ignore[union-attr]


def test_a_body_that_is_not_a_message_still_fails_to_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        MESSAGES.decode_result(b'{"id": "msg_1", "model": "m", "content": [{"type": "text"}]}',
                               NO_TOOL)


# --- streams -----------------------------------------------------------------------------

# The basic streaming example (as recorded in the official Python SDK's test fixtures).
TEXT_SSE = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",\
"type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest",\
"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},\
"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}
"""

# Streaming with tool use: a text block, then a tool_use block at Anthropic index 1.
TOOL_SSE = """
event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message",\
"role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,\
"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,\
"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",\
"text":"'ll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",\
"id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},"input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":"{\\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":"on\\": \\"P"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":"ar"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",\
"partial_json":"is\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},\
"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}
"""


def sse_events(text: str) -> list[tuple[bytes, bytes]]:
    """(event name, data) of each SSE event in a recorded stream ("" where none is named)."""
    out: list[tuple[bytes, bytes]] = []
    name = b""
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[len("event: "):].encode()
        elif line.startswith("data: "):
            out.append((name, line[len("data: "):].encode()))
            name = b""
    return out


def run(text: str, *, include_usage: bool = False, json_tool: str | None = None
        ) -> tuple[list[bytes], Any]:
    """Feed a recorded Anthropic stream through MESSAGES.stream_decoder into
    CHAT.stream_encoder; returns the chunks' data payloads and the decoder."""
    decoder = MESSAGES.stream_decoder(Outbound(body=b"", json_tool=json_tool))
    encoder = CHAT.stream_encoder(chat_request(include_usage=include_usage))
    chunks = [c for name, data in sse_events(text) for e in decoder.feed(name, data)
              for c in encoder.feed(e)]
    if decoder.done:
        chunks += encoder.close()
    payloads = [c[len(b"data: "):].rstrip(b"\n") for c in chunks]
    return [p for p in payloads if p != b"[DONE]"], decoder


def reassemble(chunks: list[bytes]) -> Any:
    """Accumulate the chunks with the openai SDK, as its streaming helpers do."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(SDKChunk.model_validate_json(chunk)))
    return state.get_final_completion()


def test_streamed_text_response() -> None:
    chunks, decoder = run(TEXT_SSE)
    first = wire(chunks[0])
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None, "logprobs": None}]
    parsed = [wire(c) for c in chunks]
    assert {c["id"] for c in parsed} == {"chatcmpl-msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"}
    assert {c["model"] for c in parsed} == {"claude-3-opus-latest"}
    assert {c["created"] for c in parsed} == {1700000000}
    assert all(c.get("usage") is None for c in parsed)  # not asked for
    final = reassemble(chunks)
    assert final.choices[0].message.content == "Hello there!"
    assert final.choices[0].finish_reason == "stop"
    # Usage is known to the caller anyway, to settle token budgets.
    assert decoder.usage == Usage(input_tokens=11, output_tokens=6)
    assert decoder.usage.total_tokens == 17


def test_streamed_usage_chunk_when_asked_for() -> None:
    chunks, _ = run(TEXT_SSE, include_usage=True)
    last = wire(chunks[-1])
    assert last["choices"] == []
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"],
            last["usage"]["total_tokens"]) == (11, 6, 17)
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert sum(wire(c).get("usage") is not None for c in chunks) == 1
    assert wire(chunks[-2])["choices"][0]["finish_reason"] == "stop"
    final = reassemble(chunks)
    assert final.usage is not None and final.usage.total_tokens == 17


def test_streamed_tool_call_reassembles_into_name_and_arguments() -> None:
    chunks, decoder = run(TOOL_SSE, include_usage=True)
    final = reassemble(chunks)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in Paris for you."
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id == "toolu_01NRLabsLyVHZPKxbKvkfSMn"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"location": "Paris"}
    # OpenAI numbers tool calls among themselves: 0, although Anthropic's block index is 1.
    indexes = {tc["index"] for c in chunks for ch in wire(c)["choices"]
               for tc in ch["delta"].get("tool_calls") or []}
    assert indexes == {0}
    assert decoder.usage is not None and decoder.usage.input_tokens == 377
    assert decoder.usage.output_tokens == 65


def sse_text(*items: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(i)}\n\n" for i in items)


def test_parallel_tool_calls_thinking_and_unknown_events() -> None:
    text = sse_text(
        START,
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Two cities."}),
        block_delta(0, {"type": "signature_delta", "signature": "EqQB"}),
        {"type": "content_block_stop", "index": 0},
        block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "get_weather",
                        "input": {}}),
        block_start(2, {"type": "server_tool_use", "id": "srv_1", "name": "web_search",
                        "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": "{\"query\": \"x\"}"}),
        block_delta(1, {"type": "input_json_delta", "partial_json": "{\"location\": \"Oslo\"}"}),
        block_start(3, {"type": "tool_use", "id": "toolu_b", "name": "get_weather",
                        "input": {}}),
        block_delta(3, {"type": "input_json_delta", "partial_json": "{\"location\": "}),
        block_delta(3, {"type": "citations_delta", "citation": {"type": "char_location"}}),
        {"type": "some_future_event", "data": 1},
        block_delta(3, {"type": "input_json_delta", "partial_json": "\"Rome\"}"}),
        *stop("tool_use", 120),
    )
    chunks, decoder = run(text)
    final = reassemble(chunks)
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_a", "get_weather", {"location": "Oslo"}),
        ("toolu_b", "get_weather", {"location": "Rome"}),
    ]
    assert final.choices[0].message.content == ""  # the opening chunk's, as OpenAI's
    assert final.choices[0].finish_reason == "tool_calls"
    usage = decoder.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (105, 120)
    assert usage.cached_input_tokens == 90


def test_streamed_json_schema_answer_becomes_content() -> None:
    # From a recorded json-tool stream: the answer tool's input arrives as input_json_delta.
    text = sse_text(
        START,
        block_start(0, {"type": "tool_use", "id": "toolu_01KFbKqPYSuAKujiL6mTfzYA",
                        "name": "json", "input": {}}),
        block_delta(0, {"type": "input_json_delta", "partial_json": ""}),
        {"type": "ping"},
        block_delta(0, {"type": "input_json_delta", "partial_json":
                        "{\"elements\": [{\"location\": \"San Francisco\", "
                        "\"temperature\": 58, \"condition\": \"sunny\"}]"}),
        block_delta(0, {"type": "input_json_delta", "partial_json": "}"}),
        {"type": "content_block_stop", "index": 0},
        *stop("tool_use", 47),
    )
    chunks, _ = run(text, json_tool="json")
    final = reassemble(chunks)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.tool_calls is None
    assert json.loads(final.choices[0].message.content) == {
        "elements": [{"location": "San Francisco", "temperature": 58, "condition": "sunny"}]}


def test_stream_without_stop_reason_still_finishes() -> None:
    chunks, _ = run(sse_text(START, block_start(0, {"type": "text", "text": "Hi"}),
                             {"type": "message_delta", "delta": {},
                              "usage": {"output_tokens": 2}},
                             {"type": "message_stop"}), include_usage=True)
    final = reassemble(chunks)
    assert final.choices[0].message.content == "Hi"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("error_type", "status", "upstream_status"),
    [("overloaded_error", 503, 529), ("api_error", 500, 500), ("rate_limit_error", 429, 429),
     ("brand_new_error", 500, 500)],
)
def test_error_event_mid_stream_raises(error_type: str, status: int,
                                       upstream_status: int) -> None:
    decoder = MESSAGES.stream_decoder(NO_TOOL)
    for name, data in sse_events(sse_text(START, block_start(0, {"type": "text", "text": ""}))):
        decoder.feed(name, data)
    with pytest.raises(AnthropicAPIError) as exc:
        decoder.feed(b"error", json.dumps(
            {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}).encode())
    assert (exc.value.status, exc.value.upstream_status) == (status, upstream_status)
    assert exc.value.message == "Overloaded"
    assert not decoder.done


def test_unreadable_stream_event_is_an_upstream_error() -> None:
    decoder = MESSAGES.stream_decoder(NO_TOOL)
    assert decoder.usage is None
    with pytest.raises(UpstreamError):
        decoder.feed(b"", b"{not json")
    with pytest.raises(UpstreamError):
        decoder.feed(b"content_block_delta",
                     b'{"type": "content_block_delta", "index": "zero", '
                     b'"delta": {"type": "text_delta", "text": "x"}}')


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "answer_status", "answer_type", "code"),
    [
        (400, "invalid_request_error", "max_tokens: Field required", 400,
         "invalid_request_error", None),
        (401, "authentication_error", "invalid x-api-key", 401, "authentication_error",
         "invalid_api_key"),
        (402, "billing_error", "Your credit balance is too low.", 402, "billing_error",
         "insufficient_quota"),
        (403, "permission_error", "Your API key does not have permission to use the "
         "specified resource.", 403, "permission_error", None),
        (404, "not_found_error", "The requested resource could not be found.", 404,
         "not_found_error", "not_found"),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.",
         413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute "
         "rate limit", 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", "An unexpected error has occurred internal to Anthropic's "
         "systems.", 500, "api_error", None),
        (504, "timeout_error", "Request timed out.", 504, "timeout_error", "upstream_timeout"),
        (529, "overloaded_error", "Overloaded", 503, "overloaded_error", "overloaded"),
    ],
)
def test_error_mapping(status: int, error_type: str, message: str, answer_status: int,
                       answer_type: str, code: str | None) -> None:
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message},
                       "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).encode()
    error = MESSAGES.error_from(status, body, "anthropic")
    assert isinstance(error, AnthropicAPIError)
    assert (error.status, error.upstream_status, error.upstream_type) == (
        answer_status, status, error_type)
    # What the Chat front door answers with.
    assert json.loads(CHAT.error_body(error)) == {"error": {
        "message": message, "type": answer_type, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "answer_status", "answer_type"),
    [
        (502, b"<html>Bad Gateway</html>", 502, "upstream_error"),
        (529, b"", 503, "overloaded_error"),
        (418, b'{"detail": "teapot"}', 418, "invalid_request_error"),
        (503, b'{"type": "error", "error": {"message": ""}}', 503, "upstream_error"),
    ],
)
def test_unreadable_error_bodies(status: int, body: bytes, answer_status: int,
                                 answer_type: str) -> None:
    error = MESSAGES.error_from(status, body, "anthropic")
    assert isinstance(error, AnthropicAPIError)
    assert error.status == answer_status
    assert error.type == answer_type
    assert str(status) in error.message
    assert error.upstream_status == status
