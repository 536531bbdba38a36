"""A deployment whose requests fail at the configured rate is skipped while it cools down
(visible in readiness and metrics), then probed once and taken back; an alias whose every
door is shut keeps sending requests to the one that opened first, as probes."""

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
min_requests = 2
failure_rate = 0.5
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
    gw, up, _backup = setup
    up.script(Fail(500), Fail(500))
    for _ in range(2):
        r = ask(gw)
        assert r.status_code == 200 and r.headers["x-gateway-provider"] == "spare"
    ready = httpx.get(gw.url + "/health/ready").json()
    state = ready["llm"]["deployments"]["main/m"]
    assert state["state"] == "open" and state["last_error"] == "status_500"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_llm_deployment_open{deployment="main/m",model="m",provider="main"} 1.0' \
        in metrics
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
    assert ready["llm"]["models"]["m"]["open_circuit"] is False


@pytest.fixture
def solo() -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    with FakeUpstream() as up:
        text = f"""
[sandbox]
enabled = false
[llm]
max_retries = 0
[llm.cooldown]
min_requests = 2
failures = 2
cooldown_s = 60
[llm.providers.only]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.solo]
provider = "only"
"""
        with GatewayProcess(text) as gw:
            yield gw, up


def test_the_last_door_stays_open(solo: tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, up = solo

    def ask_solo() -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", timeout=10, json={
            "model": "solo", "messages": [{"role": "user", "content": "x"}]})

    up.script(Fail(500), Fail(500))
    assert [ask_solo().status_code for _ in range(2)] == [500, 500]
    ready = httpx.get(gw.url + "/health/ready")
    assert ready.status_code == 200  # still serving: it is degraded, not down
    body = ready.json()["llm"]
    assert body["deployments"]["only/solo"]["state"] == "open"
    assert body["models"]["solo"]["open_circuit"] is True
    assert 'gateway_llm_model_open_circuit{model="solo"} 1.0' in httpx.get(
        gw.url + "/metrics").text
    # Open for another minute, but the only door: the upstream (healthy again) is asked,
    # and its answer closes the circuit.
    r = ask_solo()
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "only/solo"
    assert len(up.requests) == 3
    body = httpx.get(gw.url + "/health/ready").json()["llm"]
    assert body["deployments"]["only/solo"]["state"] == "closed"
    assert body["models"]["solo"]["open_circuit"] is False
    assert 'gateway_llm_model_open_circuit{model="solo"} 0.0' in httpx.get(
        gw.url + "/metrics").text
