"""The fake upstream is faithful: the official openai and anthropic SDKs, pointed at it, parse
its answers, streams and errors exactly as they would the real services'."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2  # the transport the current SDKs use; their streams raise its errors unwrapped
import openai
import pytest

from tests.fakes.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    CutStream,
    Fail,
    FakeUpstream,
    Reply,
    Reset,
    SlowStream,
    Stall,
    ToolCall,
)

WEATHER_OPENAI: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                    "unit": {"type": "string",
                                                             "enum": ["c", "f"]}},
                   "required": ["location", "unit"]}}}
WEATHER_ANTHROPIC: Any = {"name": "get_weather", "description": "Weather in a city",
                          "input_schema": WEATHER_OPENAI["function"]["parameters"]}
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
         "AAAABJRU5ErkJggg==")


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def oai(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def ant(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY,
                             max_retries=0) as c:
        yield c


# What a client sees when the connection dies mid-answer.
DROPPED = (openai.APIConnectionError, anthropic.APIConnectionError, httpx.TransportError,
           httpx2.TransportError)


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_text(up: FakeUpstream, oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=user("hello there world"))
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.content == "echo: hello there world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 4, 7)
    [rec] = up.requests
    assert (rec.kind, rec.method, rec.path) == ("openai", "POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert rec.body["messages"] == user("hello there world")
    assert rec.at <= time.monotonic()


def test_openai_stream_text(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=user("one two three"),
                                              stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) == 4
    assert "".join(pieces) == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.usage is None and c.id == chunks[0].id for c in chunks)


def test_openai_stream_include_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(
        model="gpt-4o", messages=user("count me"), stream=True,
        stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 3)
    assert all(c.usage is None and len(c.choices) == 1 for c in body)


def test_openai_stream_is_sse(up: FakeUpstream) -> None:
    r = httpx.post(up.openai_base_url + "/chat/completions",
                   headers={"authorization": f"Bearer {OPENAI_KEY}"},
                   json={"model": "gpt-4o", "messages": user("hi"), "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


def test_openai_tool_call(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=user("call tool please"),
                                    tools=[WEATHER_OPENAI])
    assert r.choices[0].finish_reason == "tool_calls"
    [call] = r.choices[0].message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "c"}


def test_openai_forced_tool_choice(oai: openai.OpenAI) -> None:
    other: Any = {"type": "function", "function": {"name": "noop", "parameters": {
        "type": "object", "properties": {}}}}
    r = oai.chat.completions.create(
        model="gpt-4o", messages=user("no trigger here"), tools=[WEATHER_OPENAI, other],
        tool_choice={"type": "function", "function": {"name": "noop"}})
    [call] = r.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "noop"
    assert json.loads(call.function.arguments) == {}


def test_openai_stream_tool_call(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=user("call tool"),
                                              tools=[WEATHER_OPENAI], stream=True))
    deltas = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    assert len(deltas) > 2  # arguments arrive in pieces
    args = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(args) == {"location": "Paris", "unit": "c"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_accumulates(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="gpt-4o", messages=user("call tool"),
                                     tools=[WEATHER_OPENAI]) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments)["location"] == "Paris"


def test_openai_tool_result_is_quoted(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "call tool"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"}])
    assert r.choices[0].message.content == "The tool said: 22 degrees"


def test_openai_rejects_orphan_tool_message(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_1", "content": "22"}])
    assert "role 'tool'" in err.value.message


def test_openai_image_is_counted(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PIXEL}}]}])
    assert r.choices[0].message.content == "echo: what is this [1 image(s)]"


def test_openai_auth(up: FakeUpstream) -> None:
    with openai.OpenAI(base_url=up.openai_base_url, api_key="sk-wrong-key-123",
                       max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert err.value.code == "invalid_api_key"
    assert err.value.type == "invalid_request_error"
    assert "sk-wrong-key-123" not in err.value.message
    r = httpx.post(up.openai_base_url + "/chat/completions",
                   json={"model": "gpt-4o", "messages": user("hi")})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_models(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == ["gpt-4o", "gpt-4o-mini"]


def test_openai_custom_reply(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="hi", tool_calls=(ToolCall("f", {"a": 1}),), prompt_tokens=100,
                    completion_tokens=7))
    r = oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    msg = r.choices[0].message
    assert msg.content == "hi" and msg.tool_calls and msg.tool_calls[0].function.name == "f"  # type: ignore[union-attr]
    assert r.usage and (r.usage.prompt_tokens, r.usage.completion_tokens) == (100, 7)
    r = oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert r.choices[0].message.content == "echo: x"  # the script was used up


# --- Anthropic ------------------------------------------------------------------------------


def test_anthropic_text(up: FakeUpstream, ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model="claude-x", max_tokens=50, system="be brief",
                            messages=user("hello there"))
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "claude-x" and m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert (m.usage.input_tokens, m.usage.output_tokens) == (4, 3)
    [rec] = up.requests
    assert rec.kind == "anthropic" and rec.path == "/v1/messages"
    assert rec.headers["anthropic-version"]


def test_anthropic_stream_text(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-x", max_tokens=50,
                             messages=user("one two three")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 4 and "".join(pieces) == "echo: one two three"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


def test_anthropic_raw_event_order(ant: anthropic.Anthropic) -> None:
    events = list(ant.messages.create(model="claude-x", max_tokens=50, messages=user("a b"),
                                      stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_anthropic_sse_framing(up: FakeUpstream) -> None:
    r = httpx.post(up.url + "/v1/messages",
                   headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "m", "max_tokens": 5, "messages": user("hi"), "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    for event in r.text.strip().split("\n\n"):
        name, data = event.split("\n")
        assert name.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]
    assert "event: ping" in r.text


def test_anthropic_stream_tool_use(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-x", max_tokens=50, messages=user("call tool"),
                             tools=[WEATHER_ANTHROPIC]) as stream:
        partials = [e for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert len(partials) > 1
    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert block.name == "get_weather" and block.input == {"location": "Paris", "unit": "c"}


def test_anthropic_tool_result_round_trip(ant: anthropic.Anthropic) -> None:
    first = ant.messages.create(model="c", max_tokens=50, messages=user("call tool"),
                                tools=[WEATHER_ANTHROPIC])
    tool = first.content[0]
    assert tool.type == "tool_use"
    history: Any = [
        {"role": "user", "content": "call tool"},
        {"role": "assistant", "content": [tool.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id,
                                      "content": "sunny"}]}]
    m = ant.messages.create(model="c", max_tokens=50, tools=[WEATHER_ANTHROPIC],
                            messages=history)
    assert m.content[0].text == "The tool said: sunny"  # type: ignore[union-attr]


@pytest.mark.parametrize(("messages", "needle"), [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "assistant", "content": "a"}], "first message"),
    ([{"role": "user", "content": [{"type": "text", "text": ""}]}], "non-empty"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                    "content": "x"}]}], "tool_use_id"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "image_url"),
    ([{"role": "user", "content": "go"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                         "input": {}}]},
      {"role": "user", "content": "forgot the result"}], "without `tool_result`"),
    ([{"role": "user", "content": "go"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                         "input": {}}]},
      {"role": "user", "content": [{"type": "text", "text": "here:"},
                                   {"type": "tool_result", "tool_use_id": "toolu_1"}]}],
     "must come first"),
    ([{"role": "user", "content": "go"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                         "input": "{}"}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}],
     "object input"),
])
def test_anthropic_rejects_malformed_messages(ant: anthropic.Anthropic, messages: Any,
                                              needle: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        ant.messages.create(model="c", max_tokens=10, messages=messages)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert needle in err.value.body["error"]["message"]  # type: ignore[index]


def test_anthropic_requires_max_tokens_and_version(up: FakeUpstream) -> None:
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    r = httpx.post(up.url + "/v1/messages", headers=headers,
                   json={"model": "m", "messages": user("hi")})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = httpx.post(up.url + "/v1/messages", headers={"x-api-key": ANTHROPIC_KEY},
                   json={"model": "m", "max_tokens": 5, "messages": user("hi")})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_image_is_counted(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model="c", max_tokens=10, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PIXEL}},
        {"type": "text", "text": "what is it"}]}])
    assert m.content[0].text == "echo: what is it [1 image(s)]"  # type: ignore[union-attr]


def test_anthropic_auth(up: FakeUpstream) -> None:
    with anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-ant-wrong",
                             max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as err:
            bad.messages.create(model="c", max_tokens=10, messages=user("hi"))
    assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    r = httpx.post(up.url + "/v1/messages", headers={"anthropic-version": "2023-06-01"},
                   json={"model": "m", "max_tokens": 5, "messages": user("hi")})
    assert r.status_code == 401 and r.json()["type"] == "error"


# --- scripted faults ------------------------------------------------------------------------


def test_fail_maps_to_sdk_errors(up: FakeUpstream, oai: openai.OpenAI,
                                 ant: anthropic.Anthropic) -> None:
    up.script(Fail(500), Fail(429, headers={"retry-after": "1"}), Fail(529), Fail(503))
    with pytest.raises(openai.InternalServerError) as e500:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert e500.value.type == "server_error"
    with pytest.raises(openai.RateLimitError) as e429:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert e429.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.OverloadedError) as e529:
        ant.messages.create(model="c", max_tokens=5, messages=user("hi"))
    assert e529.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.ServiceUnavailableError):
        ant.messages.create(model="c", max_tokens=5, messages=user("hi"))
    assert up.pending == 0
    assert oai.chat.completions.create(model="gpt-4o", messages=user("ok")).choices


def test_fail_with_custom_body(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Fail(502, body=b"<html>bad gateway</html>"))
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert err.value.status_code == 502
    assert err.value.response.text == "<html>bad gateway</html>"


def test_script_per_kind(up: FakeUpstream, oai: openai.OpenAI,
                         ant: anthropic.Anthropic) -> None:
    up.script(Fail(500), kind="anthropic")
    assert oai.chat.completions.create(model="gpt-4o", messages=user("hi")).choices
    with pytest.raises(anthropic.InternalServerError):
        ant.messages.create(model="c", max_tokens=5, messages=user("hi"))


def test_stall_times_out_the_client(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Stall(5))
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(model="gpt-4o",
                                                              messages=user("hi"))
    up.wait_for_requests(1)
    deadline = time.monotonic() + 5
    while up.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert up.disconnects == 1  # the client's give-up cancelled the stalled handler


def test_reset_is_a_connection_error(up: FakeUpstream, oai: openai.OpenAI,
                                     ant: anthropic.Anthropic) -> None:
    up.script(Reset(), Reset())
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="c", max_tokens=5, messages=user("hi"))


def test_cut_stream_openai(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(CutStream(after_chunks=2))
    got: list[Any] = []
    with pytest.raises(DROPPED):
        for chunk in oai.chat.completions.create(model="gpt-4o", stream=True,
                                                 messages=user("a b c d e f")):
            got.append(chunk)
    assert len(got) == 2 and got[0].choices[0].delta.role == "assistant"


def test_cut_stream_anthropic(up: FakeUpstream, ant: anthropic.Anthropic) -> None:
    up.script(CutStream(after_chunks=3))
    got: list[str] = []
    with pytest.raises(DROPPED):
        with ant.messages.stream(model="c", max_tokens=50, messages=user("a b c d")) as s:
            got.extend(e.type for e in s)
    assert "message_stop" not in got and "message_start" in got


def test_cut_non_streaming_body(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(CutStream(after_chunks=0))
    with pytest.raises(DROPPED):
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))


async def test_slow_stream_arrives_chunk_by_chunk(up: FakeUpstream) -> None:
    up.script(SlowStream(delay_s=0.1))
    seen: list[float] = []
    async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY,
                                  max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", stream=True,
                                                      messages=user("one two three"))
        async for _ in stream:
            seen.append(time.monotonic())
    assert len(seen) == 6
    # Each chunk waited its delay on the server, so they cannot have arrived together.
    assert all(b - a >= 0.05 for a, b in zip(seen, seen[1:]))


async def test_async_anthropic_client(up: FakeUpstream) -> None:
    async with anthropic.AsyncAnthropic(base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY,
                                        max_retries=0) as client:
        async with client.messages.stream(model="c", max_tokens=10,
                                          messages=user("async hi")) as stream:
            text = await stream.get_final_text()
    assert text == "echo: async hi"


def test_reset_forgets(up: FakeUpstream, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    up.script(Fail(500))
    up.reset()
    assert up.requests == [] and up.pending == 0
    assert oai.chat.completions.create(model="gpt-4o", messages=user("hi")).choices


@pytest.mark.parametrize("step", [Stall(60), Stall(60, after_chunks=2)])
def test_stop_with_stalled_request_returns_promptly(step: Stall) -> None:
    up = FakeUpstream().start()
    up.script(step)
    errors: list[BaseException] = []

    def call() -> None:
        with openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0,
                           timeout=30) as client:
            try:
                for _ in client.chat.completions.create(model="gpt-4o", stream=True,
                                                        messages=user("a b c")):
                    pass
            except (openai.APIError, *DROPPED) as exc:
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    up.wait_for_requests(1)
    time.sleep(0.2)  # let the handler reach its stall
    started = time.monotonic()
    up.stop()
    assert time.monotonic() - started < 5
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1  # the client saw the connection go, not a clean answer


def test_max_tokens_cuts_the_answer(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=user("one two three four"),
                                    max_completion_tokens=2)
    assert r.choices[0].message.content == "echo: one"
    assert r.choices[0].finish_reason == "length"
    m = ant.messages.create(model="c", max_tokens=3, messages=user("one two three four"))
    assert m.content[0].text == "echo: one two"  # type: ignore[union-attr]
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3


def test_client_leaving_mid_stream_is_seen(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(SlowStream(delay_s=0.2))
    stream = oai.chat.completions.create(model="gpt-4o", stream=True,
                                         messages=user("a b c d e f g h"))
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while up.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.disconnects == 1
