"""The Responses API dialect, table-style on the examples of its reference
(https://platform.openai.com/docs/api-reference/responses, .../responses-streaming) and the
openai SDK's own types: requests into the hub's Conversation, Results and hub streams out as
the SDK parses them (its stream accumulator rebuilds the final response), a Responses
upstream's bodies and streams back into the hub, and native passthrough."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx2
import msgspec
import openai
import pydantic
import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseInputItemParam, ResponseStreamEvent, ToolParam

from gateway_core import responses_types as rt
from gateway_core.errors import GatewayError, InvalidRequest, RateLimited, UpstreamError
from gateway_llm.dialects.responses import (
    RESPONSES,
    check_call_ids,
    input_items_of,
    output_items_of,
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
    ToolResult,
    Usage,
    UsageUpdate,
    result_events,
)

decoder = msgspec.json.Decoder(rt.ResponsesRequest, strict=False)  # as the route decodes
sdk_event = pydantic.TypeAdapter(ResponseStreamEvent)
sdk_items = pydantic.TypeAdapter(list[ResponseInputItemParam])
sdk_tools = pydantic.TypeAdapter(list[ToolParam])

WEATHER: dict[str, Any] = {
    "type": "function", "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"], "additionalProperties": False},
    "strict": True}


def request(body: dict[str, Any]) -> LLMRequest:
    """A client's body as the route hands it on: typed, raw, and the conversation."""
    typed = decoder.decode(json.dumps(body))
    return LLMRequest(RESPONSES, typed.model, typed, body, stream=typed.stream is True,
                      created=1741476542)


def conversation(body: dict[str, Any]) -> Conversation:
    return RESPONSES.to_conversation(decoder.decode(json.dumps(body)))


# --- requests -> Conversation --------------------------------------------------------------

# The function-calling round trip of OpenAI's guide, as a reasoning model's client sends it
# back: reasoning item, call, output; then a follow-up question.
TOOL_TURN: list[Any] = [
    {"role": "user", "content": "What's the weather like in Paris today?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look up."}],
     "encrypted_content": "gAAAAB"},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
     "arguments": "{\"location\":\"Paris\"}", "status": "completed"},
    {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_weather",
     "arguments": "{\"location\":\"Lyon\"}", "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    {"type": "function_call_output", "call_id": "call_2", "output": [
        {"type": "input_text", "text": "20C"},
        {"type": "input_image", "image_url": "https://example.com/map.png", "detail": "low"}]},
    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
     "content": [{"type": "output_text", "text": "18C in Paris, 20C in Lyon.",
                  "annotations": []}]},
    {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]},
]


def test_the_function_calling_round_trip() -> None:
    sdk_items.validate_python(TOOL_TURN)
    conv = conversation({"model": "gpt-5", "instructions": "Be brief.", "input": TOOL_TURN,
                         "tools": [WEATHER]})
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "tool",
                                               "assistant", "user"]
    assert conv.messages[0].parts == [Text(text="Be brief.")]
    assert conv.messages[2].parts == [
        Reasoning(summary=["Look up."], encrypted_content="gAAAAB", item_id="rs_1",
                  source="responses"),
        ToolCall(id="call_1", name="get_weather", arguments="{\"location\":\"Paris\"}",
                 item_id="fc_1"),
        ToolCall(id="call_2", name="get_weather", arguments="{\"location\":\"Lyon\"}",
                 item_id="fc_2"),
    ]
    assert conv.messages[3].parts == [ToolResult(call_id="call_1", content=[Text(text="18C")])]
    assert conv.messages[4].parts == [ToolResult(call_id="call_2", content=[
        Text(text="20C"), Image(url="https://example.com/map.png", detail="low")])]
    assert conv.messages[5].parts == [Text(text="18C in Paris, 20C in Lyon.")]
    assert conv.tools == [FunctionTool(name="get_weather", description="Weather in a city",
                                       parameters=WEATHER["parameters"], strict=True)]


def test_consecutive_assistant_items_make_one_turn() -> None:
    conv = conversation({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "one"},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "two", "annotations": []},
            {"type": "refusal", "refusal": "not that"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "q"}},
        {"type": "custom_tool_call", "call_id": "c1", "name": "sh", "input": "ls"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "a.txt"},
    ]})
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool"]
    parts = conv.messages[1].parts
    assert parts[:3] == [Text(text="one"), Text(text="two"), Refusal(text="not that")]
    assert isinstance(parts[3], Opaque) and parts[3].kind == "web_search_call"
    assert parts[3].path == "input[3]"
    assert parts[4] == ToolCall(id="c1", name="sh", arguments="ls", kind="custom")
    assert conv.messages[2].parts == [ToolResult(call_id="c1", content=[Text(text="a.txt")],
                                                 kind="custom")]


def test_a_string_input_is_one_user_message() -> None:
    conv = conversation({"model": "m", "input": "Tell me a three sentence bedtime story."})
    assert conv.messages == [Message(role="user", parts=[
        Text(text="Tell me a three sentence bedtime story.")])]


