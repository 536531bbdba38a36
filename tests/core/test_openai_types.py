"""The OpenAI request type accepts every documented field and content part, and names the
field when something is wrong."""

from __future__ import annotations

import msgspec
import pytest

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
)

decoder = msgspec.json.Decoder(ChatCompletionRequest)

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
