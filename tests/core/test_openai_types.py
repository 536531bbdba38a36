"""The OpenAI request type accepts every documented field and content part (never narrower
than the API: custom tools, allowed_tools, integral floats, new enum values), names the
field when something is wrong, and the upstream ``...In`` types read what compatible servers
send."""

from __future__ import annotations

import msgspec
import pytest
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from gateway_core import openai_types as oa
from gateway_core.errors import InvalidRequest, RateLimited
from gateway_core.openai_types import (
    AssistantMessage,
    AudioPart,
    ChatCompletionRequest,
    FilePart,
    ImagePart,
    JSONSchemaFormat,
    NamedToolChoice,
    TextPart,
    ToolMessage,
    UserMessage,
    request_decoder,
)

decoder = request_decoder

FULL = b"""{
  "model": "gpt-4o",
  "messages": [
    {"role": "developer", "content": "Be brief."},
    {"role": "system", "content": [{"type": "text", "text": "You are helpful."}]},
    {"role": "user", "name": "ann", "content": [
      {"type": "text", "text": "What is in this image?"},
      {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
      {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
      {"type": "file",
       "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
             "strict": true}}],
  "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
  "parallel_tool_calls": false,
  "response_format": {"type": "json_schema",
                      "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
  "stream": true, "stream_options": {"include_usage": true},
  "n": 1, "stop": ["END"], "temperature": 0.2, "top_p": 0.9, "max_tokens": 100,
  "max_completion_tokens": 120, "seed": 7, "logprobs": true, "top_logprobs": 2,
  "presence_penalty": 0.1, "frequency_penalty": 0.2, "logit_bias": {"50256": -100},
  "user": "u-1", "metadata": {"k": "v"}, "service_tier": "auto", "reasoning_effort": "low",
  "some_future_field": {"kept": "by the raw body"}
}"""


def test_every_documented_field_decodes() -> None:
    req = decoder.decode(FULL)
    assert req.model == "gpt-4o"
    user = req.messages[2]
    assert isinstance(user, UserMessage) and isinstance(user.content, list)
    kinds = [type(p) for p in user.content]
    assert kinds == [TextPart, ImagePart, AudioPart, FilePart]
    assistant = req.messages[3]
    assert isinstance(assistant, AssistantMessage) and assistant.tool_calls
    assert assistant.tool_calls[0].function.name == "get_weather"
    assert isinstance(req.messages[4], ToolMessage)
    assert isinstance(req.tool_choice, NamedToolChoice)
    assert isinstance(req.response_format, JSONSchemaFormat)
    assert req.response_format.json_schema.schema == {"type": "object"}
    assert req.stop == ["END"] and req.max_completion_tokens == 120
    assert req.logit_bias == {"50256": -100}
    assert req.reasoning_effort == "low"