def test_content_parts() -> None:
    conv = conversation({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "high"},
        {"type": "input_image", "file_id": "file-1", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
         "filename": "a.pdf"},
        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
    ]}]})
    parts = conv.messages[0].parts
    assert parts[:5] == [
        Text(text="look"),
        Image(url="data:image/png;base64,iVBO", detail="high"),
        Image(file_id="file-1", detail="auto"),
        File(data="JVBE", media_type="application/pdf", filename="a.pdf"),
        File(url="https://example.com/b.pdf"),
    ]
    assert parts[5] == Opaque(kind="input_audio", path="input[0].content[5]", value={
        "type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}})


def test_tools_and_tool_choice() -> None:
    custom = {"type": "custom", "name": "code_exec", "description": "Runs Python"}
    conv = conversation({"model": "m", "input": "x", "tools": [
        WEATHER, custom, {"type": "web_search", "search_context_size": "low"},
        {"type": "namespace", "name": "crm", "description": "CRM", "tools": [
            {"type": "function", "name": "find_customer", "strict": False},
            {"type": "custom", "name": "note"}]},
        {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"},
    ], "tool_choice": "required", "parallel_tool_calls": False})
    assert conv.tools == [
        FunctionTool(name="get_weather", description="Weather in a city",
                     parameters=WEATHER["parameters"], strict=True),
        Opaque(kind="tool:custom", path="tools[1].type", value=custom),
        Opaque(kind="tool:web_search", path="tools[2].type",
               value={"type": "web_search", "search_context_size": "low"}),
        FunctionTool(name="find_customer", strict=False),
        Opaque(kind="tool:custom", path="tools[3].tools[1].type",
               value={"type": "custom", "name": "note"}),
        Opaque(kind="tool:mcp", path="tools[4].type", value={
            "type": "mcp", "server_label": "deepwiki",
            "server_url": "https://mcp.deepwiki.com/mcp"}),
    ]
    assert conv.tool_choice == "required" and conv.parallel_tool_calls is False


@pytest.mark.parametrize("choice,expected", [
    ("none", "none"), ("auto", "auto"), ("required", "required"),
    ({"type": "function", "name": "get_weather"}, NamedToolChoice(name="get_weather")),
    ({"type": "custom", "name": "code_exec"}, NamedToolChoice(name="code_exec")),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]},
     Opaque(kind="tool_choice:allowed_tools", path="tool_choice", value={
         "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]})),
    ({"type": "web_search_preview"},
     Opaque(kind="tool_choice:web_search_preview", path="tool_choice",
            value={"type": "web_search_preview"})),
])
def test_tool_choice(choice: Any, expected: Any) -> None:
    assert conversation({"model": "m", "input": "x", "tool_choice": choice}).tool_choice == expected


@pytest.mark.parametrize("fmt,expected", [
    ({"type": "text"}, "text"),
    ({"type": "json_object"}, "json_object"),
    ({"type": "json_schema", "name": "city", "strict": True, "description": "A city",
      "schema": {"type": "object", "properties": {"name": {"type": "string"}}}},
     JSONSchemaFormat(name="city", schema={"type": "object",
                                           "properties": {"name": {"type": "string"}}},
                      description="A city", strict=True)),
])
def test_text_format(fmt: Any, expected: Any) -> None:
    conv = conversation({"model": "m", "input": "x", "text": {"format": fmt}})
    assert conv.output_format == expected


def test_sampling_limits_and_settings() -> None:
    conv = conversation({
        "model": "m", "input": "x", "max_output_tokens": 256.0, "temperature": 0.5,
        "top_p": 0.8, "top_logprobs": 3, "include": ["message.output_text.logprobs"],
        "reasoning": {"effort": "minimal", "generate_summary": "concise"},
        "user": "u-1", "metadata": {"a": "b"}, "service_tier": "flex", "stream": True,
        "truncation": "auto", "store": False, "prompt_cache_key": "k"})
    assert conv.max_output_tokens == 256 and type(conv.max_output_tokens) is int
    assert (conv.temperature, conv.top_p, conv.top_logprobs, conv.logprobs) == (0.5, 0.8, 3, True)
    assert conv.reasoning == ReasoningConfig(effort="minimal", summary="concise")
    assert (conv.user, conv.metadata, conv.service_tier, conv.stream) == (
        "u-1", {"a": "b"}, "flex", True)
    assert conv.unsupported == []
    off = conversation({"model": "m", "input": "x", "reasoning": {"effort": "none"}})
    assert off.reasoning == ReasoningConfig(effort="none", enabled=False)


def test_stored_state_the_gateway_cannot_resolve_is_carried_as_opaque() -> None:
    conv = conversation({"model": "m", "input": "x", "conversation": "conv_1",
                         "prompt": {"id": "pmpt_1"}, "background": True})
    assert [(o.kind, o.path) for o in conv.unsupported] == [
        ("conversation", "conversation"), ("prompt", "prompt"), ("background", "background")]


@pytest.mark.parametrize("items,param", [
    ([{"type": "no_such_item"}], "input[0].type"),
    ([{"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "call_x",
                                           "output": "1"}], "input[1].call_id"),
    ([{"type": "function_call_output", "output": "1"}], "input[0].call_id"),
    ([{"type": "function_call_output", "call_id": "c", "output": "1"},
      {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}],
     "input[0].call_id"),
    ([{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}],
     "input[0].content[0].image_url"),
    ([{"role": "user", "content": [{"type": "input_text", "text": 3}]}],
     "input[0].content[0].text"),
])
def test_bad_input_names_the_field(items: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        conversation({"model": "m", "input": items})
    assert info.value.param == param, info.value.message


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
    ({"tools": [{"name": "f"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"tool_choice": {"name": "f"}}, "tool_choice.type"),
])
def test_bad_tools_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        conversation({"model": "m", "input": "x", **body})
    assert info.value.param == param, info.value.message


def test_call_ids_are_checked_on_items_and_conversations() -> None:
    answered = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "1"}]
    check_call_ids(answered)
    check_call_ids(rt.decode_input_items(answered))
    with pytest.raises(InvalidRequest) as info:
        check_call_ids([answered[1]])
    assert info.value.param == "input[0].call_id" and "'c'" in info.value.message
    # An item reference may hold the call.
    check_call_ids([{"type": "item_reference", "id": "fc_1"}, answered[1]])
    check_call_ids(Conversation(messages=[
        Message(role="assistant", parts=[ToolCall(id="c", name="f")]),
        Message(role="tool", parts=[ToolResult(call_id="c")])]))
    with pytest.raises(InvalidRequest):
        check_call_ids(Conversation(messages=[Message(role="tool",
                                                      parts=[ToolResult(call_id="c")])]))
    # Outputs answering calls kept upstream (an OpenAI conversation) are not checked.
    conv = conversation({"model": "m", "input": [answered[1]], "conversation": "conv_1"})
    assert conv.messages[0].parts == [ToolResult(call_id="c", content=[Text(text="1")])]


def test_previous_response_id_expanded_by_the_route() -> None:
    """The route puts the stored input and output items before the new input and types the
    body again; the call made in the stored turn answers the new output."""
    first = request({"model": "gpt-5", "input": "weather in Paris?", "tools": [WEATHER]})
    body = RESPONSES.encode_result(Result(id="x", model="gpt-5", parts=[
        ToolCall(id="call_9", name="get_weather", arguments="{}")], finish="tool_calls"), first)
    raw: dict[str, Any] = {"model": "gpt-5", "tools": [WEATHER], "input": [
        {"type": "function_call_output", "call_id": "call_9", "output": "18C"}]}
    raw["input"] = input_items_of(first.raw) + output_items_of(body) + input_items_of(raw)
    conv = RESPONSES.to_conversation(msgspec.convert(raw, rt.ResponsesRequest, strict=False))
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool"]
    call = conv.messages[1].parts[0]
    assert isinstance(call, ToolCall) and call.id == "call_9"
    assert call.item_id is not None and call.item_id.startswith("fc_")


def test_input_items_of() -> None:
    assert input_items_of({"input": "hi"}) == [{"type": "message", "role": "user",
                                                "content": "hi"}]
    assert input_items_of({}) == []
    assert input_items_of({"input": [{"role": "user", "content": "a"}, {"id": "msg_1"},
                                     {"type": "function_call_output", "call_id": "c",
                                      "output": "1"}]}) == [
        {"type": "message", "role": "user", "content": "a"},
        {"type": "item_reference", "id": "msg_1"},
        {"type": "function_call_output", "call_id": "c", "output": "1"}]
    with pytest.raises(InvalidRequest) as info:
        input_items_of({"input": ["x"]})
    assert info.value.param == "input[0]"


# --- Result -> Response ---------------------------------------------------------------------

ECHOED: dict[str, Any] = {
    "model": "gpt-5", "input": "hi", "instructions": "Be brief.", "tools": [WEATHER],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "text": {"format": {"type": "text"}, "verbosity": "low"}, "temperature": 0.3,
    "top_p": 0.9, "metadata": {"k": "v"}, "max_output_tokens": 300,
    "previous_response_id": "resp_prev", "store": False, "user": "u-1",
    "reasoning": {"effort": "low"}, "parallel_tool_calls": False,
}


def test_a_result_is_a_response_the_sdk_parses() -> None:
    result = Result(
        id="chatcmpl-123", model="gpt-5-2025-08-07", created=1741476543,
        parts=[Reasoning(summary=["Thinking."], encrypted_content="enc", item_id="rs_up",
                         source="responses"),
               Text(text="In a peaceful grove"), Text(text=" beneath a silver moon."),
               ToolCall(id="call_1", name="get_weather", arguments="{\"location\":\"Paris\"}")],
        finish="tool_calls",
        usage=Usage(input_tokens=36, output_tokens=87, cached_input_tokens=20,
                    cache_write_input_tokens=5, reasoning_tokens=64))
    body = RESPONSES.encode_result(result, request(ECHOED))
    r = SDKResponse.model_validate_json(body)
    assert r.object == "response" and r.status == "completed" and r.error is None
    assert r.id.startswith("resp_") and r.created_at == 1741476543
    assert r.model == "gpt-5-2025-08-07"
    assert r.output_text == "In a peaceful grove beneath a silver moon."
    reasoning, message, call = r.output
    assert reasoning.type == "reasoning" and reasoning.id == "rs_up"
    assert reasoning.encrypted_content == "enc" and reasoning.summary[0].text == "Thinking."
    assert message.type == "message" and message.id.startswith("msg_")
    assert call.type == "function_call" and call.id is not None and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.status) == ("call_1", "get_weather", "completed")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (36, 87, 123)
    assert r.usage.input_tokens_details.cached_tokens == 20
    assert r.usage.input_tokens_details.cache_write_tokens == 5
    assert r.usage.output_tokens_details.reasoning_tokens == 64
    # The request's settings, echoed as OpenAI does.
    assert r.instructions == "Be brief." and r.temperature == 0.3 and r.top_p == 0.9
    assert r.metadata == {"k": "v"} and r.max_output_tokens == 300 and r.user == "u-1"
    assert r.previous_response_id == "resp_prev" and json.loads(body)["store"] is False
    assert r.parallel_tool_calls is False
    assert r.tool_choice.type == "function"  # type: ignore[union-attr]
    assert [t.type for t in r.tools] == ["function"]
    assert r.text is not None and r.text.verbosity == "low"
    assert r.reasoning is not None and r.reasoning.effort == "low"


@pytest.mark.parametrize("finish,status,reason", [
    ("stop", "completed", None), ("tool_calls", "completed", None),
    ("length", "incomplete", "max_output_tokens"),
    ("content_filter", "incomplete", "content_filter"),
])
def test_finish_reasons(finish: Any, status: str, reason: str | None) -> None:
    body = RESPONSES.encode_result(Result(id="resp_kept", model="m", parts=[Text(text="x")],
                                          finish=finish), request({"model": "m", "input": "x"}))
    r = SDKResponse.model_validate_json(body)
    assert r.id == "resp_kept" and r.status == status
    assert (r.incomplete_details.reason if r.incomplete_details else None) == reason
    assert r.output[0].status == ("incomplete" if reason else "completed")  # type: ignore[union-attr]


def test_refusals_foreign_reasoning_custom_calls_and_namespaces() -> None:
    raw = {"model": "m", "input": "x", "tools": [
        {"type": "namespace", "name": "crm", "description": "CRM",
         "tools": [{"type": "function", "name": "find_customer"}]}]}
    result = Result(id="msg_01", model="claude-sonnet-4-5", parts=[
        Reasoning(text="Let me think.", signature="sig", source="messages"),
        Refusal(text="I can't help with that."),
        ToolCall(id="toolu_1", name="find_customer", arguments="{}"),
        ToolCall(id="toolu_2", name="sh", arguments="ls -la", kind="custom"),
    ], finish="tool_calls")
    r = SDKResponse.model_validate_json(RESPONSES.encode_result(result, request(raw)))
    reasoning, message, call, custom = r.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.encrypted_content is None  # a signature only goes back to Anthropic
    assert reasoning.content is not None and reasoning.content[0].text == "Let me think."
    assert message.type == "message" and message.content[0].type == "refusal"
    assert r.output_text == ""
    assert call.type == "function_call" and call.namespace == "crm"
    assert custom.type == "custom_tool_call" and custom.input == "ls -la"
    assert custom.call_id == "toolu_2"


# --- hub stream -> SSE ----------------------------------------------------------------------


def encode_stream(events: Iterable[Event], body: dict[str, Any], *,
                  fail: GatewayError | None = None) -> list[bytes]:
    enc = RESPONSES.stream_encoder(request(body))
    out: list[bytes] = []
    for e in events:
        out.extend(enc.feed(e))
    out.extend(enc.fail(fail) if fail is not None else enc.close())
    assert enc.close() == [] and enc.feed(TextDelta(text="late")) == []  # nothing after
    return out


def parse_sse(blocks: list[bytes]) -> list[Any]:
    """Each block is one ``event:``/``data:`` pair whose name matches its type; the data
    must validate as the SDK's ResponseStreamEvent."""
    parsed = []
    for block in blocks:
        assert block.endswith(b"\n\n")
        head, data = block[:-2].split(b"\n", 1)
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        event = sdk_event.validate_json(data[6:])
        assert event.type == head[7:].decode()
        parsed.append(event)
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    return parsed


def through_sdk(blocks: list[bytes], **params: Any) -> tuple[list[Any], SDKResponse]:
    """What the openai SDK's stream helper (its SSE decoder and ResponseStreamState) makes
    of the stream: every event and the final response it rebuilds."""
    sse = b"".join(blocks)

    def handler(req: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    client = openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
                           _strict_response_validation=True)
    with client, client.responses.stream(model="m", input="x", **params) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


def test_a_text_stream() -> None:
    events: list[Event] = [
        Start(id="chatcmpl-1", model="gpt-4o-2024-08-06"), TextDelta(text="Hi"),
        TextDelta(text=" there"), Finish(reason="stop"),
        UsageUpdate(usage=Usage(input_tokens=5, output_tokens=2))]
    blocks = encode_stream(events, {"model": "gpt-4o", "input": "x"})
    parsed = parse_sse(blocks)
    assert [e.type for e in parsed] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    created, done = parsed[0].response, parsed[-1].response
    assert created.status == "in_progress" and created.output == [] and created.usage is None
    assert done.id == created.id and done.id.startswith("resp_")
    assert done.model == "gpt-4o-2024-08-06" and done.output_text == "Hi there"
    # Usage came after Finish (as Chat upstreams send it): it is in response.completed.
    assert done.usage.input_tokens == 5 and done.usage.total_tokens == 7
    sdk_events, final = through_sdk(blocks)
    assert final.output_text == "Hi there" and final.id == done.id
    assert [e.snapshot for e in sdk_events if e.type == "response.output_text.delta"] == [
        "Hi", "Hi there"]


def test_reasoning_text_and_parallel_calls_rebuild_in_the_sdk() -> None:
    events: list[Event] = [
        Start(id="resp_up", model="gpt-5"),
        ReasoningDelta(text="**Weather**", summary=True),
        ReasoningDelta(text=" lookup", summary=True),
        ReasoningEnd(encrypted_content="gAAAAB", item_id="rs_up", source="responses"),
        TextDelta(text="Checking."),
        ToolCallStart(index=0, id="call_1", name="get_weather"),
        ToolCallDelta(index=0, arguments="{\"location\":"),
        ToolCallDelta(index=0, arguments="\"Paris\"}"),
        ToolCallStart(index=1, id="call_2", name="get_weather", item_id="fc_up"),
        ToolCallDelta(index=1, arguments="{\"location\":\"Lyon\"}"), ToolCallEnd(index=1),
        Finish(reason="tool_calls"),
        UsageUpdate(usage=Usage(input_tokens=75, output_tokens=150, reasoning_tokens=128)),
    ]
    blocks = encode_stream(events, {"model": "gpt-5", "input": "x", "tools": [WEATHER]})
    parsed = parse_sse(blocks)
    types = [e.type for e in parsed]
    assert types[2:8] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.done",
                          "response.reasoning_summary_part.done"]
    assert types.count("response.function_call_arguments.delta") == 3
    assert types.count("response.output_item.done") == 4 and types[-1] == "response.completed"
    final_event = parsed[-1].response
    assert final_event.id == "resp_up"
    _, final = through_sdk(blocks, tools=[WEATHER])
    reasoning, message, call1, call2 = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "**Weather** lookup"
    assert reasoning.encrypted_content == "gAAAAB"
    assert message.type == "message" and final.output_text == "Checking."
    assert call1.type == "function_call" and json.loads(call1.arguments) == {"location": "Paris"}
    assert call2.type == "function_call" and call2.id == "fc_up"
    assert call2.arguments == "{\"location\":\"Lyon\"}" and call2.status == "completed"
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 128


