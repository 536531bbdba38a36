"""The agent clients people actually run, pointed at the served gateway: the OpenAI Agents
SDK with its default (Responses) model, and Codex CLI (npm ``@openai/codex``) in
``codex exec`` mode with a custom model provider. Each runs to a final answer through the
gateway, against the fake upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import ANTHROPIC_KEY, OPENAI_KEY, FakeUpstream
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-agents-key"
CODEX_VERSION = "0.171.0"
NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentic-gateway-tests"


def config(up: FakeUpstream, chat_only: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[sandbox]
enabled = false
[llm.cooldown]
failures = 1000
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
responses = "native"
[llm.providers.compat]
kind = "openai"
base_url = "{chat_only.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.providers.ant]
kind = "anthropic"
base_url = "{up.anthropic_base_url}"
api_key = "{ANTHROPIC_KEY}"
[llm.models.native]
provider = "oai"
model = "gpt-4o"
[llm.models.compat]
provider = "compat"
model = "gpt-4o"
[llm.models.claude]
provider = "ant"
model = "claude-sonnet-4-5"
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream(responses=False) as chat_only:
        yield up, chat_only


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(*upstreams)) as gw:
        yield gw


MODELS = ["native", "compat", "claude"]


@pytest.mark.parametrize("model", MODELS)
def test_openai_agents_sdk_runs_an_agent_with_a_tool(gateway: GatewayProcess,
                                                     model: str) -> None:
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_weather(location: str) -> str:
        """Weather in a city."""
        calls.append(location)
        return f"18 degrees in {location}"

    async def run() -> str:
        client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
        try:
            agent = agents.Agent(
                name="weather", instructions="Answer with the tool.", tools=[get_weather],
                model=agents.OpenAIResponsesModel(model=model, openai_client=client),
            )
            result = await agents.Runner.run(agent, "call tool: weather in Paris?",
                                             max_turns=4)
            return str(result.final_output)
        finally:
            await client.close()

    agents.set_tracing_disabled(True)
    final = asyncio.run(run())
    assert len(calls) == 1
    assert "18 degrees in" in final


def _codex() -> Path:
    """Codex CLI from npm, installed once into a cache folder; skip where npm is missing."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Codex CLI (npm @openai/codex) cannot be installed")
    root = NPM_CACHE / f"codex-{CODEX_VERSION}"
    binary = root / "node_modules" / ".bin" / "codex"
    if not binary.exists():
        root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root),
             f"@openai/codex@{CODEX_VERSION}"], capture_output=True, text=True, timeout=600,
            check=False)
        if done.returncode != 0 or not binary.exists():
            pytest.skip(f"npm install @openai/codex failed: {done.stderr[-500:]}")
    return binary


@pytest.mark.parametrize("model", MODELS)
def test_codex_exec_finishes_a_task(gateway: GatewayProcess,
                                    upstreams: tuple[FakeUpstream, FakeUpstream],
                                    tmp_path: Path, model: str) -> None:
    codex = _codex()
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(f"""
model = "{model}"
model_provider = "gateway"
[model_providers.gateway]
name = "Agentic Gateway"
base_url = "{gateway.url}/v1"
env_key = "AGENTIC_GATEWAY_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
""")
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "CODEX_HOME": str(home),
           "AGENTIC_GATEWAY_KEY": GATEWAY_KEY, "RUST_LOG": "error", "NO_COLOR": "1"}
    for f in upstreams:
        f.reset()
    done = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "--json", "-C", str(work),
         "Reply with one line saying done."],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
        check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [e for e in events if e.get("type") == "item.completed"
                and e.get("item", {}).get("type") == "agent_message"]
    assert messages, done.stdout[-2000:]
    assert "echo:" in messages[-1]["item"]["text"]
    up = upstreams[1] if model == "compat" else upstreams[0]
    assert any(r.path in ("/v1/responses", "/v1/chat/completions", "/v1/messages")
               for r in up.requests)