def test_unset_fields_are_not_encoded() -> None:
    req = decoder.decode(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    assert msgspec.json.decode(msgspec.json.encode(req)) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "$.messages[0].role"),
        (b'{"model": "m", "messages": [{"role": "user"}]}', "$.messages[0]"),
        (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}',
         "$.messages[0].content"),
        (b'{"model": "m", "messages": [{"role": "tool", "content": "x"}]}', "$.messages[0]"),
        (b'{"model": 5, "messages": []}', "$.model"),
        (b'{"model": "m", "messages": [], "n": "two"}', "$.n"),
    ],
)
def test_errors_name_the_field(body: bytes, path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decoder.decode(body)
    assert path in str(info.value)


def test_error_shape() -> None:
    err = InvalidRequest("bad", param="messages[0].role")
    assert msgspec.json.decode(err.to_json()) == {"error": {
        "message": "bad", "type": "invalid_request_error", "param": "messages[0].role",
        "code": None}}
    assert err.status == 400
    limited = RateLimited("slow down", headers={"retry-after": "3"})
    assert limited.status == 429 and limited.headers["retry-after"] == "3"
    assert msgspec.json.decode(limited.to_json())["error"]["code"] == "rate_limit_exceeded"


# --- widened for today's API (openai 3.57's completion_create_params) --------------------

GPT5 = b"""{
  "model": "gpt-5",
  "messages": [
    {"role": "user", "content": [
      {"type": "text", "text": "Summarise", "prompt_cache_breakpoint": {"mode": "explicit"}},
      {"type": "image_url", "image_url": {"url": "https://x.example/a.png", "detail": "original"}},
      {"type": "file", "file": {"file_id": "file-abc"}}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_c", "type": "custom", "custom": {"name": "code_exec", "input": "print(1)"}},
      {"id": "call_f", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_c", "content": [{"type": "text", "text": "1"}]},
    {"role": "tool", "tool_call_id": "call_f", "content": "ok"}
  ],
  "tools": [
    {"type": "function", "function": {"name": "f"}},
    {"type": "custom", "custom": {"name": "code_exec", "description": "Runs Python",
      "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}}},
    {"type": "custom", "custom": {"name": "free"}}
  ],
  "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
    {"type": "custom", "custom": {"name": "code_exec"}}]}},
  "reasoning_effort": "max", "verbosity": "low", "service_tier": "priority",
  "web_search_options": {"search_context_size": "high",
    "user_location": {"type": "approximate", "approximate": {"city": "Paris", "country": "FR"}}},
  "prompt_cache_key": "k", "prompt_cache_retention": "24h", "safety_identifier": "s",
  "n": 1.0, "max_completion_tokens": 100.0, "seed": 3.0
}"""


def test_gpt5_request_decodes() -> None:
    req = decoder.decode(GPT5)
    assistant = req.messages[1]
    assert isinstance(assistant, AssistantMessage) and isinstance(assistant.tool_calls, list)
    custom_call, function_call = assistant.tool_calls
    assert custom_call.type == "custom" and isinstance(custom_call.custom, oa.CustomCall)
    assert custom_call.custom.input == "print(1)" and custom_call.function is msgspec.UNSET
    assert isinstance(function_call.function, oa.FunctionCall)
    assert isinstance(req.tools, list)
    assert [t.type for t in req.tools] == ["function", "custom", "custom"]
    custom = req.tools[1].custom
    assert isinstance(custom, oa.CustomToolDefinition) and custom.format == {
        "type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}
    choice = req.tool_choice
    assert isinstance(choice, NamedToolChoice) and choice.type == "allowed_tools"
    assert isinstance(choice.allowed_tools, oa.AllowedTools)
    assert choice.allowed_tools.mode == "required"
    assert req.reasoning_effort == "max" and req.service_tier == "priority"
    assert isinstance(req.web_search_options, oa.WebSearchOptions)
    location = req.web_search_options.user_location
    assert isinstance(location, oa.WebSearchUserLocation) and location.approximate.city == "Paris"
    assert (req.n, req.max_completion_tokens, req.seed) == (1, 100, 3)
    user = req.messages[0]
    assert isinstance(user, UserMessage) and isinstance(user.content, list)
    image = user.content[1]
    assert isinstance(image, ImagePart) and image.image_url.detail == "original"


@pytest.mark.parametrize("choice", [
    b'"none"', b'"auto"', b'"required"',
    b'{"type": "function", "function": {"name": "f"}}',
    b'{"type": "custom", "custom": {"name": "code_exec"}}',
    b'{"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}',
])
def test_every_tool_choice_decodes(choice: bytes) -> None:
    body = b'{"model": "m", "messages": [], "tool_choice": ' + choice + b"}"
    req = decoder.decode(body)
    assert msgspec.json.decode(msgspec.json.encode(req))["tool_choice"] == msgspec.json.decode(
        choice)


def test_integral_floats_need_the_lax_decoder() -> None:
    body = b'{"model": "m", "messages": [], "n": 1.0, "max_tokens": 100.0}'
    req = request_decoder.decode(body)
    assert (req.n, req.max_tokens) == (1, 100)
    # The strict default would refuse what the API accepts: decoders are built lax.
    with pytest.raises(msgspec.ValidationError, match=r"\$\.n"):
        msgspec.json.Decoder(ChatCompletionRequest).decode(body)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.max_tokens"):
        request_decoder.decode(b'{"model": "m", "messages": [], "max_tokens": 100.5}')


def test_chat_file_parts_decode() -> None:
    req = decoder.decode(b"""{"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                  "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-1"}}]}]}""")
    user = req.messages[0]
    assert isinstance(user, UserMessage) and isinstance(user.content, list)
    first, second = user.content
    assert isinstance(first, FilePart) and first.file.file_data.startswith("data:")  # type: ignore[union-attr]
    assert isinstance(second, FilePart) and second.file.file_id == "file-1"


def test_unknown_part_types_are_kept_by_decode_request() -> None:
    body = (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", '
            b'"text": "hi"}, {"type": "video_url", "video_url": {"url": "u"}}]}], "n": 1.0}')
    with pytest.raises(msgspec.ValidationError, match=r"messages\[0\]\.content\[1\]"):
        decoder.decode(body)
    req = oa.decode_request(body)
    user = req.messages[0]
    assert isinstance(user, UserMessage) and isinstance(user.content, list)
    assert user.content[1] == oa.UnknownPart(
        part_type="video_url", value={"type": "video_url", "video_url": {"url": "u"}})
    assert req.n == 1
    with pytest.raises(msgspec.ValidationError, match=r"\$\.messages\[0\]\.role"):
        oa.decode_request(b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}')


def test_sdk_request_shapes_decode() -> None:
    """Bodies typed with the SDK's own TypedDicts decode (every message and tool kind)."""
    body: CompletionCreateParamsBase = {
        "model": "gpt-5",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AA==", "format": "mp3"}}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}],
             "audio": {"id": "audio_1"}},
            {"role": "function", "name": "f", "content": None},
        ],
        "tools": [{"type": "custom", "custom": {"name": "c", "format": {"type": "text"}}}],
        "functions": [{"name": "f"}],
        "function_call": {"name": "f"},
        "prediction": {"type": "content", "content": "x"},
        "audio": {"voice": {"id": "voice_1"}, "format": "pcm16"},
        "modalities": ["text", "audio"],
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    }
    req = decoder.decode(msgspec.json.encode(body))
    assert isinstance(req.messages[2], AssistantMessage)
    assert req.messages[2].audio == oa.AssistantAudio(id="audio_1")
    assert req.function_call == oa.NamedFunction(name="f")
    assert msgspec.json.decode(msgspec.json.encode(req)) == body


