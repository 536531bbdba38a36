"""The Responses API end to end: the official openai SDK talks to the served gateway, which
serves each alias natively (an OpenAI-kind provider with Responses), by translation to Chat
Completions (an OpenAI-compatible server without /v1/responses) or by translation to
Anthropic Messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

from tests.fakes.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    CutStream,
    Fail,
    FakeUpstream,
    PlainJson,
)
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-test-key"


def config(up: FakeUpstream, chat_only: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[logging]
format = "json"
[sandbox]
enabled = false
[llm]
max_retries = 1
backoff_base_s = 0.01
backoff_max_s = 0.05
[llm.cooldown]
failures = 1000
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
responses = "native"
first_byte_timeout_s = 2.0
[llm.providers.compat]
kind = "openai"
base_url = "{chat_only.openai_base_url}"
api_key = "{OPENAI_KEY}"
first_byte_timeout_s = 2.0
[llm.providers.ant]
kind = "anthropic"
base_url = "{up.anthropic_base_url}"
api_key = "{ANTHROPIC_KEY}"
first_byte_timeout_s = 2.0
[llm.models.native]
provider = "oai"
model = "gpt-4o"
[llm.models.compat]
provider = "compat"
model = "gpt-4o"
[llm.models.claude]
provider = "ant"
model = "claude-sonnet-4-5"
[llm.models.strict-claude]
provider = "ant"
model = "claude-sonnet-4-5"
hosted_tools = "reject"
max_output_tokens = 1000
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream(responses=False) as chat_only:
        yield up, chat_only


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(*upstreams)) as gw:
        yield gw


@pytest.fixture
def fakes(upstreams: tuple[FakeUpstream, FakeUpstream]) -> tuple[FakeUpstream, FakeUpstream]:
    for f in upstreams:
        f.reset()
    return upstreams


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY,
                       max_retries=0, timeout=20) as c:
        yield c


MODELS = ["native", "compat", "claude"]
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"], "additionalProperties": False},
                "strict": True}
# Where each alias's request must arrive upstream.
UPSTREAM_PATH = {"native": "/v1/responses", "compat": "/v1/chat/completions",
                 "claude": "/v1/messages"}


def _sent(fakes: tuple[FakeUpstream, FakeUpstream], model: str) -> Any:
    up = fakes[1] if model == "compat" else fakes[0]
    got = [r for r in up.requests if r.path == UPSTREAM_PATH[model]]
    assert got, f"no request reached {UPSTREAM_PATH[model]}"
    return got[-1]


@pytest.mark.parametrize("model", MODELS)
def test_create(client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream],
                model: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, input="hello there", instructions="Be brief.", max_output_tokens=100)
    response = raw.parse()
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)
    assert raw.headers["x-gateway-provider"] == {"native": "oai", "compat": "compat",
                                                 "claude": "ant"}[model]
    sent = _sent(fakes, model)
    if model == "native":
        assert sent.body["input"] == "hello there"  # byte-faithful: only model replaced
        assert sent.body["instructions"] == "Be brief."
    elif model == "compat":
        assert sent.body["messages"][0]["content"] == "Be brief."
        assert sent.body["messages"][-1]["content"] in ("hello there",
                                                         [{"type": "text",
                                                           "text": "hello there"}])
    else:
        assert sent.body["system"] == "Be brief." or "Be brief." in json.dumps(sent.body["system"])
        assert sent.body["max_tokens"] == 100
    assert GATEWAY_KEY not in json.dumps(sent.headers)


@pytest.mark.parametrize("model", MODELS)
def test_stream_events(client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream],
                       model: str) -> None:
    events = list(client.responses.create(model=model, input="one two three four",
                                          stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_item.done" in types
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: one two three four"
    seq = [e.sequence_number for e in events]
    assert seq == sorted(seq) and len(set(seq)) == len(seq)
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage is not None and final.response.usage.output_tokens > 0
    assert final.response.output_text == "echo: one two three four"
    sent = _sent(fakes, model)
    # Native: the client's Accept as it sent it; translated: the gateway asks for a stream.
    expected = "application/json" if model == "native" else "text/event-stream"
    assert sent.headers.get("accept") == expected


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper(client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream],
                       model: str) -> None:
    with client.responses.stream(model=model, input="stream me") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "echo: stream me"
    assert final.output_text == "echo: stream me"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True])
def test_function_tool_round_trip(client: openai.OpenAI,
                                  fakes: tuple[FakeUpstream, FakeUpstream], model: str,
                                  streamed: bool) -> None:
    items: list[Any] = [{"role": "user", "content": "call tool: weather in Paris?"}]
    if streamed:
        with client.responses.stream(model=model, input=items, tools=[WEATHER]) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model=model, input=items, tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}
    # The stream helper's parsed items carry a client-side parsed_arguments the API refuses.
    items += [{k: v for k, v in o.model_dump(exclude_none=True).items()
               if k != "parsed_arguments"} for o in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id,
                  "output": "18 degrees"})
    second = client.responses.create(model=model, input=items, tools=[WEATHER])
    assert "18 degrees" in second.output_text


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("model", MODELS)
def test_parse(client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream],
               model: str) -> None:
    parsed = client.responses.parse(model=model, input="Describe Paris", text_format=City)
    assert isinstance(parsed.output_parsed, City)


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_over_three_turns(client: openai.OpenAI,
                                               fakes: tuple[FakeUpstream, FakeUpstream],
                                               model: str) -> None:
    r1 = client.responses.create(model=model, input="first question")
    r2 = client.responses.create(model=model, input="second question",
                                 previous_response_id=r1.id)
    r3 = client.responses.create(model=model, input="third question",
                                 previous_response_id=r2.id)
    assert r3.output_text == "echo: third question"
    sent = json.dumps(_sent(fakes, model).body)
    for text in ("first question", "echo: first question", "second question",
                 "echo: second question", "third question"):
        assert text in sent
    # Stored responses can be read back, listed and deleted.
    got = client.responses.retrieve(r2.id)
    assert got.id == r2.id and got.output_text == "echo: second question"
    items = client.responses.input_items.list(r3.id, order="asc")
    texts = json.dumps([i.model_dump() for i in items.data])
    assert "first question" in texts and "third question" in texts
    client.responses.delete(r1.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r1.id)


def test_stream_is_stored_for_the_next_turn(client: openai.OpenAI,
                                            fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    with client.responses.stream(model="claude", input="remember alpha") as s:
        first = s.get_final_response()
    second = client.responses.create(model="claude", input="and beta",
                                     previous_response_id=first.id)
    assert "remember alpha" in json.dumps(_sent(fakes, "claude").body)
    assert second.output_text == "echo: and beta"


def test_store_false_keeps_nothing(client: openai.OpenAI,
                                   fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    r = client.responses.create(model="claude", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_unknown_previous_response_id_is_a_404(client: openai.OpenAI,
                                               fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="claude", input="hi", previous_response_id="resp_nope")
    assert info.value.body is not None
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize("model", ["compat", "claude"])
def test_hosted_tools_are_dropped_where_the_provider_has_none(
        client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream], model: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, input="hello", tools=[{"type": "web_search"}, WEATHER])
    assert raw.parse().output_text == "echo: hello"
    assert raw.headers["x-gateway-dropped-tools"] == "web_search"
    sent = json.dumps(_sent(fakes, model).body)
    assert "web_search" not in sent and "get_weather" in sent


def test_hosted_tools_pass_through_natively(client: openai.OpenAI,
                                            fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    raw = client.responses.with_raw_response.create(
        model="native", input="hello", tools=[{"type": "web_search"}])
    assert "x-gateway-dropped-tools" not in raw.headers
    assert _sent(fakes, "native").body["tools"] == [{"type": "web_search"}]


def test_hosted_tools_refused_where_the_alias_says_so(
        client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="strict-claude", input="hello",
                                tools=[WEATHER, {"type": "web_search"}])
    assert info.value.body["param"] == "tools[1].type"  # type: ignore[index]


def test_max_output_tokens_beyond_the_alias_limit(
        client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="strict-claude", input="hello", max_output_tokens=5000)
    assert info.value.body["param"] == "max_output_tokens"  # type: ignore[index]


@pytest.mark.parametrize("body,param", [
    ({"model": "claude"}, "input"),
    ({"model": "claude", "input": [{"type": "no_such_item"}]}, "input[0].type"),
    ({"model": "claude", "input": [{"type": "function_call_output", "call_id": "call_x",
                                    "output": "1"}]}, "input[0].call_id"),
])
def test_bad_input_names_the_field(gateway: GatewayProcess,
                                   fakes: tuple[FakeUpstream, FakeUpstream],
                                   body: dict[str, Any], param: str) -> None:
    r = httpx.post(gateway.url + "/v1/responses", json=body,
                   headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("model", MODELS)
def test_cut_stream_ends_with_response_failed(client: openai.OpenAI,
                                              fakes: tuple[FakeUpstream, FakeUpstream],
                                              model: str) -> None:
    up = fakes[1] if model == "compat" else fakes[0]
    up.script(CutStream(after_chunks=4))
    events = list(client.responses.create(model=model, input="a b c d e f g h i j",
                                          stream=True))
    types = [e.type for e in events]
    assert "response.completed" not in types
    assert types[-1] == "response.failed", types
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed" and last.response.error is not None


@pytest.mark.parametrize("model", MODELS)
def test_upstream_error_in_openai_shape(client: openai.OpenAI,
                                        fakes: tuple[FakeUpstream, FakeUpstream],
                                        model: str) -> None:
    up = fakes[1] if model == "compat" else fakes[0]
    up.script(Fail(400, message="bad thing"))
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input="hi")


@pytest.mark.parametrize("model", MODELS)
def test_plain_json_answer_to_a_stream_is_replayed_as_a_stream(
        client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream], model: str) -> None:
    """An upstream that ignores stream: true and answers one JSON body still gives the
    client a proper stream, and the deployment is not counted as failing."""
    up = fakes[1] if model == "compat" else fakes[0]
    up.script(PlainJson())
    events = list(client.responses.create(model=model, input="plain please", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "echo: plain please"


@pytest.mark.parametrize("model", MODELS)
def test_unreadable_non_sse_answer_is_a_502_naming_the_content_type(
        client: openai.OpenAI, fakes: tuple[FakeUpstream, FakeUpstream], model: str) -> None:
    up = fakes[1] if model == "compat" else fakes[0]
    up.script(PlainJson(body=b"<html>proxy error</html>"),
              PlainJson(body=b"<html>proxy error</html>"))
    with pytest.raises(openai.APIStatusError) as info:
        list(client.responses.create(model=model, input="hi", stream=True))
    assert info.value.status_code == 502
    assert "application/json" in str(info.value.message)
