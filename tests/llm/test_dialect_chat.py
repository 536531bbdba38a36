"""The Chat Completions dialect: requests into the hub and back out as Chat bodies, answers
and streams in both directions (checked with the openai SDK's own models and stream
accumulator), the native passthrough relay, and upstream errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from gateway_core import openai_types as oa
from gateway_core.errors import GatewayError, InvalidRequest, UpstreamError
from gateway_llm.dialects.chat import CHAT, ChatStreamDecoder
from gateway_llm.hub import (
    Conversation,
    EncodeOptions,
    Event,
    File,
    Finish,
    FunctionTool,
    Image,
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

OPTIONS = EncodeOptions()


def decode(body: Mapping[str, Any]) -> oa.ChatCompletionRequest:
    return oa.decode_request(json.dumps(body).encode())


def conversation(body: Mapping[str, Any]) -> Conversation:
    return CHAT.to_conversation(decode(body))


def request(body: Mapping[str, Any], *, include_usage: bool = False) -> LLMRequest:
    typed = decode(body)
    return LLMRequest(CHAT, typed.model, typed, dict(body), stream=typed.stream is True,
                      include_usage=include_usage, created=1700000000)


def encode(conv: Conversation, *, model: str = "up-model", stream: bool = False,
           options: EncodeOptions = OPTIONS) -> dict[str, Any]:
    out = CHAT.encode_request(conv, model=model, stream=stream, options=options)
    body = json.loads(out.body)
    assert isinstance(body, dict)
    return body


def sse_data(blocks: list[bytes]) -> list[str]:
    out = []
    for block in blocks:
        assert block.startswith(b"data: ") and block.endswith(b"\n\n"), block
        out.append(block[6:-2].decode())
    return out


# --- round trips: chat -> Conversation -> chat --------------------------------------------
# Each body is typed with the SDK's own request TypedDict; it must come back as it went in
# (the model replaced), except where noted.

PDF = "JVBERi0xLjQK"
PNG = "iVBORw0KGgo="

SIMPLE: CompletionCreateParamsBase = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello!", "name": "ann"},
    ],
}

MULTIMODAL: CompletionCreateParamsBase = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                  "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}],
}

WEATHER_TOOL: ChatCompletionToolUnionParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]},
                 "strict": True},
}

FUNCTION_HISTORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
]

TOOLS: CompletionCreateParamsBase = {
    "model": "gpt-4o",
    "messages": FUNCTION_HISTORY,
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
}

CODE_TOOL: ChatCompletionToolUnionParam = {
    "type": "custom",
    "custom": {"name": "code_exec", "description": "Executes arbitrary Python code",
               "format": {"type": "grammar",
                          "grammar": {"definition": "start: /.+/", "syntax": "lark"}}},
}

CUSTOM: CompletionCreateParamsBase = {
    "model": "gpt-5",
    "messages": [
        {"role": "user", "content": "Use the code_exec tool to print hello world."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_c", "type": "custom",
             "custom": {"name": "code_exec", "input": "print('hello world')"}}]},
        {"role": "tool", "tool_call_id": "call_c", "content": "hello world"},
    ],
    "tools": [WEATHER_TOOL, CODE_TOOL],
    "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "custom", "custom": {"name": "code_exec"}}]}},
}

CUSTOM_CHOICE: CompletionCreateParamsBase = {
    "model": "gpt-5",
    "messages": [{"role": "user", "content": "Run it."}],
    "tools": [CODE_TOOL],
    "tool_choice": {"type": "custom", "custom": {"name": "code_exec"}},
}

PARAMS: CompletionCreateParamsBase = {
    "model": "o3",
    "messages": [{"role": "user", "content": "Give me JSON."}],
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "description": "d", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
    "reasoning_effort": "high",
    "max_completion_tokens": 500,
    "stop": ["END", "STOP"],
    "temperature": 0.2,
    "top_p": 0.9,
    "seed": 7,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "user": "u-1",
    "metadata": {"k": "v"},
    "service_tier": "flex",
}

AUDIO_OUT: CompletionCreateParamsBase = {
    "model": "gpt-4o-audio-preview",
    "messages": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": None, "audio": {"id": "audio_abc"}},
        {"role": "user", "content": "Again, in full."},
    ],
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "Hi there"},
}

DEPRECATED: CompletionCreateParamsBase = {
    "model": "gpt-3.5-turbo",
    "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None,
         "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "18C"},
    ],
    "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
    "function_call": "auto",
}


@pytest.mark.parametrize(
    ("body", "changes"),
    [
        (SIMPLE, {}),
        (MULTIMODAL, {}),
        (TOOLS, {}),
        (CUSTOM, {}),
        (CUSTOM_CHOICE, {}),
        (PARAMS, {}),
        (AUDIO_OUT, {}),
        (DEPRECATED, {}),
        # max_tokens is sent as its successor; one stop string as a list of one.
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
          "stop": "END"}, {"max_completion_tokens": 100, "stop": ["END"], "max_tokens": None}),
        # A list of one text part reads as the string it says.
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text",
                                                                      "text": "hi"}]}]},
         {"messages": [{"role": "user", "content": "hi"}]}),
    ],
    ids=["simple", "multimodal", "tools", "custom", "custom_choice", "params", "audio_out",
         "deprecated", "max_tokens", "text_list"],
)
def test_round_trip(body: dict[str, Any], changes: dict[str, Any]) -> None:
    expected = {**body, **changes, "model": "up-model"}
    expected = {k: v for k, v in expected.items() if v is not None}
    assert encode(conversation(body)) == expected


def test_hub_form_of_a_request() -> None:
    conv = conversation({**TOOLS, "stream": True, "n": 1})
    assert conv.stream is True and conv.n == 1
    assert conv.tools == [FunctionTool(
        name="get_weather", description="Current weather",
        parameters=WEATHER_TOOL["function"]["parameters"], strict=True)]  # type: ignore[typeddict-item]
    assert conv.tool_choice == NamedToolChoice(name="get_weather")
    assert conv.parallel_tool_calls is False
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "tool"]
    assert conv.messages[1].parts == [
        ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_2", name="get_weather", arguments='{"city": "Rome"}')]
    assert conv.messages[3].parts == [ToolResult(call_id="call_2", content=[Text(text="24C")])]

    parts = conversation(MULTIMODAL).messages[0].parts
    assert parts[:5] == [
        Text(text="What is in these?"),
        Image(url="https://example.com/a.png", detail="low"),
        Image(data=PNG, media_type="image/png"),
        File(data=PDF, media_type="application/pdf", filename="a.pdf"),
        File(file_id="file-abc123"),
    ]
    assert isinstance(parts[5], Opaque) and parts[5].kind == "input_audio"
    assert parts[5].path == "messages[0].content[5]"

    params = conversation(PARAMS)
    assert params.reasoning == ReasoningConfig(effort="high")
    assert params.max_output_tokens == 500 and params.stop == ["END", "STOP"]
    assert params.service_tier == "flex" and params.metadata == {"k": "v"}
    assert conversation({**SIMPLE, "reasoning_effort": "none"}).reasoning == ReasoningConfig(
        effort="none", enabled=False)


def test_constructs_other_dialects_may_refuse_carry_their_path() -> None:
    conv = conversation(CUSTOM)
    assert [(t.kind, t.path) for t in conv.tools if isinstance(t, Opaque)] == [
        ("tool:custom", "tools[1]")]
    assert isinstance(conv.tool_choice, Opaque)
    assert (conv.tool_choice.kind, conv.tool_choice.path) == (
        "tool_choice:allowed_tools", "tool_choice")
    assert conv.messages[1].parts == [ToolCall(id="call_c", name="code_exec",
                                               arguments="print('hello world')", kind="custom")]
    # The result of a custom call is a custom tool result.
    assert conv.messages[2].parts == [ToolResult(call_id="call_c", kind="custom",
                                                 content=[Text(text="hello world")])]
    choice = conversation(CUSTOM_CHOICE).tool_choice
    assert isinstance(choice, Opaque) and choice.kind == "tool_choice:custom"

    unsupported = {(o.kind, o.path) for o in conversation(AUDIO_OUT).unsupported}
    assert unsupported == {("param:modalities", "modalities"), ("param:audio", "audio"),
                           ("param:prediction", "prediction")}
    assert {o.path for o in conversation(PARAMS).unsupported} == {"logprobs", "top_logprobs"}
    assert {o.path for o in conversation(DEPRECATED).unsupported} == {"functions",
                                                                     "function_call"}
    audio = conversation(AUDIO_OUT).messages[1].parts
    assert [(p.kind, p.path) for p in audio if isinstance(p, Opaque)] == [
        ("assistant_audio", "messages[1].audio")]

    search = conversation({**SIMPLE, "web_search_options": {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"city": "Paris",
                                                                 "country": "FR"}}}})
    assert search.tools == [Opaque(kind="tool:web_search", path="web_search_options", value={
        "type": "web_search", "search_context_size": "low",
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}})]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
         "messages[0].content[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "refusal", "refusal": "no"}]}]}, "messages[0].content[0]"),
        ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function"}]}]}, "messages[0].tool_calls[0].function"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "custom"}]}, "tools[0].custom"),
    ],
)
def test_what_no_dialect_reads_is_refused_naming_the_field(body: dict[str, Any],
                                                           param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        conversation(body)
    assert info.value.param == param


def test_unknown_part_types_are_kept_with_their_path() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "video_url", "video_url": {"url": "u"}}]}]}
    parts = conversation(body).messages[0].parts
    assert parts[1] == Opaque(kind="video_url", path="messages[0].content[1]",
                              value={"type": "video_url", "video_url": {"url": "u"}})
    with pytest.raises(InvalidRequest) as info:
        encode(conversation(body))
    assert info.value.param == "messages[0].content[1]"


def test_integral_floats_decode() -> None:
    req = decode({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1.0,
                  "max_tokens": 100.0, "seed": 7.0, "top_logprobs": 2.0})
    assert (req.n, req.max_tokens, req.seed, req.top_logprobs) == (1, 100, 7, 2)
    assert CHAT.to_conversation(req).max_output_tokens == 100
    with pytest.raises(msgspec.ValidationError, match=r"\$\.n"):
        decode({"model": "m", "messages": [], "n": 1.5})


# --- native passthrough ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [CUSTOM, CUSTOM_CHOICE, TOOLS, AUDIO_OUT, DEPRECATED])
def test_native_body_keeps_everything_but_the_model(body: dict[str, Any]) -> None:
    raw = {**body, "some_future_field": {"kept": True}}
    assert json.loads(CHAT.native_body(raw, model="up", stream=False)) == {**raw, "model": "up"}
    assert raw["model"] == body["model"]  # the client's object is not changed


def test_native_stream_body_always_asks_for_usage() -> None:
    raw = {**SIMPLE, "stream": True, "stream_options": {"include_obfuscation": False}}
    body = json.loads(CHAT.native_body(raw, model="up", stream=True))
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert body["stream"] is True and raw["stream_options"] == {"include_obfuscation": False}


CHUNK = ('{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
         '"choices":[%s],"usage":%s}')


def chunk(delta: str = "{}", finish: str = "null", usage: str = "null") -> bytes:
    choice = f'{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}'
    return (CHUNK % (choice, usage)).encode()


USAGE = ('{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,'
         '"prompt_tokens_details":{"cached_tokens":16,"audio_tokens":0},'
         '"completion_tokens_details":{"reasoning_tokens":4,"audio_tokens":0}}')
USAGE_CHUNK = (CHUNK % ("", USAGE)).encode()
HUB_USAGE = Usage(input_tokens=20, output_tokens=9, cached_input_tokens=16, reasoning_tokens=4)


@pytest.mark.parametrize("include_usage", [False, True])
def test_native_relay_reads_usage_and_drops_the_chunk_unless_asked(include_usage: bool) -> None:
    relay = CHAT.native_relay(request({**SIMPLE, "stream": True}, include_usage=include_usage))
    first = chunk('{"role":"assistant","content":""}')
    stop = chunk("{}", '"stop"')
    assert relay.relay(b"", first) == b"data: " + first + b"\n\n"
    assert relay.relay(b"", stop) == b"data: " + stop + b"\n\n"
    assert relay.usage is None and not relay.done
    out = relay.relay(b"", USAGE_CHUNK)
    assert out == (b"data: " + USAGE_CHUNK + b"\n\n" if include_usage else None)
    assert relay.usage == HUB_USAGE
    assert relay.relay(b"", b"[DONE]") == b"data: [DONE]\n\n" and relay.done


def test_native_relay_of_an_empty_stream_forwards_nothing() -> None:
    # Nothing but [DONE]: no output, so the provider sees an empty stream and fails over.
    relay = CHAT.native_relay(request(SIMPLE))
    assert relay.relay(b"", b"[DONE]") is None and relay.done


def test_native_relay_keeps_usage_on_a_chunk_with_choices() -> None:
    # vLLM's continuous usage stats put counts on content chunks: forwarded as they are.
    relay = CHAT.native_relay(request(SIMPLE))
    data = chunk('{"content":"Hi"}', usage=USAGE)
    assert relay.relay(b"", data) == b"data: " + data + b"\n\n"
    assert relay.usage == HUB_USAGE


@pytest.mark.parametrize("data", [
    b'{"error": {"message": "The server had an error", "type": "server_error", "code": null}}',
    b'{"object":"error","message":"The server had an error","type":"server_error","code":500}',
])
def test_native_relay_raises_on_an_error_payload(data: bytes) -> None:
    relay = CHAT.native_relay(request(SIMPLE))
    with pytest.raises(GatewayError) as info:
        relay.relay(b"", data)
    assert info.value.message == "The server had an error"
    assert info.value.type == "server_error"


def test_native_usage() -> None:
    body = ('{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",'
            '"choices":[],"usage":' + USAGE + "}").encode()
    assert CHAT.native_usage(body) == HUB_USAGE
    assert CHAT.native_usage(b'{"id": "x", "choices": []}') is None
    with pytest.raises(msgspec.DecodeError):
        CHAT.native_usage(b"<html>")


# --- front door: answers ----------------------------------------------------------------


def test_encode_result_is_a_chat_completion() -> None:
    result = Result(
        id="msg_01", model="claude-x", created=1700000001,
        parts=[Reasoning(text="Let me think.", signature="sig", source="messages"),
               Text(text="Calling "), Text(text="tools."),
               ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),
               ToolCall(id="toolu_2", name="code_exec", arguments="print(1)", kind="custom")],
        finish="tool_calls",
        usage=Usage(input_tokens=30, output_tokens=12, cached_input_tokens=10,
                    cache_write_input_tokens=5, reasoning_tokens=3),
    )
    body = CHAT.encode_result(result, request(TOOLS))
    completion = ChatCompletion.model_validate_json(body)
    assert completion.id == "chatcmpl-msg_01" and completion.object == "chat.completion"
    assert completion.created == 1700000001 and completion.model == "claude-x"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Calling tools."
    assert choice.message.model_extra == {"reasoning_content": "Let me think."}
    calls = choice.message.tool_calls or []
    assert [c.type for c in calls] == ["function", "custom"]
    assert calls[0].function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert calls[1].custom.input == "print(1)"  # type: ignore[union-attr]
    usage = completion.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens,
                                  usage.total_tokens) == (30, 12, 42)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 10
    assert usage.prompt_tokens_details.cache_write_tokens == 5
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 3


@pytest.mark.parametrize(
    ("parts", "finish", "content", "refusal", "reason"),
    [
        ([], "stop", "", None, "stop"),
        ([Text(text="Hi")], "length", "Hi", None, "length"),
        ([Refusal(text="I can't help with that.")], "stop", None, "I can't help with that.",
         "stop"),
        ([Text(text="")], "refusal", "", None, "content_filter"),
    ],
)
def test_encode_result_content_and_finish(parts: list[Any], finish: Any, content: str | None,
                                          refusal: str | None, reason: str) -> None:
    body = CHAT.encode_result(Result(id="chatcmpl-9", model="m", parts=parts, finish=finish),
                              request(SIMPLE))
    completion = ChatCompletion.model_validate_json(body)
    message = completion.choices[0].message
    assert (message.content, message.refusal, completion.choices[0].finish_reason) == (
        content, refusal, reason)
    assert completion.id == "chatcmpl-9" and completion.created == 1700000000
    assert "reasoning_content" not in json.loads(body)["choices"][0]["message"]


# --- front door: streams ----------------------------------------------------------------

STREAM_EVENTS: list[Event] = [
    Start(id="msg_01", model="claude-x", created=1700000002),
    ReasoningDelta(text="Thinking"),
    ReasoningDelta(text=" hard."),
    ReasoningEnd(signature="sig", source="messages"),
    TextDelta(text="Let me "),
    TextDelta(text="check."),
    ToolCallStart(index=0, id="toolu_1", name="get_weather"),
    ToolCallDelta(index=0, arguments='{"city":'),
    ToolCallDelta(index=0, arguments='"Paris"}'),
    ToolCallEnd(index=0),
    ToolCallStart(index=1, id="toolu_2", name="get_weather"),
    ToolCallDelta(index=1, arguments='{"city":"Rome"}'),
    ToolCallEnd(index=1),
    UsageUpdate(usage=Usage(input_tokens=50, output_tokens=25, cached_input_tokens=40)),
    Finish(reason="tool_calls"),
]


def encode_stream(events: list[Event], *, include_usage: bool) -> list[str]:
    encoder = CHAT.stream_encoder(request({**TOOLS, "stream": True},
                                          include_usage=include_usage))
    blocks: list[bytes] = []
    for e in events:
        blocks.extend(encoder.feed(e))
    blocks.extend(encoder.close())
    return sse_data(blocks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_encoder_output_reassembles_with_the_sdk(include_usage: bool) -> None:
    data = encode_stream(STREAM_EVENTS, include_usage=include_usage)
    assert data[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {"chatcmpl-msg_01"}
    assert {c.created for c in chunks} == {1700000002}
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                        for c in chunks if c.choices)
    assert reasoning == "Thinking hard."
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(c)
    final = state.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Let me check."
    assert choice.finish_reason == "tool_calls"
    calls = [(c.id, c.function.name, c.function.arguments)
             for c in choice.message.tool_calls or []]
    assert calls == [("toolu_1", "get_weather", '{"city":"Paris"}'),
                     ("toolu_2", "get_weather", '{"city":"Rome"}')]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == 50 and chunks[-1].usage.total_tokens == 75
        assert chunks[-2].choices[0].finish_reason == "tool_calls"
    else:
        assert all(c.choices for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_encoder_first_delta_of_a_tool_call() -> None:
    data = encode_stream(STREAM_EVENTS, include_usage=False)
    deltas = [json.loads(d)["choices"][0]["delta"] for d in data[:-1]]
    starts = [d["tool_calls"][0] for d in deltas if "tool_calls" in d
              and "id" in d["tool_calls"][0]]
    assert starts == [
        {"index": 0, "id": "toolu_1", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "toolu_2", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
    ]
    # later deltas carry only index and arguments
    assert {"index": 0, "function": {"arguments": '"Paris"}'}} in [
        d["tool_calls"][0] for d in deltas if "tool_calls" in d]


def test_stream_encoder_custom_tool_call_and_refusal() -> None:
    events: list[Event] = [
        Start(id="resp_1", model="gpt-5"),
        RefusalDelta(text="No."),
        ToolCallStart(index=0, id="call_c", name="code_exec", kind="custom"),
        ToolCallDelta(index=0, arguments="print(1)"),
        Finish(reason="tool_calls"),
    ]
    deltas = [json.loads(d)["choices"][0]["delta"]
              for d in encode_stream(events, include_usage=True)[:-1]]
    assert deltas[1] == {"refusal": "No."}
    assert deltas[2]["tool_calls"] == [{"index": 0, "id": "call_c", "type": "custom",
                                        "custom": {"name": "code_exec", "input": ""}}]
    assert deltas[3]["tool_calls"] == [{"index": 0, "custom": {"input": "print(1)"}}]


def test_stream_encoder_closes_what_the_upstream_left_open() -> None:
    # No Start and no Finish seen (an upstream whose stream just ended): still well formed.
    data = encode_stream([TextDelta(text="Hi")], include_usage=True)
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert data[-1] == "[DONE]"  # no usage was known, so no usage chunk


def test_stream_encoder_fail_is_an_openai_error_event() -> None:
    encoder = CHAT.stream_encoder(request(SIMPLE))
    encoder.feed(Start(id="x", model="m"))
    out = encoder.fail(UpstreamError("Provider p answered 500.", code="stream_interrupted"))
    assert sse_data(out) == [json.dumps({"error": {
        "message": "Provider p answered 500.", "type": "upstream_error", "param": None,
        "code": "stream_interrupted"}}, separators=(",", ":"))]
    assert CHAT.error_body(InvalidRequest("bad", param="n")) == InvalidRequest(
        "bad", param="n").to_json()


# --- upstream: requests from other dialects -------------------------------------------------


def test_encode_request_from_another_dialect() -> None:
    conv = Conversation(
        messages=[
            Message(role="system", parts=[Text(text="Be brief.")]),
            Message(role="user", parts=[Text(text="Look:"),
                                        Image(data=PNG, media_type="image/png"),
                                        File(data=PDF, media_type="application/pdf",
                                             filename="a.pdf")]),
            Message(role="assistant", parts=[
                Reasoning(text="hmm", signature="sig", source="messages"),
                Text(text="Checking."),
                ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}')]),
            Message(role="user", parts=[
                ToolResult(call_id="toolu_1", content=[Text(text="18C"),
                                                       Image(url="https://x/chart.png")]),
                Text(text="And tomorrow?")]),
        ],
        tools=[FunctionTool(name="get_weather", parameters={"type": "object"}),
               Opaque(kind="tool:web_search", path="tools[1]", value={"type": "web_search"}),
               Opaque(kind="tool:custom", path="tools[2]",
                      value={"type": "custom", "name": "code_exec", "description": "Runs code",
                             "format": {"type": "text"}})],
        tool_choice="auto",
        parallel_tool_calls=True,
        output_format="json_object",
        max_output_tokens=1000,
        temperature=0.5,
        top_k=40,
        stop=["END"],
        reasoning=ReasoningConfig(budget_tokens=4096),
        user="u-2",
    )
    out = CHAT.encode_request(conv, model="gpt-4o", stream=True, options=OPTIONS)
    assert out.dropped_tools == ["web_search"] and out.dropped_params == ["top_k"]
    assert json.loads(out.body) == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                          "filename": "a.pdf"}}]},
            # Reasoning has no place in a Chat request.
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            # A tool result's image goes into the user turn after the tool messages.
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/chart.png"}},
                {"type": "text", "text": "And tomorrow?"}]},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather",
                                              "parameters": {"type": "object"}}},
            {"type": "custom", "custom": {"name": "code_exec", "description": "Runs code",
                                          "format": {"type": "text"}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "json_object"},
        "max_completion_tokens": 1000,
        "temperature": 0.5,
        "stop": ["END"],
        "reasoning_effort": "medium",
        "user": "u-2",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_hosted_tools_refused_when_the_deployment_says_so() -> None:
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="hi")])],
                        tools=[Opaque(kind="tool:file_search", path="tools[0]")])
    with pytest.raises(InvalidRequest) as info:
        CHAT.encode_request(conv, model="m", stream=False,
                            options=EncodeOptions(hosted_tools="reject"))
    assert info.value.param == "tools[0]"
    out = CHAT.encode_request(conv, model="m", stream=False, options=OPTIONS)
    assert out.dropped_tools == ["file_search"]
    assert "tools" not in json.loads(out.body)


def test_drop_params() -> None:
    conv = Conversation(messages=[Message(role="user", parts=[Text(text="hi")])],
                        temperature=0.3, top_p=0.5, max_output_tokens=10, seed=1)
    out = CHAT.encode_request(conv, model="m", stream=False, options=EncodeOptions(
        drop_params=("top_p", "max_output_tokens", "presence_penalty")))
    body = json.loads(out.body)
    assert out.dropped_params == ["top_p", "max_output_tokens"]
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "temperature": 0.3, "seed": 1}


@pytest.mark.parametrize(
    ("conv", "param"),
    [
        (Conversation(messages=[Message(role="user", parts=[Image(file_id="file-1")])]),
         "messages[0].content[0]"),
        (Conversation(messages=[Message(role="user", parts=[File(url="https://x/a.pdf")])]),
         "messages[0].content[0]"),
        (Conversation(messages=[Message(role="user", parts=[
            Opaque(kind="input_video", path="input[0].content[2]")])]),
         "input[0].content[2]"),
        (Conversation(messages=[Message(role="user", parts=[Text(text="x")])],
                      unsupported=[Opaque(kind="param:background", path="background")]),
         "background"),
        (Conversation(messages=[Message(role="user", parts=[Text(text="x")])], n=2), "n"),
    ],
)
def test_encode_request_refuses_naming_the_field(conv: Conversation, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CHAT.encode_request(conv, model="m", stream=False, options=OPTIONS)
    assert info.value.param == param


def test_tool_choices_of_the_responses_shape() -> None:
    tools: list[Any] = [FunctionTool(name="f"), Opaque(kind="tool:custom", path="tools[1]",
                                                        value={"type": "custom", "name": "g"})]
    msgs = [Message(role="user", parts=[Text(text="x")])]
    allowed = Opaque(kind="tool_choice:allowed_tools", path="tool_choice", value={
        "type": "allowed_tools", "mode": "auto",
        "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "g"},
                  {"type": "web_search"}]})
    body = encode(Conversation(messages=msgs, tools=tools, tool_choice=allowed))
    assert body["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}},
                                  {"type": "custom", "custom": {"name": "g"}}]}}
    named = encode(Conversation(messages=msgs, tools=tools,
                                tool_choice=NamedToolChoice(name="g")))
    assert named["tool_choice"] == {"type": "custom", "custom": {"name": "g"}}
    custom = encode(Conversation(messages=msgs, tools=tools, tool_choice=Opaque(
        kind="tool_choice:custom", path="tool_choice", value={"type": "custom", "name": "g"})))
    assert custom["tool_choice"] == named["tool_choice"]


# --- upstream: answers and streams -------------------------------------------------------

# The API reference's example answer, plus what compatible servers add.
COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion",
    "created": 1741570283, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "The image shows a wooden boardwalk.",
        "refusal": None, "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0,
                                            "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035",
}


def with_message(message: dict[str, Any], finish: str = "stop", **choice: Any) -> bytes:
    body = json.loads(json.dumps(COMPLETION))
    body["choices"][0]["message"] = {"role": "assistant", **message}
    body["choices"][0]["finish_reason"] = finish
    body["choices"][0].update(choice)
    return json.dumps(body).encode()


def test_decode_result_of_the_reference_example() -> None:
    result = CHAT.decode_result(json.dumps(COMPLETION).encode(), Outbound(body=b""))
    assert result == Result(
        id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", model="gpt-4o-2024-08-06",
        created=1741570283, parts=[Text(text="The image shows a wooden boardwalk.")],
        finish="stop", usage=Usage(input_tokens=1117, output_tokens=46,
                                   cached_input_tokens=1024, reasoning_tokens=0))


@pytest.mark.parametrize(
    ("body", "parts", "finish"),
    [
        (with_message({"content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "custom", "custom": {"name": "code_exec",
                                                          "input": "print(1)"}}]},
            "tool_calls"),
         [ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}'),
          ToolCall(id="call_2", name="code_exec", arguments="print(1)", kind="custom")],
         "tool_calls"),
        (with_message({"content": None, "refusal": "I can't help with that."}),
         [Refusal(text="I can't help with that.")], "stop"),
        (with_message({"content": "42", "reasoning_content": "6 times 7."}),
         [Reasoning(text="6 times 7.", source="chat"), Text(text="42")], "stop"),
        (with_message({"content": "42", "reasoning": "6 times 7."}, "length"),
         [Reasoning(text="6 times 7.", source="chat"), Text(text="42")], "length"),
        # Some servers say "stop" after tool calls, or send arguments as an object.
        (with_message({"content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}),
         [ToolCall(id="c", name="f", arguments='{"a":1}')], "tool_calls"),
        (with_message({"content": "x"}, "content_filter"), [Text(text="x")], "content_filter"),
    ],
)
def test_decode_result(body: bytes, parts: list[Any], finish: str) -> None:
    result = CHAT.decode_result(body, Outbound(body=b""))
    assert (result.parts, result.finish) == (parts, finish)


def test_decode_result_stop_sequence_and_tolerance() -> None:
    # vLLM names the stop string; no usage, no object, integral float counts.
    body = (b'{"id":"cmpl-1","model":"m","created":1.0,"choices":[{"index":0,'
            b'"message":{"role":"assistant","content":"a"},"finish_reason":"stop",'
            b'"stop_reason":"END"}]}')
    result = CHAT.decode_result(body, Outbound(body=b""))
    assert (result.stop_sequence, result.usage, result.created) == ("END", None, 1)
    with pytest.raises(msgspec.ValidationError):
        CHAT.decode_result(b'{"error": {"message": "x"}}', Outbound(body=b""))


# A realistic stream: role chunk, text, two parallel tool calls whose arguments interleave,
# the finish chunk, then the usage chunk (stream_options.include_usage), then [DONE].
STREAM = [
    chunk('{"role":"assistant","content":"","refusal":null}'),
    chunk('{"content":"Checking "}'),
    chunk('{"content":"both."}'),
    chunk('{"tool_calls":[{"index":0,"id":"call_a","type":"function",'
          '"function":{"name":"get_weather","arguments":""}}]}'),
    chunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\": "}}]}'),
    chunk('{"tool_calls":[{"index":1,"id":"call_b","type":"function",'
          '"function":{"name":"get_weather","arguments":""}}]}'),
    chunk('{"tool_calls":[{"index":1,"function":{"arguments":"{\\"city\\": \\"Rome\\"}"}}]}'),
    chunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}'),
    chunk("{}", '"tool_calls"'),
    USAGE_CHUNK,
    b"[DONE]",
]


def decode_stream(data: list[bytes]) -> tuple[list[Event], ChatStreamDecoder]:
    decoder = CHAT.stream_decoder(Outbound(body=b""))
    events: list[Event] = []
    for d in data:
        assert not decoder.done
        events.extend(decoder.feed(b"", d))
    return events, decoder


def test_stream_decoder_on_a_realistic_stream() -> None:
    events, decoder = decode_stream(STREAM)
    assert decoder.done
    assert events == [
        Start(id="chatcmpl-1", model="gpt-4o", created=1),
        TextDelta(text="Checking "),
        TextDelta(text="both."),
        ToolCallStart(index=0, id="call_a", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city": '),
        ToolCallStart(index=1, id="call_b", name="get_weather"),
        ToolCallDelta(index=1, arguments='{"city": "Rome"}'),
        ToolCallDelta(index=0, arguments='"Paris"}'),
        ToolCallEnd(index=0),
        ToolCallEnd(index=1),
        Finish(reason="tool_calls"),
        UsageUpdate(usage=HUB_USAGE),
    ]


def test_stream_decoder_reasoning_refusal_and_custom_calls() -> None:
    events, _ = decode_stream([
        chunk('{"role":"assistant","content":null,"reasoning_content":"Hmm"}'),
        chunk('{"reasoning":", yes."}'),
        chunk('{"content":"Done."}'),
        chunk('{"refusal":"But no."}'),
        chunk('{"tool_calls":[{"index":0,"id":"call_c","type":"custom",'
              '"custom":{"name":"code_exec","input":"print("}}]}'),
        chunk('{"tool_calls":[{"index":0,"custom":{"input":"1)"}}]}'),
        chunk("{}", '"stop"'),
        b"[DONE]",
    ])
    assert events[1:] == [
        ReasoningDelta(text="Hmm"),
        ReasoningDelta(text=", yes."),
        ReasoningEnd(source="chat"),
        TextDelta(text="Done."),
        RefusalDelta(text="But no."),
        ToolCallStart(index=0, id="call_c", name="code_exec", kind="custom"),
        ToolCallDelta(index=0, arguments="print("),
        ToolCallDelta(index=0, arguments="1)"),
        ToolCallEnd(index=0),
        Finish(reason="tool_calls"),  # tool calls were made, whatever the server said
    ]


def test_stream_decoder_new_id_at_a_reused_index_is_a_new_call() -> None:
    # Some compatible servers send every tool call whole, each at index 0.
    events, _ = decode_stream([
        chunk('{"tool_calls":[{"index":0,"id":"a","type":"function",'
              '"function":{"name":"f","arguments":"{}"}}]}'),
        chunk('{"tool_calls":[{"index":0,"id":"b","type":"function",'
              '"function":{"name":"g","arguments":"{}"}}]}'),
        chunk("{}", '"tool_calls"'),
        b"[DONE]",
    ])
    starts = [(e.index, e.id, e.name) for e in events if isinstance(e, ToolCallStart)]
    assert starts == [(0, "a", "f"), (1, "b", "g")]


@pytest.mark.parametrize("data", [
    b'{"error":{"message":"Rate limit reached for sk-abcdef1234567890","type":"requests",'
    b'"code":"rate_limit_exceeded"}}',
    b'{"object":"error","message":"Rate limit reached for sk-abcdef1234567890",'
    b'"type":"requests","code":"rate_limit_exceeded"}',
])
def test_stream_decoder_raises_on_an_error_payload(data: bytes) -> None:
    decoder = CHAT.stream_decoder(Outbound(body=b""))
    decoder.feed(b"", STREAM[0])
    with pytest.raises(GatewayError) as info:
        decoder.feed(b"", data)
    assert info.value.message == "Rate limit reached for [redacted]"
    assert (info.value.type, info.value.code) == ("requests", "rate_limit_exceeded")


def test_stream_encoder_and_decoder_agree() -> None:
    """Hub events through the Chat front door's stream and back through the Chat upstream
    decoder: the same answer."""
    result = Result(id="chatcmpl-7", model="m", created=5, finish="tool_calls",
                    parts=[Reasoning(text="r", source="chat"), Text(text="Hi."),
                           ToolCall(id="c1", name="f", arguments='{"a":1}'),
                           ToolCall(id="c2", name="g", arguments="free text", kind="custom")],
                    usage=Usage(input_tokens=3, output_tokens=4, cached_input_tokens=0,
                                reasoning_tokens=0))
    data = encode_stream(result_events(result), include_usage=True)
    events, decoder = decode_stream([d.encode() for d in data])
    assert decoder.done
    # Chat has no end-of-block events: the decoder closes runs where it can tell.
    def content(es: list[Event]) -> list[Event]:
        return [e for e in es if not isinstance(e, (ReasoningEnd, ToolCallEnd))]
    assert content(events) == content(result_events(result))
    assert [e.index for e in events if isinstance(e, ToolCallEnd)] == [0, 1]


# --- upstream errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "message", "type_", "code", "param"),
    [
        (401, b'{"error": {"message": "Incorrect API key provided: sk-proj-abcd****wxyz.",'
              b' "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}',
         "Incorrect API key provided: [redacted]", "invalid_request_error",
         "invalid_api_key", None),
        (400, b'{"error": {"message": "Invalid value for n", "type": "invalid_request_error",'
              b' "param": "n", "code": 400}}',
         "Invalid value for n", "invalid_request_error", "400", "n"),
        (404, b'{"error": "model \\"llama9\\" not found, try pulling it first"}',
         'model "llama9" not found, try pulling it first', "upstream_error", None, None),
        (400, b'{"object": "error", "message": "max_tokens is too large", '
              b'"type": "BadRequestError", "param": null, "code": 400}',
         "max_tokens is too large", "BadRequestError", "400", None),
        (502, b"<html>Bad Gateway</html>", "Provider p answered 502.", "upstream_error", None,
         None),
        (500, b'{"error": null}', "Provider p answered 500.", "upstream_error", None, None),
    ],
)
def test_error_from(status: int, body: bytes, message: str, type_: str, code: str | None,
                    param: str | None) -> None:
    err = CHAT.error_from(status, body, "p")
    assert (err.status, err.message, err.type, err.code, err.param) == (
        status, message, type_, code, param)


def test_the_dialect() -> None:
    assert CHAT.name == "chat"
    with pytest.raises(TypeError):
        CHAT.to_conversation({"model": "m"})
