"""A deployment that keeps failing is skipped while it cools down (visible in readiness
and metrics), then probed once and taken back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.upstream import OPENAI_KEY, Fail, FakeUpstream
from tests.gateway_process import GatewayProcess


@pytest.fixture
def setup() -> Iterator[tuple[GatewayProcess, FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream() as backup:
        text = f"""
[sandbox]
enabled = false
[llm]
max_retries = 0
[llm.cooldown]
failures = 2
window_s = 60
cooldown_s = 1.5
[llm.providers.main]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.providers.spare]
kind = "openai"
base_url = "{backup.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.m]
provider = "main"
fallbacks = ["spare/m2"]
"""
        with GatewayProcess(text) as gw:
            yield gw, up, backup


def ask(gw: GatewayProcess) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m", "messages": [{"role": "user", "content": "x"}]})


def test_cooldown_skips_then_probes(setup: tuple[GatewayProcess, FakeUpstream,
                                                 FakeUpstream]) -> None:
    gw, up, backup = setup
    up.script(Fail(500), Fail(500))
    for _ in range(2):
        r = ask(gw)
        assert r.status_code == 200 and r.headers["x-gateway-provider"] == "spare"
    ready = httpx.get(gw.url + "/health/ready").json()
    state = ready["llm"]["deployments"]["main/m"]
    assert state["state"] == "open" and state["last_error"] == "status_500"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_llm_deployment_open{model="m",provider="main"} 1.0' in metrics
    assert 'gateway_llm_failovers_total{from="main/m",reason="status_500",to="spare/m2"}' \
        in metrics
    # While open, the primary is not even tried.
    r = ask(gw)
    assert r.headers["x-gateway-provider"] == "spare" and len(up.requests) == 2
    time.sleep(1.6)
    # Half-open: one probe goes to the primary, succeeds, and closes the circuit.
    r = ask(gw)
    assert r.headers["x-gateway-provider"] == "main" and len(up.requests) == 3
    ready = httpx.get(gw.url + "/health/ready").json()
    assert ready["llm"]["deployments"]["main/m"]["state"] == "closed"