def test_refusal_reasoning_text_and_custom_calls_stream() -> None:
    events: list[Event] = [
        Start(id="msg_1", model="claude"), ReasoningDelta(text="Hmm."),
        ReasoningEnd(signature="sig", source="messages"),
        RefusalDelta(text="I can't."), TextDelta(text=" But here:"),
        ToolCallStart(index=0, id="call_c", name="sh", kind="custom"),
        ToolCallDelta(index=0, arguments="ls"), ToolCallEnd(index=0), Finish(reason="tool_calls"),
    ]
    blocks = encode_stream(events, {"model": "m", "input": "x"})
    parsed = parse_sse(blocks)
    types = [e.type for e in parsed]
    assert "response.reasoning_text.delta" in types and "response.refusal.delta" in types
    assert "response.custom_tool_call_input.delta" in types
    assert "response.custom_tool_call_input.done" in types
    final = parsed[-1].response
    reasoning, message, custom = final.output
    assert reasoning.content[0].text == "Hmm." and reasoning.encrypted_content is None
    assert [c.type for c in message.content] == ["refusal", "output_text"]
    assert message.content[0].refusal == "I can't." and final.output_text == " But here:"
    assert custom.type == "custom_tool_call" and custom.input == "ls"
    assert final.usage is None
    _, rebuilt = through_sdk(blocks)
    assert rebuilt.output[2].input == "ls"  # type: ignore[union-attr]


