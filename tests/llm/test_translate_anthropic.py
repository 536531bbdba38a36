"""OpenAI <-> Anthropic translation, table-style, on the request, response and stream examples
of the two APIs' references (https://platform.openai.com/docs/api-reference/chat,
https://docs.anthropic.com/en/api/messages, .../build-with-claude/streaming, .../api/errors).
Streams are reassembled by the openai SDK's own accumulator, as a client would."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion as SDKChatCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from gateway_core import anthropic_types as an
from gateway_core.errors import InvalidRequest, UpstreamError
from gateway_core.openai_types import ChatCompletionChunk, ChatCompletionRequest
from gateway_llm.translate.anthropic import (
    AnthropicAPIError,
    StreamTranslator,
    error_from_anthropic,
    to_anthropic_request,
    to_openai_response,
)

request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
encode = msgspec.json.Encoder().encode

MODEL = "claude-sonnet-4-20250514"


def translate(body: dict[str, Any], *, stream: bool = False,
              default_max_tokens: int = 4096) -> tuple[dict[str, Any], str | None]:
    """Decode an OpenAI request body as the server does, translate it, and return the JSON
    that would be sent to Anthropic."""
    req = request_decoder.decode(json.dumps(body))
    out, json_tool = to_anthropic_request(req, model=MODEL, default_max_tokens=default_max_tokens,
                                          stream=stream)
    return json.loads(encode(out)), json_tool


def openai_body(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": messages, **fields}


USER_HELLO = [{"role": "user", "content": "Hello!"}]

# --- requests --------------------------------------------------------------------------

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
    sent, json_tool = translate(body)
    assert json_tool is None
    assert sent == {
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
                {"type": "tool_result", "tool_use_id": "call_def456",
                 "content": [{"type": "text", "text": "18 degrees, rain"}]},
                {"type": "text", "text": "Which one is warmer?"},
            ]},
        ],
        "tools": [{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }],
    }
    # The official SDK's request type accepts what we send.
    pydantic.TypeAdapter(MessageCreateParamsNonStreaming).validate_python(sent)


def test_assistant_text_and_tool_calls_and_consecutive_turns_merge() -> None:
    sent, _ = translate(openai_body([
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
    assert sent["messages"] == [
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
    assert sent["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}]


def test_conversation_opening_with_assistant_gets_a_user_turn_first() -> None:
    sent, _ = translate(openai_body([
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]))
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "."}]}


def test_system_and_developer_messages_join_in_order() -> None:
    sent, _ = translate(openai_body([
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "You are a pirate."},
                                       {"type": "text", "text": "Say arr."}]},
        {"role": "user", "content": "Hello!"},
        {"role": "system", "content": "Never mention treasure."},
    ]))
    assert sent["system"] == "Be brief.\n\nYou are a pirate.\n\nSay arr.\n\nNever mention treasure."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]


# OpenAI's vision example (an https URL) and a base64 data URL.
IMAGE_URL = ("https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/"
             "Gfp-wisconsin-madison-the-nature-boardwalk.jpg/"
             "2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg")
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")


def test_images_by_url_and_by_data_url() -> None:
    sent, _ = translate(openai_body([{"role": "user", "content": [
        {"type": "text", "text": "What's in these images?"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]}]))
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What's in these images?"},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG_B64}},
    ]
    pydantic.TypeAdapter(MessageCreateParamsNonStreaming).validate_python(sent)


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
    assert exc.value.param == "messages[0].content[1].image_url.url"
    assert why in exc.value.message


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
    sent, _ = translate(openai_body(USER_HELLO, **fields))
    assert sent.get("tool_choice") == expected


def test_tool_choice_without_tools() -> None:
    sent, _ = translate(openai_body(USER_HELLO, tool_choice="auto"))
    assert "tool_choice" not in sent and "tools" not in sent
    with pytest.raises(InvalidRequest) as exc:
        translate(openai_body(USER_HELLO, tool_choice="required"))
    assert exc.value.param == "tool_choice"


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


def test_json_schema_becomes_a_forced_tool_and_its_input_the_content() -> None:
    sent, json_tool = translate(openai_body(
        [{"role": "system", "content": "You are a helpful math tutor."},
         {"role": "user", "content": "how can I solve 8x + 7 = -23"}],
        response_format=MATH_FORMAT))
    assert json_tool == "math_reasoning"
    assert sent["tools"] == [{
        "name": "math_reasoning",
        "input_schema": MATH_FORMAT["json_schema"]["schema"],  # type: ignore[index]
        "description": "Give your final answer by calling this tool; its input is the response.",
    }]
    assert sent["tool_choice"] == {"type": "tool", "name": "math_reasoning"}

    answer = {"steps": [{"explanation": "Subtract 7", "output": "8x = -30"},
                        {"explanation": "Divide by 8", "output": "x = -15/4"}],
              "final_answer": "x = -15/4"}
    message = an.decode_message(json.dumps({
        "id": "msg_01JSON", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "math_reasoning",
                     "input": answer}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 500, "output_tokens": 80},
    }).encode())
    completion = sdk_completion(to_openai_response(message, json_tool=json_tool, created=1))
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert json.loads(choice.message.content or "") == answer


def test_json_schema_alongside_client_tools_lets_the_model_choose() -> None:
    sent, json_tool = translate(openai_body(USER_HELLO, tools=[WEATHER_TOOL],
                                            response_format=MATH_FORMAT))
    assert json_tool == "math_reasoning"
    assert [t["name"] for t in sent["tools"]] == ["get_current_weather", "math_reasoning"]
    assert sent["tool_choice"] == {"type": "any"}


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
    sent, json_tool = translate(openai_body(
        [{"role": "system", "content": "Extract the names."},
         {"role": "user", "content": "Ann met Bob."}],
        response_format={"type": "json_object"}))
    assert json_tool is None
    assert sent["system"] == ("Extract the names.\n\nRespond only with a single valid JSON "
                              "object, with no text before or after it.")
    assert "tools" not in sent


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
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this recording?"},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]},
         "messages[0].content[1]"),
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
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "function", "name": "f", "content": "1"}]}, "messages[1].role"),
        ({"messages": [{"role": "system", "content": "Only a system prompt."}]}, "messages"),
        ({"reasoning_effort": "high", "tools": [WEATHER_TOOL], "tool_choice": "required"},
         "reasoning_effort"),
        ({"reasoning_effort": "low", "response_format": MATH_FORMAT}, "reasoning_effort"),
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
    sent, _ = translate(openai_body(USER_HELLO, **fields))
    sent.pop("messages")
    assert sent == {"model": MODEL, **expected}


def test_stream_flag_and_extended_thinking_with_tools() -> None:
    sent, _ = translate(openai_body(USER_HELLO, tools=[WEATHER_TOOL], tool_choice="auto",
                                    reasoning_effort="medium"), stream=True)
    assert sent["stream"] is True
    assert sent["tool_choice"] == {"type": "auto"}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "stream" not in translate(openai_body(USER_HELLO))[0]


# --- responses -------------------------------------------------------------------------

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


def wire(obj: Any) -> dict[str, Any]:
    """The JSON a client receives for a chat.completion(.chunk) Struct."""
    data: dict[str, Any] = json.loads(encode(obj))
    return data


def sdk_completion(completion: Any) -> SDKChatCompletion:
    """What the openai SDK makes of the JSON we would send."""
    return SDKChatCompletion.model_validate(wire(completion))


def test_encoded_responses_carry_every_field_openai_always_sends() -> None:
    completion = to_openai_response(message(usage={"input_tokens": 0, "output_tokens": 0}),
                                    json_tool=None, created=1)
    data = json.loads(encode(completion))
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"]["prompt_tokens"] == 0
    chunks, _ = run(TEXT_SSE)
    assert json.loads(encode(chunks[0]))["object"] == "chat.completion.chunk"


def message(**changes: Any) -> an.Message:
    return an.decode_message(json.dumps({**DOCS_MESSAGE, **changes}).encode())


def test_text_response() -> None:
    completion = sdk_completion(to_openai_response(message(), json_tool=None, created=1700000000))
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
    completion = to_openai_response(message(stop_reason=stop_reason), json_tool=None, created=1)
    assert sdk_completion(completion).choices[0].finish_reason == finish_reason


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    completion = sdk_completion(to_openai_response(message(usage={
        "input_tokens": 21, "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 1000, "output_tokens": 393,
        "output_tokens_details": {"thinking_tokens": 120},
        "service_tier": "standard"}), json_tool=None, created=1))
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
    msg = message(
        id="msg_01Aq9w938a90dw8q",
        stop_reason="tool_use",
        content=[
            {"type": "thinking", "thinking": "The user wants SF weather.", "signature": "EqQB"},
            {"type": "text", "text": "I'll check the weather in San Francisco."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_time",
             "input": {"timezone": "America/Los_Angeles"}},
        ],
    )
    choice = sdk_completion(to_openai_response(msg, json_tool=None, created=1)).choices[0]
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
    msg = message(stop_reason="tool_use", content=[
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
         "input": {"query": "weather"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {},
         "caller": {"type": "direct"}},
    ])
    assert [type(b) for b in msg.content] == [an.ToolUseBlock]
    choice = sdk_completion(to_openai_response(msg, json_tool=None, created=1)).choices[0]
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == "{}"  # type: ignore[union-attr]


def test_a_body_that_is_not_a_message_still_fails_to_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        an.decode_message(b'{"id": "msg_1", "model": "m", "content": [{"type": "text"}]}')


# --- streams ---------------------------------------------------------------------------

# The basic streaming example (as recorded in the official Python SDK's test fixtures).
TEXT_SSE = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

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
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}
"""

