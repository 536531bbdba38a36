"""Legacy completions and embeddings end to end: the official openai SDK talks to the served
gateway, which passes them through to the fake OpenAI upstream, or translates a completion
for the Anthropic-kind alias (and refuses embeddings there)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import openai
import pytest

from tests.fakes.upstream import ANTHROPIC_KEY, OPENAI_KEY, FakeUpstream
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-test-key"


def config(up: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[logging]
format = "json"
[sandbox]
enabled = false
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.providers.ant]
kind = "anthropic"
base_url = "{up.anthropic_base_url}"
api_key = "{ANTHROPIC_KEY}"
[llm.models.gpt-instruct]
provider = "oai"
model = "gpt-3.5-turbo-instruct"
[llm.models.claude]
provider = "ant"
model = "claude-sonnet-4-5"
[llm.models.text-embedding-3-small]
provider = "oai"
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(upstream)) as gw:
        yield gw


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY,
                       max_retries=0, timeout=20) as c:
        yield c


def test_completion_passthrough(client: openai.OpenAI, up: FakeUpstream) -> None:
    c = client.completions.create(model="gpt-instruct", prompt="say this", max_tokens=20,
                                  extra_body={"custom_field": 1})
    assert c.object == "text_completion"
    assert c.choices[0].text == "echo: say this"
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None and c.usage.total_tokens > 0
    [rec] = up.requests_for("completions")
    assert rec.body == {"model": "gpt-3.5-turbo-instruct", "prompt": "say this",
                        "max_tokens": 20, "custom_field": 1}


def test_completion_passthrough_stream(client: openai.OpenAI, up: FakeUpstream) -> None:
    chunks = list(client.completions.create(model="gpt-instruct", prompt="one two three",
                                            stream=True))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == "echo: one two three"
    # The gateway asked for usage (to settle budgets) but the client did not: dropped.
    assert all(ch.choices for ch in chunks)
    [rec] = up.requests_for("completions")
    assert rec.body["stream_options"] == {"include_usage": True}


def test_completion_translated(client: openai.OpenAI, up: FakeUpstream) -> None:
    c = client.completions.create(model="claude", prompt="hello there", max_tokens=30)
    assert c.object == "text_completion"
    assert c.choices[0].text == "echo: hello there"
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None and c.usage.prompt_tokens > 0
    [rec] = up.requests_for("anthropic")
    assert rec.body == {"model": "claude-sonnet-4-5", "max_tokens": 30, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]}


def test_completion_translated_stream(client: openai.OpenAI, up: FakeUpstream) -> None:
    chunks = list(client.completions.create(model="claude", prompt="hello there",
                                            max_tokens=30, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "echo: hello there"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("kwargs,param", [
    ({"echo": True}, "echo"),
    ({"suffix": "end"}, "suffix"),
    ({"logprobs": 2}, "logprobs"),
])
def test_completion_translated_refuses(client: openai.OpenAI, up: FakeUpstream,
                                       kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="claude", prompt="hi", max_tokens=5,
                                  **kwargs)  # type: ignore[call-overload]
    assert info.value.param == param
    assert up.requests_for("anthropic") == []


def test_completion_token_prompt_refused_when_translated(client: openai.OpenAI,
                                                         up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="claude", prompt=[1, 2, 3], max_tokens=5)
    assert info.value.param == "prompt"


def _floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_float(client: openai.OpenAI, up: FakeUpstream) -> None:
    e = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"],
                                 encoding_format="float")
    assert [d.index for d in e.data] == [0, 1]
    assert all(len(d.embedding) == 8 and isinstance(d.embedding[0], float) for d in e.data)
    assert e.usage.prompt_tokens == 4
    [rec] = up.requests_for("embeddings")
    assert rec.body == {"model": "text-embedding-3-small", "input": ["a cat", "a dog"],
                        "encoding_format": "float"}


def test_embeddings_base64_relayed_unchanged(client: openai.OpenAI, up: FakeUpstream) -> None:
    f = client.embeddings.create(model="text-embedding-3-small", input="x",
                                 encoding_format="float")
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="x", encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(b64, str)
    assert _floats(b64) == pytest.approx(f.data[0].embedding, abs=1e-6)
    assert up.requests_for("embeddings")[-1].body["encoding_format"] == "base64"


def test_embeddings_sdk_default_decodes_base64(client: openai.OpenAI, up: FakeUpstream) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it into floats itself.
    e = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]])
    assert len(e.data[0].embedding) == 8 and isinstance(e.data[0].embedding[0], float)
    assert e.usage.prompt_tokens == 3
    [rec] = up.requests_for("embeddings")
    assert rec.body["encoding_format"] == "base64" and rec.body["input"] == [[1, 2, 3]]


def test_embeddings_on_anthropic_alias_refused(client: openai.OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="claude", input="hello")
    assert info.value.param == "input"
    assert "no embeddings" in info.value.message
    assert up.requests_for("anthropic") == []


@pytest.mark.parametrize("value", ["", [], [""]])
def test_embeddings_empty_input(client: openai.OpenAI, up: FakeUpstream, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="text-embedding-3-small",
                                 input=value)  # type: ignore[arg-type]
    assert info.value.param == "input"
    assert up.requests_for("embeddings") == []