def test_a_cut_answer_is_response_incomplete() -> None:
    blocks = encode_stream([Start(id="x", model="m"), TextDelta(text="Once upon"),
                            Finish(reason="length")], {"model": "m", "input": "x",
                                                       "max_output_tokens": 2})
    last = parse_sse(blocks)[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output[0].status == "incomplete"
    assert last.response.max_output_tokens == 2


def test_a_failure_mid_stream_is_response_failed_and_nothing_after() -> None:
    blocks = encode_stream(
        [Start(id="x", model="m"), TextDelta(text="par"),
         ToolCallStart(index=0, id="call_1", name="f"), ToolCallDelta(index=0, arguments="{")],
        {"model": "m", "input": "x"},
        fail=UpstreamError("The upstream stream failed.", code="stream_interrupted"))
    parsed = parse_sse(blocks)
    assert parsed[-1].type == "response.failed"
    failed = parsed[-1].response
    assert failed.id == parsed[0].response.id and failed.status == "failed"
    assert failed.error.code == "server_error"
    assert failed.error.message == "The upstream stream failed."
    message, call = failed.output
    assert message.content[0].text == "par" and message.status == "completed"
    assert call.arguments == "{" and call.status == "incomplete"
    assert "response.completed" not in [e.type for e in parsed]


def test_a_failure_before_any_output() -> None:
    # A native stream that fails: the upstream already sent response.created.
    parsed = parse_sse(encode_stream([], {"model": "m", "input": "x"},
                                     fail=RateLimited("Slow down.")))
    assert [e.type for e in parsed] == ["response.failed"]
    assert parsed[0].response.error.code == "rate_limit_exceeded"


def test_a_whole_result_replayed_as_a_stream() -> None:
    result = Result(id="r", model="m", parts=[
        Reasoning(summary=["s"], encrypted_content="e", item_id="rs_1", source="responses"),
        Text(text="answer"), ToolCall(id="c", name="f", arguments="{}")], finish="tool_calls",
        usage=Usage(input_tokens=1, output_tokens=2))
    blocks = encode_stream(result_events(result), {"model": "m", "input": "x"})
    whole = SDKResponse.model_validate_json(RESPONSES.encode_result(result, request(
        {"model": "m", "input": "x"})))
    streamed = parse_sse(blocks)[-1].response
    assert [o.type for o in streamed.output] == [o.type for o in whole.output]
    assert streamed.output_text == whole.output_text == "answer"
    assert streamed.usage == whole.usage


# --- Conversation -> a Responses upstream ---------------------------------------------------


def sent(conv: Conversation, *, stream: bool = False,
         options: EncodeOptions | None = None) -> tuple[dict[str, Any], Outbound]:
    out = RESPONSES.encode_request(conv, model="gpt-5", stream=stream,
                                   options=options or EncodeOptions())
    body = json.loads(out.body)
    sdk_items.validate_python(body["input"])
    sdk_tools.validate_python(body.get("tools", []))
    return body, out


# What the Chat Completions and Messages front doors make of their requests: system text,
# an image, a document, parallel calls and their results, an Anthropic thinking block.
CHAT_LIKE = Conversation(
    messages=[
        Message(role="system", parts=[Text(text="You are terse.")]),
        Message(role="user", parts=[Text(text="What is this?"),
                                    Image(data="iVBO", media_type="image/png"),
                                    File(data="JVBE", media_type="application/pdf",
                                         filename="a.pdf")]),
        Message(role="assistant", parts=[
            Reasoning(text="thinking", signature="sig", source="messages"),
            Text(text="Let me check."),
            ToolCall(id="call_1", name="get_weather", arguments="{\"location\":\"Paris\"}"),
            ToolCall(id="call_2", name="get_weather", arguments="{\"location\":\"Lyon\"}")]),
        Message(role="tool", parts=[ToolResult(call_id="call_1", content=[Text(text="18C")])]),
        Message(role="tool", parts=[ToolResult(call_id="call_2", content=[Text(text="20C")])]),
    ],
    tools=[FunctionTool(name="get_weather", parameters=WEATHER["parameters"])],
    tool_choice=NamedToolChoice(name="get_weather"), parallel_tool_calls=True,
    output_format=JSONSchemaFormat(name="w", schema={"type": "object"}, strict=True),
    max_output_tokens=500, temperature=0.2, top_p=0.9, user="u", metadata={"k": "v"},
    reasoning=ReasoningConfig(effort="low"), seed=7,
)


def test_a_conversation_as_a_responses_request() -> None:
    body, out = sent(CHAT_LIKE, stream=True)
    assert body["model"] == "gpt-5" and body["store"] is False and body["stream"] is True
    assert body["input"] == [
        {"type": "message", "role": "system",
         "content": [{"type": "input_text", "text": "You are terse."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
             "filename": "a.pdf"}]},
        {"type": "message", "role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": "{\"location\":\"Paris\"}"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": "{\"location\":\"Lyon\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2", "output": "20C"},
    ]
    assert body["tools"] == [{"type": "function", "name": "get_weather",
                              "parameters": WEATHER["parameters"], "strict": False}]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["parallel_tool_calls"] is True
    assert body["text"] == {"format": {"type": "json_schema", "name": "w",
                                       "schema": {"type": "object"}, "strict": True}}
    assert body["reasoning"] == {"effort": "low"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert (body["max_output_tokens"], body["temperature"], body["top_p"], body["user"],
            body["metadata"]) == (500, 0.2, 0.9, "u", {"k": "v"})
    assert "seed" not in body and out.dropped_tools == [] and out.dropped_params == []


def test_a_responses_conversation_round_trips() -> None:
    body = {"model": "gpt-5", "input": TOOL_TURN + [
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "q"}},
        {"type": "item_reference", "id": "msg_0"},
        {"type": "custom_tool_call", "call_id": "c9", "name": "sh", "input": "ls"},
        {"type": "custom_tool_call_output", "call_id": "c9", "output": "a"}],
        "tools": [WEATHER, {"type": "web_search"}, {"type": "custom", "name": "sh"}],
        "tool_choice": {"type": "allowed_tools", "mode": "auto",
                        "tools": [{"type": "function", "name": "get_weather"}]},
        "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "high",
                                                                   "summary": "auto"},
        "max_output_tokens": 100, "conversation": {"id": "conv_1"}}
    conv = conversation(body)
    out, _ = sent(conv)
    again = RESPONSES.to_conversation(msgspec.convert(out, rt.ResponsesRequest))
    assert again.messages == conv.messages
    assert (again.tools, again.tool_choice, again.output_format, again.reasoning,
            again.max_output_tokens) == (conv.tools, conv.tool_choice, conv.output_format,
                                         conv.reasoning, conv.max_output_tokens)
    assert out["conversation"] == {"id": "conv_1"}
    assert out["include"] == ["reasoning.encrypted_content"]


