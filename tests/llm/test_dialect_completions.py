"""The legacy completions and embeddings dialects: request -> Conversation, Result ->
text_completion (checked with the openai SDK's own types), the stream encoder, native
bodies and usage, and the refusals a translating encoder makes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from openai.types import Completion, CreateEmbeddingResponse

from gateway_core.completions_types import CompletionRequest, EmbeddingRequest, prompt_kind
from gateway_core.errors import InvalidRequest, UpstreamError
from gateway_llm.dialects.completions import COMPLETIONS
from gateway_llm.dialects.embeddings import EMBEDDINGS
from gateway_llm.dialects.messages import MESSAGES
from gateway_llm.hub import (
    EncodeOptions,
    Finish,
    LLMRequest,
    Result,
    Start,
    Text,
    TextDelta,
    Usage,
    UsageUpdate,
)
from gateway_llm.limiter import estimate_prompt_tokens


def completion_request(**body: Any) -> CompletionRequest:
    return msgspec.json.decode(json.dumps({"model": "m", **body}), type=CompletionRequest,
                               strict=False)


def llm(req: CompletionRequest, include_usage: bool = False) -> LLMRequest:
    return LLMRequest(COMPLETIONS, "gpt-instruct", req, {}, include_usage=include_usage,
                      created=1700000000)


def test_prompt_becomes_one_user_message_with_sampling() -> None:
    conv = COMPLETIONS.to_conversation(completion_request(
        prompt="Say this is a test", max_tokens=7, temperature=0, stop="\n", seed=3,
        top_p=0.5, user="u1"))
    assert [(m.role, m.parts) for m in conv.messages] == [
        ("user", [Text(text="Say this is a test")])]
    assert (conv.max_output_tokens, conv.temperature, conv.top_p, conv.stop, conv.seed,
            conv.user) == (7, 0, 0.5, ["\n"], 3, "u1")
    assert conv.unsupported == []


@pytest.mark.parametrize("body,param", [
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x", "logprobs": 0}, "logprobs"),
    ({"prompt": "x", "best_of": 2}, "best_of"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": [[1, 2], [3]]}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
])
def test_legacy_only_fields_refused_when_translated(body: dict[str, Any], param: str) -> None:
    conv = COMPLETIONS.to_conversation(completion_request(max_tokens=5, **body))
    with pytest.raises(InvalidRequest) as info:
        MESSAGES.encode_request(conv, model="claude", stream=False, options=EncodeOptions())
    assert info.value.param == param


@pytest.mark.parametrize("body", [{"prompt": "x", "best_of": 1}, {"prompt": ["only one"]},
                                  {"prompt": "x", "echo": False}])
def test_harmless_values_translate(body: dict[str, Any]) -> None:
    conv = COMPLETIONS.to_conversation(completion_request(max_tokens=5, **body))
    out = json.loads(MESSAGES.encode_request(conv, model="claude", stream=False,
                                             options=EncodeOptions()).body)
    assert out["messages"][0]["role"] == "user"


def test_token_prompt_estimates_one_token_per_id() -> None:
    small = estimate_prompt_tokens(COMPLETIONS.to_conversation(completion_request(prompt=[1])))
    big = estimate_prompt_tokens(COMPLETIONS.to_conversation(
        completion_request(prompt=list(range(101)))))
    assert big - small == 100


@pytest.mark.parametrize("finish,expected", [("stop", "stop"), ("length", "length"),
                                             ("tool_calls", "stop"),
                                             ("content_filter", "content_filter")])
def test_encode_result_is_a_text_completion(finish: Any, expected: str) -> None:
    result = Result(id="msg_1", model="claude-x", parts=[Text(text="This is a test.")],
                    finish=finish, usage=Usage(input_tokens=5, output_tokens=7))
    c = Completion.model_validate_json(COMPLETIONS.encode_result(result, llm(
        completion_request(prompt="x"))))
    assert c.object == "text_completion" and c.id == "cmpl-msg_1" and c.model == "claude-x"
    assert c.choices[0].text == "This is a test."
    assert c.choices[0].finish_reason == expected
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (5, 7, 12)


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_encoder(include_usage: bool) -> None:
    enc = COMPLETIONS.stream_encoder(llm(completion_request(prompt="x"), include_usage))
    out: list[bytes] = []
    for e in [Start(id="msg_1", model="claude-x"), TextDelta(text="Hel"), TextDelta(text="lo"),
              Finish(reason="length"), UsageUpdate(usage=Usage(input_tokens=2, output_tokens=3))]:
        out.extend(enc.feed(e))
    out.extend(enc.close())
    assert out[-1] == b"data: [DONE]\n\n"
    # Stream chunks carry finish_reason null until the last (the SDK builds them unchecked).
    chunks = [json.loads(b[len(b"data: "):]) for b in out[:-1]]
    assert all(c["object"] == "text_completion" and c["id"] == "cmpl-msg_1" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [
        None, None, "length"]
    usage = [c["usage"] for c in chunks if not c["choices"]]
    assert usage == ([{"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}]
                     if include_usage else [])


def test_stream_fail_is_an_openai_error_without_done() -> None:
    enc = COMPLETIONS.stream_encoder(llm(completion_request(prompt="x")))
    [event] = enc.fail(UpstreamError("boom"))
    assert json.loads(event[len(b"data: "):])["error"]["message"] == "boom"


def test_native_body_replaces_model_and_asks_for_usage() -> None:
    raw: dict[str, object] = {"model": "alias", "prompt": [1, 2], "echo": True, "x": 1,
                              "stream_options": {"include_obfuscation": False}}
    assert json.loads(COMPLETIONS.native_body(raw, model="real", stream=True)) == {
        "model": "real", "prompt": [1, 2], "echo": True, "x": 1, "stream": True,
        "stream_options": {"include_obfuscation": False, "include_usage": True}}
    assert COMPLETIONS.native_usage(b'{"usage":{"prompt_tokens":3,"completion_tokens":4,'
                                    b'"total_tokens":7}}') == Usage(input_tokens=3,
                                                                    output_tokens=4)


def test_upstream_side_refuses_and_reads_openai_errors() -> None:
    conv = COMPLETIONS.to_conversation(completion_request(prompt="x"))
    with pytest.raises(InvalidRequest):
        COMPLETIONS.encode_request(conv, model="m", stream=False, options=EncodeOptions())
    err = COMPLETIONS.error_from(400, b'{"error":{"message":"bad","type":"invalid_request_error",'
                                      b'"param":"prompt","code":null}}', "oai")
    assert (err.status, err.message, err.param) == (400, "bad", "prompt")


# --- embeddings ------------------------------------------------------------------------------


def test_embeddings_native_body_and_usage() -> None:
    raw: dict[str, object] = {"model": "alias", "input": ["a"], "encoding_format": "base64",
                              "dimensions": 8}
    assert json.loads(EMBEDDINGS.native_body(raw, model="text-embedding-3-small",
                                             stream=False)) == {
        **raw, "model": "text-embedding-3-small"}
    body = CreateEmbeddingResponse(
        object="list", model="text-embedding-3-small", data=[],
        usage={"prompt_tokens": 8, "total_tokens": 8}).model_dump_json().encode()
    assert EMBEDDINGS.native_usage(body) == Usage(input_tokens=8)


@pytest.mark.parametrize("value,tokens", [([[1] * 40], 40), ("word " * 40, 50)])
def test_embeddings_estimate(value: Any, tokens: int) -> None:
    conv = EMBEDDINGS.to_conversation(EmbeddingRequest(model="m", input=value))
    assert abs(estimate_prompt_tokens(conv) - tokens) <= 8


def test_embeddings_refused_by_a_translating_encoder() -> None:
    conv = EMBEDDINGS.to_conversation(EmbeddingRequest(model="m", input="hello"))
    with pytest.raises(InvalidRequest) as info:
        MESSAGES.encode_request(conv, model="claude", stream=False, options=EncodeOptions())
    assert info.value.param == "input" and info.value.status == 400


@pytest.mark.parametrize("value,kind", [("a", "text"), (["a", "b"], "texts"), ([1, 2], "tokens"),
                                        ([[1], [2]], "token_lists"), ([], None),
                                        (["a", 1], None), ([True], None)])
def test_prompt_kind(value: Any, kind: str | None) -> None:
    assert prompt_kind(value) == kind