# Streaming with tool use: a text block, then a tool_use block at Anthropic index 1.
TOOL_SSE = r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'ll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},"input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\": \"P"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ar"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}
"""


def sse_data(text: str) -> list[bytes]:
    return [line[len("data: "):].encode() for line in text.splitlines()
            if line.startswith("data: ")]


def run(text: str, *, include_usage: bool = False, json_tool: str | None = None
        ) -> tuple[list[ChatCompletionChunk], StreamTranslator]:
    translator = StreamTranslator(include_usage=include_usage, json_tool=json_tool,
                                  created=1700000000)
    chunks = [c for data in sse_data(text) for c in translator.feed_bytes(data)]
    return chunks, translator


def reassemble(chunks: list[ChatCompletionChunk]) -> Any:
    """Accumulate the chunks with the openai SDK, as its streaming helpers do."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(SDKChunk.model_validate(wire(chunk))))
    return state.get_final_completion()


def test_streamed_text_response() -> None:
    chunks, translator = run(TEXT_SSE)
    first = wire(chunks[0])
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None, "logprobs": None}]
    assert {c.id for c in chunks} == {"chatcmpl-msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"}
    assert {c.model for c in chunks} == {"claude-3-opus-latest"}
    assert {c.created for c in chunks} == {1700000000}
    assert all(c.usage is None for c in chunks)  # not asked for
    final = reassemble(chunks)
    assert final.choices[0].message.content == "Hello there!"
    assert final.choices[0].finish_reason == "stop"
    # Usage is known to the caller anyway, to settle token budgets.
    assert translator.usage is not None
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens,
            translator.usage.total_tokens) == (11, 6, 17)