def test_reasoning_goes_back_only_with_its_encrypted_content() -> None:
    conv = Conversation(messages=[Message(role="assistant", parts=[
        Reasoning(summary=["s"], item_id="rs_1", source="responses"),  # stored, not encrypted
        Reasoning(text="t", signature="sig", source="messages"),
        Reasoning(summary=["s"], encrypted_content="e", item_id="rs_2", source="responses"),
        Text(text="hi")])])
    body, _ = sent(conv)
    assert body["input"] == [
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "s"}],
         "encrypted_content": "e"},
        {"type": "message", "role": "assistant", "content": "hi"}]


def test_tools_the_upstream_cannot_run() -> None:
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="x")])], tools=[
        FunctionTool(name="f"),
        Opaque(kind="tool:web_search_20250305", path="tools[1].type",
               value={"type": "web_search_20250305", "name": "web_search"}),
        Opaque(kind="tool:custom", path="tools[2].type",
               value={"type": "custom", "custom": {"name": "grep", "description": "d"}}),
    ])
    body, out = sent(conv)
    assert body["tools"] == [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}},
         "strict": False},
        {"type": "custom", "name": "grep", "description": "d"}]
    assert out.dropped_tools == ["web_search_20250305"]
    with pytest.raises(InvalidRequest) as info:
        sent(conv, options=EncodeOptions(hosted_tools="reject"))
    assert info.value.param == "tools[1].type"


