"""The fake's legacy completions and embeddings endpoints, driven by the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.upstream import OPENAI_KEY, Fail, FakeUpstream


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    fake.reset()
    with openai.OpenAI(base_url=fake.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as c:
        yield c


def test_completion_json_and_stream(client: openai.OpenAI, fake: FakeUpstream) -> None:
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi there")
    assert c.choices[0].text == "echo: hi there" and c.usage is not None
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi",
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "echo: hi"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 3
    assert [r.path for r in fake.requests_for("completions")] == ["/v1/completions"] * 2


def test_embeddings_float_and_sdk_base64(client: openai.OpenAI) -> None:
    f = client.embeddings.create(model="e", input="x", encoding_format="float")
    b = client.embeddings.create(model="e", input="x")  # the SDK asks base64 and decodes
    assert len(f.data[0].embedding) == 8
    assert b.data[0].embedding == pytest.approx(f.data[0].embedding, abs=1e-6)
    assert f.usage.prompt_tokens == 1


@pytest.mark.parametrize("call,param", [
    (lambda c: c.completions.create(model="", prompt="x"), "model"),
    (lambda c: c.completions.create(model="m", prompt=""), "prompt"),
    (lambda c: c.embeddings.create(model="m", input=[]), "input"),
    (lambda c: c.embeddings.create(model="", input="x"), "model"),
])
def test_bad_requests_in_openai_shape(client: openai.OpenAI, call: object, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call(client)  # type: ignore[operator]
    assert info.value.param == param


def test_scripted_failure(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.script(Fail(503), kind="embeddings")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="e", input="x")
