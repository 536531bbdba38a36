"""The Anthropic Messages API end to end: the official anthropic SDK (and Claude Code, from
npm) talks to the served gateway's /v1/messages, on an Anthropic-kind alias (byte-faithful
passthrough) and an OpenAI-kind alias (translated through the hub)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    CutStream,
    Fail,
    FakeUpstream,
    Reply,
    ToolCall,
)
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-messages-key"
CLAUDE_CODE_VERSION = "2.1.332"
NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentic-gateway-tests"


def config(up: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[sandbox]
enabled = false
[llm]
max_retries = 1
backoff_base_s = 0.01
backoff_max_s = 0.05
[llm.cooldown]
failures = 1000
[llm.providers.ant]
kind = "anthropic"
base_url = "{up.anthropic_base_url}"
api_key = "{ANTHROPIC_KEY}"
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.claude]
provider = "ant"
model = "claude-sonnet-4-5"
[llm.models.gpt]
provider = "oai"
model = "gpt-4o"
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
def client(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0,
                             timeout=20) as c:
        yield c


MODELS = ["claude", "gpt"]
WEATHER: Any = {"name": "get_weather", "description": "Weather in a city",
                "input_schema": {"type": "object",
                                 "properties": {"location": {"type": "string"}},
                                 "required": ["location"]}}


def _last(up: FakeUpstream, model: str) -> Any:
    path = "/v1/messages" if model == "claude" else "/v1/chat/completions"
    return [r for r in up.requests if r.path == path][-1]


@pytest.mark.parametrize("model", MODELS)
def test_create(client: anthropic.Anthropic, up: FakeUpstream, model: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "hello there"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    assert raw.headers["request-id"]
    sent = _last(up, model)
    if model == "claude":
        assert sent.body["system"] == "Be brief." and sent.body["model"] == "claude-sonnet-4-5"
    else:
        assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert GATEWAY_KEY not in json.dumps(sent.headers)


def test_passthrough_is_byte_faithful(client: anthropic.Anthropic, up: FakeUpstream) -> None:
    """Thinking blocks with signatures, cache_control and unknown fields reach an
    Anthropic-kind upstream exactly as the client sent them; the beta header goes along."""
    messages: Any = [
        {"role": "user", "content": [{"type": "text", "text": "first",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "let me think", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "echo: first"}]},
        {"role": "user", "content": "second"},
    ]
    client.messages.create(model="claude", max_tokens=2000, messages=messages,
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           extra_body={"context_management": {"edits": []}},
                           extra_headers={"anthropic-beta": "context-management-2025-06-27"})
    sent = _last(up, "claude")
    assert sent.body["messages"] == messages
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent.body["context_management"] == {"edits": []}
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27"


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper(client: anthropic.Anthropic, up: FakeUpstream, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100,
                                messages=[{"role": "user", "content": "one two three"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: one two three"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_tool_round_trip_streamed(client: anthropic.Anthropic, up: FakeUpstream,
                                  model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "call tool: weather in Paris?"}]
    with client.messages.stream(model=model, max_tokens=200, messages=messages,
                                tools=[WEATHER]) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and "location" in uses[0].input
    messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 degrees"}]})
    second = client.messages.create(model=model, max_tokens=200, messages=messages,
                                    tools=[WEATHER])
    assert second.content[0].type == "text" and "18 degrees" in second.content[0].text


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens(client: anthropic.Anthropic, up: FakeUpstream, model: str) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model=model, messages=[{"role": "user", "content": "how many tokens is this"}])
    assert raw.parse().input_tokens > 0
    assert (raw.headers.get("x-gateway-token-estimate") == "true") == (model == "gpt")


def test_models_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["claude", "gpt"]


def test_head_root_for_claude_code(gateway: GatewayProcess) -> None:
    assert httpx.head(gateway.url + "/").status_code == 200


def test_errors_in_anthropic_shape(gateway: GatewayProcess, up: FakeUpstream) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.create(model="claude", max_tokens=10,
                                messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(gateway.url + "/v1/messages", json={"model": "gpt", "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                      "content": "1"}]}], "max_tokens": 10},
                   headers={"x-api-key": GATEWAY_KEY})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "tool_use_id" in body["error"]["message"] or "tool_use" in body["error"]["message"]
    r = httpx.post(gateway.url + "/v1/messages", json={"model": "claude", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"x-api-key": GATEWAY_KEY})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert r.headers["request-id"]


@pytest.mark.parametrize("model", MODELS)
def test_overloaded_is_529_for_anthropic_clients(client: anthropic.Anthropic,
                                                 up: FakeUpstream, model: str) -> None:
    status = 529 if model == "claude" else 503
    up.script(Fail(status), Fail(status))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=model, max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize("model", MODELS)
def test_cut_stream_ends_with_an_error_event(client: anthropic.Anthropic, up: FakeUpstream,
                                             model: str) -> None:
    up.script(CutStream(after_chunks=4))
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(model=model, max_tokens=100, messages=[
                {"role": "user", "content": "a b c d e f g h i j k"}]) as s:
            for _ in s:
                pass


def _claude_code() -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Claude Code (npm @anthropic-ai/claude-code) "
                    "cannot be installed")
    root = NPM_CACHE / f"claude-code-{CLAUDE_CODE_VERSION}"
    binary = root / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root),
             f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"], capture_output=True,
            text=True, timeout=600, check=False)
        if done.returncode != 0 or not binary.exists():
            pytest.skip(f"npm install @anthropic-ai/claude-code failed: {done.stderr[-500:]}")
    return binary


@pytest.mark.parametrize("model", MODELS)
def test_claude_code_finishes_a_task_with_a_tool_call(gateway: GatewayProcess,
                                                      up: FakeUpstream, tmp_path: Path,
                                                      model: str) -> None:
    claude = _claude_code()
    work = tmp_path / "work"
    work.mkdir()
    target = work / "done.txt"
    # The model's first answer asks for Claude Code's Write tool; the next answers echo.
    kind = "anthropic" if model == "claude" else "openai"
    up.script(Reply(tool_calls=(ToolCall("Write", {"file_path": str(target),
                                                   "content": "done\n"}),)), kind=kind)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_AUTH_TOKEN": GATEWAY_KEY,
           "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model,
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_ERROR_REPORTING": "1", "NO_COLOR": "1"}
    done = subprocess.run(
        [str(claude), "-p", "Write the word done into done.txt.", "--allowedTools", "Write",
         "--output-format", "json", "--max-turns", "4"],
        capture_output=True, text=True, timeout=180, env=env, cwd=work,
        stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert target.read_text() == "done\n"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("is_error") is False, result