@pytest.mark.parametrize("field,value", [
    ("stop", ["END"]), ("n", 2), ("logit_bias", {"1": 2.0}), ("top_k", 5),
    ("presence_penalty", 0.5), ("frequency_penalty", 0.5),
])
def test_fields_the_responses_api_lacks(field: str, value: Any) -> None:
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="x")])],
                        **{field: value})
    with pytest.raises(InvalidRequest) as info:
        sent(conv)
    assert info.value.param == field
    body, out = sent(conv, options=EncodeOptions(drop_params=(field,)))
    assert field not in body and out.dropped_params == [field]


def test_drop_params_removes_what_the_model_refuses() -> None:
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="x")])],
                        temperature=0.5, top_p=0.5)
    body, out = sent(conv, options=EncodeOptions(drop_params=("temperature",)))
    assert "temperature" not in body and body["top_p"] == 0.5
    assert out.dropped_params == ["temperature"]


def test_what_cannot_be_sent_is_refused_naming_its_field() -> None:
    audio = Opaque(kind="input_audio", path="messages[0].content[1]",
                   value={"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}})
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="x"), audio])])
    with pytest.raises(InvalidRequest) as info:
        sent(conv)
    assert info.value.param == "messages[0].content[1]"
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="x")])],
                        unsupported=[Opaque(kind="audio", path="audio", value={})])
    with pytest.raises(InvalidRequest) as info:
        sent(conv)
    assert info.value.param == "audio"


# --- a Responses upstream's answers ----------------------------------------------------------

# The create example of the API reference, with a reasoning item and a function call.
UPSTREAM_BODY: dict[str, Any] = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response",
    "created_at": 1741476542, "status": "completed", "error": None,
    "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {"type": "reasoning", "id": "rs_67cc", "summary": [
            {"type": "summary_text", "text": "**Story**"}], "encrypted_content": "gAAAAB"},
        {"type": "message", "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
         "status": "completed", "role": "assistant", "content": [
             {"type": "output_text", "text": "In a peaceful grove beneath a silver moon...",
              "annotations": []}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "moon"}},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": "{\"location\":\"Paris\"}", "status": "completed"},
    ],
    "parallel_tool_calls": True, "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
    "truncation": "disabled",
    "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 8,
                                                           "cache_write_tokens": 0},
              "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 12},
              "total_tokens": 123},
    "user": None, "metadata": {},
}


def test_an_upstream_response_as_a_result() -> None:
    SDKResponse.model_validate(UPSTREAM_BODY)
    result = RESPONSES.decode_result(json.dumps(UPSTREAM_BODY).encode(), Outbound(body=b""))
    assert result.id == UPSTREAM_BODY["id"] and result.model == "gpt-4.1-2025-04-14"
    assert result.created == 1741476542 and result.finish == "tool_calls"
    assert result.parts[:2] == [
        Reasoning(summary=["**Story**"], encrypted_content="gAAAAB", item_id="rs_67cc",
                  source="responses"),
        Text(text="In a peaceful grove beneath a silver moon...")]
    assert isinstance(result.parts[2], Opaque) and result.parts[2].kind == "web_search_call"
    assert result.parts[3] == ToolCall(id="call_1", name="get_weather",
                                       arguments="{\"location\":\"Paris\"}", item_id="fc_1")
    assert result.usage == Usage(input_tokens=36, output_tokens=87, cached_input_tokens=8,
                                 reasoning_tokens=12)
    # Kept as-is when the answer goes back out through this dialect.
    again = SDKResponse.model_validate_json(RESPONSES.encode_result(result, request(
        {"model": "m", "input": "x"})))
    assert again.id == UPSTREAM_BODY["id"] and again.output[0].id == "rs_67cc"


def test_incomplete_and_failed_upstream_responses() -> None:
    cut = {**UPSTREAM_BODY, "status": "incomplete",
           "incomplete_details": {"reason": "max_output_tokens"}, "output": []}
    assert RESPONSES.decode_result(json.dumps(cut).encode(), Outbound(body=b"")).finish == "length"
    failed = {**UPSTREAM_BODY, "status": "failed", "output": [],
              "error": {"code": "server_error", "message": "boom sk-abcdefghijklmnop"}}
    with pytest.raises(UpstreamError) as info:
        RESPONSES.decode_result(json.dumps(failed).encode(), Outbound(body=b""))
    assert "sk-abcdefgh" not in info.value.message and info.value.code == "server_error"
    with pytest.raises(msgspec.ValidationError):
        RESPONSES.decode_result(b'{"choices": []}', Outbound(body=b""))