def test_streamed_usage_chunk_when_asked_for() -> None:
    chunks, _ = run(TEXT_SSE, include_usage=True)
    last = wire(chunks[-1])
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    assert sum(c.usage is not None for c in chunks) == 1
    assert chunks[-2].choices[0].finish_reason == "stop"
    final = reassemble(chunks)
    assert final.usage is not None and final.usage.total_tokens == 17


def test_streamed_tool_call_reassembles_into_name_and_arguments() -> None:
    chunks, translator = run(TOOL_SSE, include_usage=True)
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
    indexes = {tc.index for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or []}
    assert indexes == {0}
    assert translator.usage is not None and translator.usage.prompt_tokens == 377
    assert translator.usage.completion_tokens == 65


def events(*items: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(i)}\n\n" for i in items)


START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": MODEL,
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 90,
              "cache_creation_input_tokens": 5, "output_tokens": 1}}}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def stop(reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}}, {"type": "message_stop"}]


def test_parallel_tool_calls_thinking_and_unknown_events() -> None:
    text = events(
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
    chunks, translator = run(text)
    final = reassemble(chunks)
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_a", "get_weather", {"location": "Oslo"}),
        ("toolu_b", "get_weather", {"location": "Rome"}),
    ]
    assert final.choices[0].message.content == ""  # the opening chunk's, as OpenAI's
    assert final.choices[0].finish_reason == "tool_calls"
    usage = translator.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (105, 120)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 90


def test_streamed_json_schema_answer_becomes_content() -> None:
    # From a recorded json-tool stream: the answer tool's input arrives as input_json_delta.
    text = events(
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
    chunks, _ = run(events(START, block_start(0, {"type": "text", "text": "Hi"}),
                           {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 2}},
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
    translator = StreamTranslator(include_usage=False, json_tool=None, created=1)
    for data in sse_data(events(START, block_start(0, {"type": "text", "text": ""}))):
        translator.feed_bytes(data)
    with pytest.raises(AnthropicAPIError) as exc:
        translator.feed_bytes(json.dumps(
            {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}).encode())
    assert (exc.value.status, exc.value.upstream_status) == (status, upstream_status)
    assert exc.value.message == "Overloaded"


def test_unreadable_stream_event_is_an_upstream_error() -> None:
    translator = StreamTranslator(include_usage=False, json_tool=None, created=1)
    assert translator.usage is None
    with pytest.raises(UpstreamError):
        translator.feed_bytes(b"{not json")
    with pytest.raises(UpstreamError):
        translator.feed_bytes(b'{"type": "content_block_delta", "index": "zero", '
                              b'"delta": {"type": "text_delta", "text": "x"}}')


# --- errors ----------------------------------------------------------------------------


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
    error = error_from_anthropic(status, body)
    assert (error.status, error.upstream_status, error.upstream_type) == (
        answer_status, status, error_type)
    assert json.loads(error.to_json()) == {"error": {
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
    error = error_from_anthropic(status, body)
    assert error.status == answer_status
    assert error.type == answer_type
    assert str(status) in error.message
    assert error.upstream_status == status
