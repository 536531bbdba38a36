"""SIGTERM lets in-flight requests finish (within the grace period) before the gateway
stops, and the gateway exits cleanly."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Stall
from tests.gateway_process import GatewayProcess


def test_in_flight_request_finishes_on_sigterm() -> None:
    with FakeUpstream() as up:
        gw = GatewayProcess(f"""
[server]
graceful_timeout_s = 10
[sandbox]
enabled = false
[llm.providers.p]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.m]
provider = "p"
""").start()
        try:
            up.script(Stall(1.5))
            result: dict[str, object] = {}

            def call() -> None:
                r = httpx.post(gw.url + "/v1/chat/completions", timeout=20, json={
                    "model": "m", "messages": [{"role": "user", "content": "slow one"}]})
                result["status"] = r.status_code
                result["content"] = r.json()["choices"][0]["message"]["content"]

            t = threading.Thread(target=call)
            t.start()
            deadline = time.monotonic() + 5
            while not up.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            assert up.requests, "the request never reached the upstream"
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            t.join(20)
            assert result == {"status": 200, "content": "echo: slow one"}
            assert gw.proc.wait(20) == 0
            assert "gateway_stopped" in gw.logs()
        finally:
            gw.stop()