def test_tool_calls_encode_their_type_and_only_their_kind() -> None:
    calls = [oa.ToolCall("c1", oa.FunctionCall("f", "{}")),
             oa.ToolCall(id="c2", type="custom", custom=oa.CustomCall("g", "x"))]
    assert msgspec.json.decode(msgspec.json.encode(calls)) == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}}]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"error": {"message": "m", "type": "t", "code": 429}}',
         oa.ErrorDetailIn(message="m", type="t", code=429)),
        (b'{"error": "model not found"}', "model not found"),
        (b'{"object": "error", "message": "m", "type": "BadRequestError", "code": 400}', None),
    ],
)
def test_error_bodies_of_compatible_servers(body: bytes, error: object) -> None:
    decoded = msgspec.json.decode(body, type=oa.ErrorIn)
    assert decoded.error == error
    if error is None:
        assert (decoded.message, decoded.type, decoded.code) == ("m", "BadRequestError", 400)


def test_upstream_answers_are_read_tolerantly() -> None:
    # No id/object/created/usage, arguments as an object, reasoning, stop_reason.
    answer = msgspec.json.decode(
        b'{"choices": [{"message": {"content": null, "reasoning": "r", "tool_calls": '
        b'[{"function": {"name": "f", "arguments": {"a": 1}}}]}, "finish_reason": "stop", '
        b'"stop_reason": 7}]}', type=oa.ChatCompletionIn)
    message = answer.choices[0].message
    assert message.reasoning == "r" and message.tool_calls is not None
    assert message.tool_calls[0].function == oa.FunctionCallIn(name="f", arguments={"a": 1})
    assert answer.choices[0].stop_reason == 7 and answer.usage is None
    usage = msgspec.json.decode(
        b'{"usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_cache_hit_tokens": 4,'
        b' "prompt_tokens_details": null}}', type=oa.UsageOnly).usage
    assert usage is not None and usage.total_tokens is None and usage.prompt_cache_hit_tokens == 4
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"error": {"message": "x"}}', type=oa.ChatCompletionIn)