def upstream_stream() -> list[tuple[str, dict[str, Any]]]:
    """A gpt-5 stream as OpenAI sends it: reasoning summary, text, a function call."""
    base = {k: v for k, v in UPSTREAM_BODY.items() if k not in ("output", "usage")}
    base = {**base, "id": "resp_up", "model": "gpt-5-2025-08-07", "status": "in_progress",
            "output": [], "usage": None}
    rs = {"id": "rs_up", "type": "reasoning", "summary": []}
    msg = {"id": "msg_up", "type": "message", "status": "in_progress", "role": "assistant",
           "content": []}
    fc = {"id": "fc_up", "type": "function_call", "status": "in_progress", "arguments": "",
          "call_id": "call_up", "name": "get_weather"}
    done_rs = {**rs, "encrypted_content": "gAAAAB",
               "summary": [{"type": "summary_text", "text": "**Plan** first"},
                           {"type": "summary_text", "text": "then act"}]}
    text = {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
    done_msg = {**msg, "status": "completed", "content": [text]}
    done_fc = {**fc, "status": "completed", "arguments": "{\"location\":\"Paris\"}"}
    usage = {"input_tokens": 75, "input_tokens_details": {"cached_tokens": 0,
                                                          "cache_write_tokens": 0},
             "output_tokens": 150, "output_tokens_details": {"reasoning_tokens": 128},
             "total_tokens": 225}
    ev: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": base}),
        ("response.in_progress", {"response": base}),
        ("response.output_item.added", {"output_index": 0, "item": rs}),
        ("response.reasoning_summary_part.added", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 0,
            "part": {"type": "summary_text", "text": ""}}),
        ("response.reasoning_summary_text.delta", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 0, "delta": "**Plan**",
            "obfuscation": "aB3"}),
        ("response.reasoning_summary_text.delta", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 0, "delta": " first"}),
        ("response.reasoning_summary_text.done", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 0,
            "text": "**Plan** first"}),
        ("response.reasoning_summary_part.done", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 0,
            "part": {"type": "summary_text", "text": "**Plan** first"}}),
        ("response.reasoning_summary_part.added", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 1,
            "part": {"type": "summary_text", "text": ""}}),
        ("response.reasoning_summary_text.delta", {
            "item_id": "rs_up", "output_index": 0, "summary_index": 1, "delta": "then act"}),
        ("response.output_item.done", {"output_index": 0, "item": done_rs}),
        ("response.output_item.added", {"output_index": 1, "item": msg}),
        ("response.content_part.added", {
            "item_id": "msg_up", "output_index": 1, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        ("response.output_text.delta", {"item_id": "msg_up", "output_index": 1,
                                        "content_index": 0, "delta": "Hel", "logprobs": []}),
        ("response.output_text.delta", {"item_id": "msg_up", "output_index": 1,
                                        "content_index": 0, "delta": "lo!", "logprobs": []}),
        ("response.output_text.done", {"item_id": "msg_up", "output_index": 1,
                                       "content_index": 0, "text": "Hello!", "logprobs": []}),
        ("response.content_part.done", {"item_id": "msg_up", "output_index": 1,
                                        "content_index": 0, "part": text}),
        ("response.output_item.done", {"output_index": 1, "item": done_msg}),
        ("response.output_item.added", {"output_index": 2, "item": fc}),
        ("response.function_call_arguments.delta", {
            "item_id": "fc_up", "output_index": 2, "delta": "{\"location\":"}),
        ("response.function_call_arguments.delta", {
            "item_id": "fc_up", "output_index": 2, "delta": "\"Paris\"}"}),
        ("response.function_call_arguments.done", {
            "item_id": "fc_up", "output_index": 2, "arguments": "{\"location\":\"Paris\"}"}),
        ("response.output_item.done", {"output_index": 2, "item": done_fc}),
        ("response.completed", {"response": {**base, "status": "completed",
                                             "output": [done_rs, done_msg, done_fc],
                                             "usage": usage}}),
    ]
    return [(name, {"type": name, "sequence_number": i, **data})
            for i, (name, data) in enumerate(ev)]


def decode_stream(events: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    dec = RESPONSES.stream_decoder(Outbound(body=b""))
    out: list[Event] = []
    for name, data in events:
        assert not dec.done
        out.extend(dec.feed(name.encode(), json.dumps(data).encode()))
    assert dec.done
    return out


def test_an_upstream_stream_as_hub_events() -> None:
    events = upstream_stream()
    for _, data in events:
        sdk_event.validate_python(data)
    assert decode_stream(events) == [
        Start(id="resp_up", model="gpt-5-2025-08-07", created=1741476542),
        ReasoningDelta(text="**Plan**", summary=True), ReasoningDelta(text=" first", summary=True),
        ReasoningDelta(text="\n\n", summary=True), ReasoningDelta(text="then act", summary=True),
        ReasoningEnd(encrypted_content="gAAAAB", item_id="rs_up", source="responses"),
        TextDelta(text="Hel"), TextDelta(text="lo!"),
        ToolCallStart(index=0, id="call_up", name="get_weather", item_id="fc_up"),
        ToolCallDelta(index=0, arguments="{\"location\":"),
        ToolCallDelta(index=0, arguments="\"Paris\"}"), ToolCallEnd(index=0),
        UsageUpdate(usage=Usage(input_tokens=75, output_tokens=150, cached_input_tokens=0,
                                reasoning_tokens=128)),
        Finish(reason="tool_calls"),
    ]


def test_whole_items_without_deltas_still_come_through() -> None:
    done_fc = {"id": "fc_1", "type": "function_call", "status": "completed",
               "arguments": "{}", "call_id": "c", "name": "f"}
    msg = {"id": "m", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "whole", "annotations": []}]}
    got = decode_stream([
        ("response.output_item.done", {"output_index": 0, "item": msg}),
        ("response.output_item.done", {"output_index": 1, "item": done_fc}),
        ("response.incomplete", {"response": {"id": "r", "output": [], "status": "incomplete",
                                              "incomplete_details": {"reason":
                                                                     "content_filter"}}}),
    ])
    assert got[1:] == [TextDelta(text="whole"),
                       ToolCallStart(index=0, id="c", name="f", item_id="fc_1"),
                       ToolCallDelta(index=0, arguments="{}"), ToolCallEnd(index=0),
                       Finish(reason="content_filter")]
    assert isinstance(got[0], Start)


