"""Chat completions end to end: the official openai SDK talks to the served gateway, which
talks to the fake OpenAI and Anthropic upstream."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    CutStream,
    Fail,
    FakeUpstream,
    PlainJson,
    Reset,
    SlowStream,
    Stall,
)
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-test-key"


def config(up: FakeUpstream, backup: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[logging]
format = "json"
[sandbox]
enabled = false
[llm]
max_retries = 2
backoff_base_s = 0.01
backoff_max_s = 0.05
[llm.cooldown]
failures = 1000
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
first_byte_timeout_s = 1.0
[llm.providers.ant]
kind = "anthropic"
base_url = "{up.anthropic_base_url}"
api_key = "{ANTHROPIC_KEY}"
first_byte_timeout_s = 1.0
[llm.providers.backup]
kind = "openai"
base_url = "{backup.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.providers.wrongkey]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "sk-wrong-key-123456"
[llm.models.gpt-4o]
provider = "oai"
[llm.models.claude]
provider = "ant"
model = "claude-sonnet-4-5"
[llm.models.safe]
provider = "oai"
model = "gpt-4o"
fallbacks = ["backup/gpt-4o-mini"]
[llm.models.safe-claude]
provider = "ant"
model = "claude-sonnet-4-5"
fallbacks = ["backup/gpt-4o-mini"]
[llm.models.badkey]
provider = "wrongkey"
model = "gpt-4o"
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream() as backup:
        yield up, backup


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(*upstreams)) as gw:
        yield gw


@pytest.fixture
def up(upstreams: tuple[FakeUpstream, FakeUpstream]) -> FakeUpstream:
    upstreams[0].reset()
    upstreams[1].reset()
    return upstreams[0]


@pytest.fixture
def backup(upstreams: tuple[FakeUpstream, FakeUpstream], up: FakeUpstream) -> FakeUpstream:
    return upstreams[1]


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY,
                       max_retries=0, timeout=20) as c:
        yield c


MODELS = ["gpt-4o", "claude"]
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}


@pytest.mark.parametrize("model", MODELS)
def test_completion(client: openai.OpenAI, up: FakeUpstream, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "hello there"}],
        max_tokens=50, extra_body={"custom_field": {"x": 1}})
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-gateway-fallback"] == "false"
    assert raw.headers["x-request-id"]
    sent = up.requests[-1]
    if model == "gpt-4o":
        assert raw.headers["x-gateway-provider"] == "oai"
        assert sent.path == "/v1/chat/completions"
        assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        # Unknown fields pass through to OpenAI-kind upstreams.
        assert sent.body["custom_field"] == {"x": 1}
    else:
        assert raw.headers["x-gateway-provider"] == "ant"
        assert raw.headers["x-gateway-model"] == "claude-sonnet-4-5"
        assert sent.path == "/v1/messages"
        # As the newest official anthropic SDK sends them.
        assert sent.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
        assert sent.headers["anthropic-version"] == "2026-10-21"
        assert sent.body["system"] == "Be brief."
        assert sent.body["max_tokens"] == 50
        assert sent.body["model"] == "claude-sonnet-4-5"
    # The client's gateway key never travels upstream.
    assert GATEWAY_KEY not in json.dumps(sent.headers)


@pytest.mark.parametrize("model", MODELS)
def test_stream_with_usage(client: openai.OpenAI, up: FakeUpstream, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three four"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three four"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    assert len({c.id for c in chunks}) == 1
    finish = [c.choices[0].finish_reason for c in chunks if c.choices
              and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI, up: FakeUpstream,
                                                 model: str) -> None:
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi"


@pytest.mark.parametrize("model", MODELS)
def test_tool_call_and_result_round_trip(client: openai.OpenAI, up: FakeUpstream,
                                         model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "call tool: weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages,
                                           tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees"})
    second = client.chat.completions.create(model=model, messages=messages,
                                            tools=[WEATHER_TOOL])
    assert second.choices[0].message.content is not None
    assert "18 degrees" in second.choices[0].message.content
    if model == "claude":
        sent = up.requests[-1].body
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][2]["content"][0] == {
            "type": "tool_result", "tool_use_id": call.id, "content": "18 degrees"}
        assert sent["tools"][0]["input_schema"]["required"] == ["location"]


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call_assembles(client: openai.OpenAI, up: FakeUpstream,
                                      model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "call tool now"}],
        tools=[WEATHER_TOOL], stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                if d.id:
                    entry["id"] = d.id
                if d.function and d.function.name:
                    entry["name"] += d.function.name
                if d.function and d.function.arguments:
                    entry["arguments"] += d.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}


def test_stream_helper_of_the_sdk(client: openai.OpenAI, up: FakeUpstream) -> None:
    with client.chat.completions.stream(
        model="claude", messages=[{"role": "user", "content": "call tool please"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"location": "Paris"}


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.mark.parametrize("model", MODELS)
def test_image_parts(client: openai.OpenAI, up: FakeUpstream, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}])
    assert completion.choices[0].message.content == "echo: what is this [2 image(s)]"
    if model == "claude":
        blocks = up.requests[-1].body["messages"][0]["content"]
        assert blocks[1] == {"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": PNG}}
        assert blocks[2] == {"type": "image", "source": {
            "type": "url", "url": "https://example.com/cat.jpg"}}


# --- errors as the SDK sees them -----------------------------------------------------


def test_400_names_the_field(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", n=2,
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.param == "n"
    assert up.requests == []


def test_401_with_a_wrong_gateway_key(gateway: GatewayProcess) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="nope", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()


def test_404_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_429_when_upstream_keeps_limiting(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.script(Fail(429), Fail(429), Fail(429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert len(up.requests) == 3


def test_502_when_the_provider_rejects_our_key(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="badkey", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    body = json.dumps(info.value.body)
    assert "sk-wr" not in body and "sk-wrong-key" not in body


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o", "claude", "safe", "safe-claude", "badkey"]
    assert client.models.retrieve("claude").owned_by == "ant"


# --- streaming is passed on as it arrives; disconnects cancel ------------------------


def test_first_chunk_arrives_while_upstream_still_streams(client: openai.OpenAI,
                                                          up: FakeUpstream) -> None:
    up.script(SlowStream(delay_s=0.3))
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d e"}], stream=True)
    first_at = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_at = time.monotonic()
            break
    assert first_at is not None
    # The fake has not sent its last event yet: it is still streaming the rest.
    for _rest in stream:
        pass
    done_at = time.monotonic()
    assert done_at - first_at > 1.0  # four more delayed events came after the first


def test_finished_streams_give_their_upstream_connection_back(gateway: GatewayProcess,
                                                               up: FakeUpstream) -> None:
    # Read to the body's end after the last event, the upstream connection goes back to
    # the pool: each new stream would otherwise open (to a real provider: TLS-handshake) a
    # connection of its own. The client reads every response to its end, so each stream
    # has ended in the gateway before the next begins.
    import httpx

    up.reset()
    with httpx.Client(base_url=gateway.url, timeout=10,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        for _ in range(5):
            r = http.post("/v1/chat/completions", json={
                "model": "gpt-4o", "stream": True,
                "messages": [{"role": "user", "content": "a b c"}]})
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert len(up.requests_for("openai")) == 5
    assert len({r.peer for r in up.requests_for("openai")}) == 1


def test_client_disconnect_cancels_upstream(gateway: GatewayProcess, up: FakeUpstream) -> None:
    import httpx

    up.script(SlowStream(delay_s=1.0))
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                      json={"model": "gpt-4o", "stream": True,
                            "messages": [{"role": "user", "content": "a b c d e f g h"}]},
                      timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
    deadline = time.monotonic() + 5
    while up.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up.disconnects == 1


# --- retries and failover ------------------------------------------------------------


def test_retries_then_succeeds(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.script(Fail(500), Fail(500))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "echo: x"
    assert raw.headers["x-gateway-attempts"] == "3"
    assert raw.headers["x-gateway-fallback"] == "false"


@pytest.mark.parametrize("model", ["safe", "safe-claude"])
def test_fails_over_when_primary_keeps_failing(client: openai.OpenAI, up: FakeUpstream,
                                               backup: FakeUpstream, model: str) -> None:
    up.script(Fail(503), Fail(529) if model == "safe-claude" else Fail(503), Fail(503))
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "echo: x"
    assert raw.headers["x-gateway-fallback"] == "true"
    assert raw.headers["x-gateway-provider"] == "backup"
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert raw.headers["x-gateway-attempts"] == "4"
    assert len(up.requests) == 3 and len(backup.requests) == 1
    assert backup.requests[0].body["model"] == "gpt-4o-mini"


def test_400_answers_at_once_without_failover(client: openai.OpenAI, up: FakeUpstream,
                                              backup: FakeUpstream) -> None:
    up.script(Fail(400))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="safe", messages=[{"role": "user", "content": "x"}])
    assert len(up.requests) == 1 and backup.requests == []


def test_stall_and_reset_are_retried(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.script(Stall(3.0), Reset())
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-gateway-attempts"] == "3"


def test_stream_fails_over_before_first_byte(client: openai.OpenAI, up: FakeUpstream,
                                             backup: FakeUpstream) -> None:
    up.script(Fail(503), Fail(503), Fail(503))
    raw = client.chat.completions.with_raw_response.create(
        model="safe", messages=[{"role": "user", "content": "p q"}], stream=True)
    assert raw.headers["x-gateway-fallback"] == "true"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: p q"


@pytest.mark.parametrize("model", ["safe", "safe-claude"])
def test_stream_cut_midway_ends_with_error(client: openai.OpenAI, up: FakeUpstream,
                                           backup: FakeUpstream, model: str) -> None:
    up.script(CutStream(after_chunks=3))
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a b c d e f g"}], stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "stream" in str(info.value.message).lower()
    # Only the primary's words: no mixture of two providers' answers.
    assert "".join(received) in "echo: a b c d e f g"
    assert backup.requests == []


def test_client_disconnect_cancels_non_streaming_upstream(gateway: GatewayProcess,
                                                          up: FakeUpstream) -> None:
    import httpx

    up.script(Stall(0.8), Stall(0.8), Stall(0.8))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                   timeout=0.3)
    deadline = time.monotonic() + 5
    while up.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    # The stalled attempt was cut and no retry followed once the client had gone.
    assert up.disconnects == 1
    assert len(up.requests) == 1


def test_retry_after_is_honoured(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.script(Fail(429, headers={"retry-after-ms": "400"}))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-gateway-attempts"] == "2"
    first, second = up.requests
    assert second.at - first.at >= 0.4


def test_request_deadline_bounds_retries(gateway: GatewayProcess, up: FakeUpstream) -> None:
    import httpx

    up.script(Stall(5), Stall(5), Stall(5))
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"authorization": f"Bearer {GATEWAY_KEY}",
                            "x-gateway-timeout": "1.5"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                   timeout=10)
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"
    # Two attempts fit in 1.5 s with a 1 s first-byte timeout; the third never started.
    assert len(up.requests) == 2
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"authorization": f"Bearer {GATEWAY_KEY}",
                            "x-gateway-timeout": "soon"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-gateway-timeout"


@pytest.mark.parametrize("model", MODELS)
def test_streams_are_asked_for_as_streams(client: openai.OpenAI, up: FakeUpstream,
                                          model: str) -> None:
    list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    # A native call keeps the client's Accept (the SDK's application/json: the API streams
    # on the body's "stream"); a translated one asks for a stream itself.
    expected = "application/json" if model == "gpt-4o" else "text/event-stream"
    assert up.requests[-1].headers["accept"] == expected


@pytest.mark.parametrize("model", MODELS)
def test_plain_json_answer_to_a_stream_is_replayed(client: openai.OpenAI, up: FakeUpstream,
                                                   model: str) -> None:
    up.script(PlainJson())
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "plain please"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == "echo: plain please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None


def test_spec_valid_custom_tools_reach_an_openai_upstream_unchanged(
        client: openai.OpenAI, up: FakeUpstream) -> None:
    """GPT-5's freeform custom tools, allowed_tools choices and custom tool calls in history
    are valid Chat Completions: passed through, not refused."""
    tools: Any = [
        {"type": "custom", "custom": {"name": "code_exec", "description": "Runs code",
                                      "format": {"type": "text"}}},
        WEATHER_TOOL,
    ]
    messages: Any = [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_c1", "type": "custom",
             "custom": {"name": "code_exec", "input": "print(1)"}}]},
        {"role": "tool", "tool_call_id": "call_c1", "content": "1"},
        {"role": "user", "content": "thanks"},
    ]
    choice: Any = {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}
    client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools,
                                   tool_choice=choice, n=1)
    sent = up.requests[-1].body
    assert sent["tools"] == tools
    assert sent["messages"] == messages
    assert sent["tool_choice"] == choice


def test_allowed_client_headers_reach_a_native_upstream(client: openai.OpenAI,
                                                        up: FakeUpstream) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"OpenAI-Beta": "assistants=v2", "Idempotency-Key": "k-123"})
    sent = up.requests[-1].headers
    assert sent["openai-beta"] == "assistants=v2"
    assert sent["idempotency-key"] == "k-123"
