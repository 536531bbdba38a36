"""The fake upstream is faithful: the official openai and anthropic SDKs, pointed at it, parse
its answers, streams and errors (Chat Completions, Responses, Messages) exactly as they would the
real services'."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx
import httpx2  # the transport the current SDKs use; their streams raise its errors unwrapped
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    CutStream,
    Fail,
    FakeUpstream,
    PlainJson,
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
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(seen))


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


# --- OpenAI Responses -----------------------------------------------------------------------

WEATHER_RESPONSES: Any = {"type": "function", "name": "get_weather",
                          "description": "Weather in a city", "strict": True,
                          "parameters": dict(WEATHER_OPENAI["function"]["parameters"],
                                             additionalProperties=False)}


def test_responses_text(up: FakeUpstream, oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-4o", input="hello there world",
                             instructions="be brief")
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "gpt-4o" and r.incomplete_details is None and r.instructions == "be brief"
    [msg] = r.output
    assert msg.type == "message" and msg.id.startswith("msg_") and msg.role == "assistant"
    assert [c.type for c in msg.content] == ["output_text"]
    assert r.output_text == "echo: hello there world"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (5, 4, 9)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    [rec] = up.requests
    assert (rec.kind, rec.method, rec.path) == ("responses", "POST", "/v1/responses")
    assert rec.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert json.loads(rec.raw) == rec.body == {"model": "gpt-4o", "input": "hello there world",
                                               "instructions": "be brief"}
    assert up.requests_for("responses") == [rec] and up.requests_for("openai") == []


def test_responses_stream_event_sequence(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4o", input="one two three", stream=True))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, last = events[0], events[-1]
    assert created.type == "response.created" and last.type == "response.completed"
    assert created.response.status == "in_progress" and created.response.output == []
    assert last.response.id == created.response.id and last.response.status == "completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == last.response.output_text == "echo: one two three"
    item_ids = {getattr(e, "item_id", None) for e in events[3:-2]}
    assert item_ids == {last.response.output[0].id}


def test_responses_sse_framing_and_accept_header(up: FakeUpstream) -> None:
    r = httpx.post(up.openai_base_url + "/responses",
                   headers={"authorization": f"Bearer {OPENAI_KEY}",
                            "accept": "text/event-stream"},
                   json={"model": "gpt-4o", "input": "hi", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    for event in r.text.strip().split("\n\n"):
        name, data = event.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name.removeprefix("event: ") == payload["type"]
        assert ("obfuscation" in payload) == payload["type"].endswith(".delta")
    assert "data: [DONE]" not in r.text
    assert up.requests[0].headers["accept"] == "text/event-stream"


def test_responses_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4o", input="stream me please") as stream:
        pieces = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(pieces) == final.output_text == "echo: stream me please"
    assert final.status == "completed" and final.usage is not None


def test_responses_function_tool_round_trip(up: FakeUpstream, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-4o", input="call tool: weather?",
                                 tools=[WEATHER_RESPONSES])
    [call] = first.output
    assert call.type == "function_call" and call.id and call.id.startswith("fc_")
    assert call.call_id.startswith("call_") and call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris", "unit": "c"}
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    history: Any = [
        {"role": "user", "content": "call tool: weather?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "22 degrees"}]
    second = oai.responses.create(model="gpt-4o", tools=[WEATHER_RESPONSES], input=history)
    assert second.output_text == "The tool said: 22 degrees"
    assert up.requests[-1].body["input"][1]["type"] == "function_call"


def test_responses_tool_round_trip_by_previous_response_id(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-4o", input="call tool", tools=[WEATHER_RESPONSES])
    call = first.output[0]
    assert call.type == "function_call"
    second = oai.responses.create(
        model="gpt-4o", previous_response_id=first.id, tools=[WEATHER_RESPONSES],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text == "The tool said: sunny"
    assert second.previous_response_id == first.id
    # The second response's conversation has the call answered; the first one's does not.
    assert oai.responses.create(model="gpt-4o", previous_response_id=second.id,
                                input="thanks").output_text == "echo: thanks"
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="gpt-4o", previous_response_id=first.id, input="thanks")
    assert f"No tool output found for function call {call.call_id}." in err.value.message


def test_responses_unknown_or_unstored_previous_response(oai: openai.OpenAI) -> None:
    unstored = oai.responses.create(model="gpt-4o", input="hi", store=False)
    for previous in ("resp_nope", unstored.id):
        with pytest.raises(openai.BadRequestError) as err:
            oai.responses.create(model="gpt-4o", input="again", previous_response_id=previous)
        assert err.value.param == "previous_response_id"
        assert err.value.code == "previous_response_not_found"


def test_responses_stream_tool_call_arguments(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4o", input="call tool",
                              tools=[WEATHER_RESPONSES]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added"
    assert kinds.count("response.function_call_arguments.delta") > 1
    assert kinds[-3:] == ["response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    [call] = final.output
    assert call.type == "function_call"
    assert call.parsed_arguments == {"location": "Paris", "unit": "c"}


def test_responses_forced_tool_choice(oai: openai.OpenAI) -> None:
    noop: Any = {"type": "function", "name": "noop", "parameters": {
        "type": "object", "properties": {}}, "strict": False}
    r = oai.responses.create(model="gpt-4o", input="no trigger", tools=[WEATHER_RESPONSES, noop],
                             tool_choice={"type": "function", "name": "noop"})
    [call] = r.output
    assert call.type == "function_call" and call.name == "noop" and call.arguments == "{}"


class Unit(BaseModel):
    name: str
    si: bool


class Reading(BaseModel):
    city: str
    celsius: float
    unit: Unit
    tags: list[str]
    wind: Literal["calm", "storm"]
    note: str | None


def test_responses_parse_answers_the_schema(up: FakeUpstream, oai: openai.OpenAI) -> None:
    r = oai.responses.parse(model="gpt-4o", input="weather as json", text_format=Reading)
    assert r.output_parsed == Reading(city="Paris", celsius=1.5, unit=Unit(name="Paris", si=True),
                                      tags=[], wind="calm", note="Paris")
    fmt = up.requests[-1].body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Reading" and fmt["strict"] is True
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"


def test_chat_parse_answers_the_schema(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.parse(model="gpt-4o", messages=user("weather"),
                                   response_format=Reading)
    assert r.choices[0].message.parsed is not None
    assert r.choices[0].message.parsed.unit == Unit(name="Paris", si=True)


def test_responses_image_is_counted(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "detail": "auto",
         "image_url": "data:image/png;base64," + PIXEL}]}])
    assert r.output_text == "echo: what is this [1 image(s)]"


def test_responses_max_output_tokens_makes_it_incomplete(oai: openai.OpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(30))
    r = oai.responses.create(model="gpt-4o", input=words, max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "echo: " + " ".join(f"w{i}" for i in range(15))
    assert r.output[0].type == "message" and r.output[0].status == "incomplete"
    assert r.usage is not None and r.usage.output_tokens == 16
    events = list(oai.responses.create(model="gpt-4o", input=words, max_output_tokens=16,
                                       stream=True))
    assert events[-1].type == "response.incomplete"
    assert "response.completed" not in [e.type for e in events]


def test_responses_reasoning_items(up: FakeUpstream, oai: openai.OpenAI) -> None:
    plain = oai.responses.create(model="o4-mini", input="think", reasoning={"effort": "low"})
    [thought, msg] = plain.output
    assert thought.type == "reasoning" and thought.id.startswith("rs_")
    assert thought.encrypted_content is None and thought.summary == []
    assert msg.type == "message" and plain.output_text == "echo: think"
    assert plain.usage is not None and plain.usage.output_tokens_details.reasoning_tokens == 4
    assert plain.usage.output_tokens == 4 + 2
    r = oai.responses.create(model="o4-mini", input="think", store=False,
                             reasoning={"effort": "high", "summary": "auto"},
                             include=["reasoning.encrypted_content"])
    thought = r.output[0]
    assert thought.type == "reasoning" and thought.encrypted_content
    assert thought.summary[0].type == "summary_text"
    # Stateless multi-turn: the reasoning item goes back with its encrypted content.
    history: Any = [
        {"role": "user", "content": "think"}, thought.model_dump(exclude_none=True),
        *[o.model_dump(exclude_none=True) for o in r.output[1:]],
        {"role": "user", "content": "more"}]
    again = oai.responses.create(model="o4-mini", input=history, store=False,
                                 reasoning={"effort": "high"},
                                 include=["reasoning.encrypted_content"])
    assert again.output_text == "echo: more"
    sent = up.requests[-1].body["input"][1]
    assert sent["type"] == "reasoning" and sent["encrypted_content"] == thought.encrypted_content


def test_responses_streamed_reasoning_summary(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="o4-mini", input="think",
                              reasoning={"effort": "low", "summary": "auto"},
                              include=["reasoning.encrypted_content"]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    assert "response.reasoning_summary_text.done" in kinds
    thought = final.output[0]
    assert thought.type == "reasoning" and thought.encrypted_content
    assert final.output_text == "echo: think"


def test_responses_custom_reply_and_usage_details(up: FakeUpstream, oai: openai.OpenAI,
                                                  ant: anthropic.Anthropic) -> None:
    reply = Reply(text="hi", prompt_tokens=100, completion_tokens=9, cached_tokens=40,
                  reasoning_tokens=5)
    up.script(reply, kind="responses")
    up.script(reply, kind="openai")
    up.script(reply, kind="anthropic")
    r = oai.responses.create(model="gpt-4o", input="x")
    assert r.output_text == "hi" and r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (100, 9, 109)
    assert r.usage.input_tokens_details.cached_tokens == 40
    assert r.usage.output_tokens_details.reasoning_tokens == 5
    c = oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert c.usage is not None and c.usage.prompt_tokens == 100
    assert c.usage.prompt_tokens_details and c.usage.prompt_tokens_details.cached_tokens == 40
    assert c.usage.completion_tokens_details
    assert c.usage.completion_tokens_details.reasoning_tokens == 5
    m = ant.messages.create(model="c", max_tokens=10, messages=user("x"))
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens) == (60, 40)


def test_responses_scripted_tool_calls(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(tool_calls=(ToolCall("a", {"x": 1}), ToolCall("b"))))
    r = oai.responses.create(model="gpt-4o", input="x")
    assert [(o.type, getattr(o, "name", None)) for o in r.output] == [
        ("function_call", "a"), ("function_call", "b")]
    assert len({getattr(o, "call_id", None) for o in r.output}) == 2


TURN: Any = {"role": "user", "content": "call tool"}
CALL: Any = {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{}"}


@pytest.mark.parametrize(("body", "param", "needle"), [
    ({"input": "hi"}, "model", "Missing required parameter"),
    ({"model": "gpt-4o"}, "input", "Missing required parameter"),
    ({"model": "gpt-4o", "input": {"role": "user"}}, "input", "Invalid type"),
    ({"model": "gpt-4o", "input": "hi", "extra_body": {"messages": user("hi")}}, "messages",
     "Unknown parameter"),
    ({"model": "gpt-4o", "input": "hi", "extra_body": {"max_tokens": 5}}, "max_tokens",
     "Unknown parameter"),
    ({"model": "gpt-4o", "input": [{"type": "text", "text": "hi"}]}, "input[0].type",
     "Invalid value: 'text'"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}]}]}, "input[0].content[0].type", "'input_text'"),
    ({"model": "gpt-4o", "input": [TURN, {"role": "assistant", "content": [
        {"type": "input_text", "text": "hi"}]}]}, "input[1].content[0]",
     "'output_text' and 'refusal'"),
    ({"model": "gpt-4o", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role",
     "Invalid value"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "hi", "name": "bob"}]},
     "input[0].name", "Unknown parameter"),
    ({"model": "gpt-4o", "input": [TURN, {"type": "function_call_output", "call_id": "call_9",
                                          "output": "22"}]}, "input",
     "No tool call found for function call output with call_id call_9."),
    ({"model": "gpt-4o", "input": [TURN, CALL, {"role": "user", "content": "and?"}]}, "input",
     "No tool output found for function call call_1."),
    ({"model": "gpt-4o", "input": [TURN, dict(CALL, arguments={})]}, "input[1].arguments",
     "Invalid type"),
    ({"model": "gpt-4o", "input": [TURN, {"type": "function_call_output", "output": "x"}]},
     "input[1].call_id", "Missing required parameter"),
    ({"model": "gpt-4o", "input": [{"type": "reasoning", "id": "rs_1",
                                    "encrypted_content": "gAAAA"}, TURN]}, "input[0].summary",
     "Missing required parameter"),
    ({"model": "gpt-4o", "input": "hi", "tools": [WEATHER_OPENAI]}, "tools[0].name",
     "Missing required parameter"),
    ({"model": "gpt-4o", "input": "hi", "tools": [{"type": "browser"}]}, "tools[0].type",
     "Invalid value"),
    ({"model": "gpt-4o", "input": "hi", "tools": [dict(WEATHER_RESPONSES, parameters=WEATHER_OPENAI[
        "function"]["parameters"])]}, "tools[0].parameters", "additionalProperties"),
    ({"model": "gpt-4o", "input": "hi", "tools": [WEATHER_RESPONSES],
      "tool_choice": {"type": "function", "name": "other"}}, "tool_choice", "not found"),
    ({"model": "gpt-4o", "input": "hi", "tool_choice": "required"}, "tool_choice", "tools"),
    ({"model": "gpt-4o", "input": "hi", "max_output_tokens": 8}, "max_output_tokens",
     "Expected a value >= 16, but got 8 instead."),
    ({"model": "gpt-4o", "input": "hi", "temperature": 3}, "temperature",
     "decimal above maximum value"),
    ({"model": "gpt-4o", "input": "hi", "text": {"format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}},
     "text.format.name", "Missing required parameter"),
    ({"model": "gpt-4o", "input": "hi", "text": {"format": {"type": "json_object"}}}, "input",
     "the word 'json'"),
    ({"model": "gpt-4o", "input": "hi", "reasoning": {"effort": "extreme"}},
     "reasoning.effort", "Invalid value"),
    ({"model": "gpt-4o", "input": "hi", "include": ["reasoning.summary"]}, "include[0]",
     "Invalid value"),
])
def test_responses_rejects_like_the_api(up: FakeUpstream, oai: openai.OpenAI, body: Any,
                                        param: str, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(**body)
    assert err.value.status_code == 400 and err.value.type == "invalid_request_error"
    assert err.value.param == param
    assert needle in err.value.message
    assert set(err.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert len(up.requests_for("responses")) == 1


def test_responses_accepts_every_item_form(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-4o", instructions="x", input=[
        {"role": "system", "content": "be brief"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text",
                                                              "text": "really"}]},
        {"role": "user", "content": "call tool"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "let me see", "annotations": []}]},
        CALL, {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "rainy"}]},
        {"role": "assistant", "content": "it is rainy"},
        {"role": "user", "content": "thanks"}])
    assert r.output_text == "echo: thanks"


def test_responses_auth(up: FakeUpstream) -> None:
    with openai.OpenAI(base_url=up.openai_base_url, api_key="sk-wrong-key-123",
                       max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            bad.responses.create(model="gpt-4o", input="hi")
    assert err.value.code == "invalid_api_key"


def test_chat_only_server_has_no_responses(oai: openai.OpenAI) -> None:
    with FakeUpstream(responses=False) as chat_only, openai.OpenAI(
            base_url=chat_only.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as client:
        chat_only.script(Fail(500))
        with pytest.raises(openai.NotFoundError) as err:
            client.responses.create(model="gpt-4o", input="hi")
        assert err.value.response.json() == {"detail": "Not Found"}
        assert chat_only.pending == 1  # a 404 route consumes no scripted step
        [rec] = chat_only.requests_for("responses")
        assert rec.body == {"model": "gpt-4o", "input": "hi"}
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=user("hi"))
        assert client.chat.completions.create(model="gpt-4o", messages=user("hi")).choices
        chat_only.responses = True  # a test can switch it per test
        assert client.responses.create(model="gpt-4o", input="hi").output_text == "echo: hi"


# --- scripted faults on /v1/responses and non-SSE answers -----------------------------------


def test_responses_faults(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Fail(429, headers={"retry-after": "2"}), Fail(500), kind="responses")
    assert oai.chat.completions.create(model="gpt-4o", messages=user("hi")).choices
    with pytest.raises(openai.RateLimitError) as e429:
        oai.responses.create(model="gpt-4o", input="hi")
    assert e429.value.response.headers["retry-after"] == "2"
    assert e429.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="gpt-4o", input="hi")
    up.script(Reset(), Stall(5))
    with pytest.raises(openai.APIConnectionError):
        oai.responses.create(model="gpt-4o", input="hi")
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).responses.create(model="gpt-4o", input="hi")
    assert up.pending == 0


def test_responses_cut_stream_has_no_completed(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(CutStream(after_chunks=5))
    got: list[str] = []
    with pytest.raises(DROPPED):
        for event in oai.responses.create(model="gpt-4o", input="a b c d e f", stream=True):
            got.append(event.type)
    assert got == ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added", "response.output_text.delta"]
    up.script(CutStream(after_chunks=3))
    with pytest.raises(DROPPED):
        with oai.responses.stream(model="gpt-4o", input="a b c") as stream:
            stream.get_final_response()
    up.script(CutStream(after_chunks=0))
    with pytest.raises(DROPPED):
        oai.responses.create(model="gpt-4o", input="hi")


async def test_responses_slow_stream(up: FakeUpstream) -> None:
    up.script(SlowStream(delay_s=0.1), kind="responses")
    seen: list[float] = []
    async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY,
                                  max_retries=0) as client:
        stream = await client.responses.create(model="gpt-4o", input="one two", stream=True)
        async for _ in stream:
            seen.append(time.monotonic())
    assert len(seen) == 11  # 4 opening events, 3 deltas, 4 closing ones
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(seen))


def test_responses_stall_mid_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Stall(5, after_chunks=3))
    got: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        for event in oai.with_options(timeout=0.5).responses.create(
                model="gpt-4o", input="a b", stream=True):
            got.append(event.type)
    assert len(got) == 3


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": user("hi"), "stream": True},
     {"authorization": f"Bearer {OPENAI_KEY}"}),
    ("/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True},
     {"authorization": f"Bearer {OPENAI_KEY}"}),
    ("/v1/messages", {"model": "c", "max_tokens": 5, "messages": user("hi"), "stream": True},
     {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}),
])
def test_plain_json_answers_a_stream(up: FakeUpstream, path: str, body: Any,
                                     headers: dict[str, str]) -> None:
    up.script(PlainJson(), PlainJson(body=b'{"partial": true}'))
    headers = dict(headers, accept="text/event-stream")
    r = httpx.post(up.url + path, headers=headers, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    answer = r.json()
    assert answer.get("object", answer.get("type")) in ("chat.completion", "response", "message")
    assert "hi" in json.dumps(answer)
    r = httpx.post(up.url + path, headers=headers, json=body)
    assert r.status_code == 200 and r.json() == {"partial": True}
    assert [rec.headers["accept"] for rec in up.requests] == ["text/event-stream"] * 2
    r = httpx.post(up.url + path, headers=headers, json=body)  # the script is used up
    assert r.headers["content-type"].startswith("text/event-stream")


def test_sdk_stream_requests_are_recorded_with_their_accept(up: FakeUpstream,
                                                            oai: openai.OpenAI) -> None:
    for _ in oai.chat.completions.create(model="gpt-4o", messages=user("hi"), stream=True,
                                         extra_headers={"Accept": "text/event-stream"}):
        pass
    for _ in oai.responses.create(model="gpt-4o", input="hi", stream=True,
                                  extra_headers={"Accept": "text/event-stream"}):
        pass
    assert [r.headers["accept"] for r in up.requests] == ["text/event-stream"] * 2