def test_upstream_stream_failures_raise() -> None:
    dec = RESPONSES.stream_decoder(Outbound(body=b""))
    with pytest.raises(GatewayError) as info:
        dec.feed(b"error", b'{"type": "error", "code": "rate_limit_exceeded", '
                 b'"message": "Slow down", "param": null, "sequence_number": 3}')
    assert info.value.message == "Slow down" and info.value.code == "rate_limit_exceeded"
    dec = RESPONSES.stream_decoder(Outbound(body=b""))
    dec.feed(b"response.created", json.dumps({"response": {"id": "r", "output": []}}).encode())
    with pytest.raises(UpstreamError) as info:
        dec.feed(b"response.failed", json.dumps({"response": {
            "id": "r", "output": [], "status": "failed",
            "error": {"code": "server_error", "message": "The model failed."}}}).encode())
    assert info.value.message == "The model failed." and dec.done
    with pytest.raises(UpstreamError):
        RESPONSES.stream_decoder(Outbound(body=b"")).feed(b"response.output_item.added", b"{")


def test_our_stream_read_back_by_the_upstream_decoder() -> None:
    events: list[Event] = [
        Start(id="resp_1", model="m"), ReasoningDelta(text="plan", summary=True),
        ReasoningEnd(encrypted_content="e", item_id="rs_x", source="responses"),
        TextDelta(text="a"), TextDelta(text="b"), RefusalDelta(text="no"),
        ToolCallStart(index=0, id="c1", name="f"), ToolCallDelta(index=0, arguments="{}"),
        ToolCallEnd(index=0), ToolCallStart(index=1, id="c2", name="g", kind="custom"),
        ToolCallDelta(index=1, arguments="x"), ToolCallEnd(index=1), Finish(reason="tool_calls"),
        UsageUpdate(usage=Usage(input_tokens=3, output_tokens=4, cached_input_tokens=0,
                                reasoning_tokens=0))]
    blocks = encode_stream(events, {"model": "m", "input": "x"})
    pairs = [(b.split(b"\n")[0][7:].decode(), json.loads(b.split(b"\n")[1][6:])) for b in blocks]
    got = decode_stream(pairs)
    content = (TextDelta, RefusalDelta, ReasoningDelta, ToolCallDelta, ToolCallEnd)
    assert [e for e in got if isinstance(e, content)] == [
        e for e in events if isinstance(e, content)]
    assert got[-2:] == [events[-1], events[-2]]  # usage is read from response.completed
    starts = [e for e in got if isinstance(e, ToolCallStart)]
    assert [(s.id, s.name, s.kind) for s in starts] == [("c1", "f", "function"),
                                                        ("c2", "g", "custom")]
    ends = [e for e in got if isinstance(e, ReasoningEnd)]
    assert len(ends) == 1 and ends[0].encrypted_content == "e"


def test_upstream_error_bodies() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-proj-abcdefgh1234.", ' \
           b'"type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}'
    err = RESPONSES.error_from(401, body, "oai")
    assert err.status == 401 and err.type == "invalid_request_error"
    assert err.code == "invalid_api_key" and "sk-proj" not in err.message
    bare = RESPONSES.error_from(502, b"<html>Bad gateway</html>", "oai")
    assert bare.status == 502 and bare.message == "Provider oai answered 502."
    assert json.loads(RESPONSES.error_body(InvalidRequest("bad", param="input[0].type"))) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "input[0].type",
                  "code": None}}


# --- native passthrough ---------------------------------------------------------------------


def test_native_body_replaces_only_the_model() -> None:
    raw: dict[str, object] = {"model": "alias", "input": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "web_search"}], "future_field": {"x": 1}}
    assert json.loads(RESPONSES.native_body(raw, model="gpt-5", stream=False)) == {
        **raw, "model": "gpt-5"}
    assert json.loads(RESPONSES.native_body({**raw, "stream": True}, model="gpt-5",
                                            stream=True)) == {**raw, "model": "gpt-5",
                                                              "stream": True}
    assert raw["model"] == "alias"


def test_native_usage() -> None:
    body = json.dumps(UPSTREAM_BODY).encode()
    assert RESPONSES.native_usage(body) == Usage(input_tokens=36, output_tokens=87,
                                                 cached_input_tokens=8, reasoning_tokens=12)
    assert RESPONSES.native_usage(b'{"id": "r", "usage": null}') is None


def test_native_relay_forwards_events_unchanged() -> None:
    relay = RESPONSES.native_relay(request({"model": "m", "input": "x"}))
    events = upstream_stream()
    for name, data in events[:-1]:
        raw = json.dumps(data).encode()
        assert relay.relay(name.encode(), raw) == b"event: " + name.encode() + b"\ndata: " + \
            raw + b"\n\n"
        assert relay.usage is None and not relay.done
    # Usage-looking text in a delta is not usage: only the final event is read.
    tricky = b'{"type":"response.output_text.delta","delta":"\\"usage\\":{\\"input_tokens\\":9}"}'
    assert relay.relay(b"response.output_text.delta", tricky) is not None
    assert relay.usage is None
    name, data = events[-1]
    relay.relay(name.encode(), json.dumps(data).encode())
    assert relay.done
    assert relay.usage == Usage(input_tokens=75, output_tokens=150, cached_input_tokens=0,
                                reasoning_tokens=128)


def test_native_relay_ends() -> None:
    relay = RESPONSES.native_relay(request({"model": "m", "input": "x"}))
    relay.relay(b"response.incomplete", json.dumps({"type": "response.incomplete", "response": {
        "id": "r", "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}}).encode())
    assert relay.done and relay.usage == Usage(input_tokens=1, output_tokens=2,
                                               cached_input_tokens=0, reasoning_tokens=0)
    failed = RESPONSES.native_relay(request({"model": "m", "input": "x"}))
    out = failed.relay(b"response.failed", b'{"type":"response.failed","response":{}}')
    assert out is not None and failed.done and failed.usage is None
    errored = RESPONSES.native_relay(request({"model": "m", "input": "x"}))
    with pytest.raises(GatewayError) as info:
        errored.relay(b"error", b'{"type":"error","code":"server_error","message":"boom"}')
    assert info.value.message == "boom"


def test_output_items_of_a_body_or_its_final_event() -> None:
    body = json.dumps(UPSTREAM_BODY).encode()
    assert output_items_of(body) == UPSTREAM_BODY["output"]
    event = json.dumps({"type": "response.completed", "sequence_number": 9,
                        "response": UPSTREAM_BODY}).encode()
    assert output_items_of(event) == UPSTREAM_BODY["output"]
