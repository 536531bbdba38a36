"""What each request's access line, headers and metrics say of it (tracing off): the
gateway's own overhead (x-gateway-overhead-ms, gateway_llm_overhead_seconds), the key's
name, alias, provider, tokens; and a client that goes away before the response starts is not
a server error: it is recorded as 499 (nginx's "client closed request") in the access log and
the metrics, with the upstream attempt's own outcome (cancelled) beside it."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Stall
from tests.gateway_process import GatewayProcess

CONFIG = """
[server]
api_keys = ["first-key", "gw-key"]
[logging]
format = "json"
[sandbox]
enabled = false
[llm.providers.p]
kind = "openai"
base_url = "{base}"
api_key = "{key}"
first_byte_timeout_s = 20
[llm.models.m]
provider = "p"
"""


def _access_lines(logs: str) -> list[dict[str, object]]:
    out = []
    for line in logs.splitlines():
        if line.startswith("{") and '"event":"request"' in line:
            out.append(json.loads(line))
    return out


def test_disconnect_before_response_is_499_not_500() -> None:
    with FakeUpstream() as up, GatewayProcess(
            CONFIG.format(base=up.openai_base_url, key=OPENAI_KEY)) as gw:
        up.script(Stall(10.0))
        body = json.dumps({"model": "m", "messages": [
            {"role": "user", "content": "slow"}]}).encode()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                      b"authorization: Bearer gw-key\r\ncontent-type: application/json\r\n"
                      b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            up.wait_for_requests(1)
        # The gateway notices the close, cancels the upstream call and answers nobody.
        deadline = time.monotonic() + 10
        lines: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            lines = [x for x in _access_lines(gw.logs()) if x.get("path") ==
                     "/v1/chat/completions"]
            if lines and up.disconnects:
                break
            time.sleep(0.05)
        assert len(lines) == 1, gw.logs()
        line = lines[0]
        assert line["status"] == 499
        assert line["upstream_outcome"] == "cancelled"
        assert line["provider"] == "p" and line["alias"] == "m"
        assert up.disconnects == 1  # the upstream request was cut, not left running
        metrics = httpx.get(gw.url + "/metrics").text
        assert ('gateway_http_requests_total{method="POST",route="/v1/chat/completions",'
                'status="499"} 1.0') in metrics
        assert 'status="500"' not in metrics
        cancelled = [m for m in metrics.splitlines()
                     if m.startswith("gateway_llm_requests_total{") and 'provider="p"' in m]
        assert len(cancelled) == 1 and 'outcome="cancelled"' in cancelled[0] \
            and cancelled[0].endswith(" 1.0"), cancelled


def test_overhead_header_histogram_and_access_line() -> None:
    with FakeUpstream() as up, GatewayProcess(
            CONFIG.format(base=up.openai_base_url, key=OPENAI_KEY)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="gw-key", max_retries=0)
        for stream in (False, True, False):
            t0 = time.perf_counter()
            if stream:
                with client.chat.completions.with_streaming_response.create(
                        model="m", stream=True,
                        messages=[{"role": "user", "content": "hello there"}]) as r:
                    overhead = float(r.headers["x-gateway-overhead-ms"])
                    list(r.iter_lines())
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model="m", messages=[{"role": "user", "content": "hello there"}])
                overhead = float(raw.headers["x-gateway-overhead-ms"])
            total_ms = (time.perf_counter() - t0) * 1000
            assert 0 <= overhead <= total_ms
        # Not an LLM response: no overhead figure.
        assert "x-gateway-overhead-ms" not in httpx.get(gw.url + "/v1/models", headers={
            "authorization": "Bearer gw-key"}).headers
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'gateway_llm_overhead_seconds_count{api="chat",provider="p"} 3.0' in metrics
        lines = [x for x in _access_lines(gw.logs()) if x.get("path") == "/v1/chat/completions"]
        assert len(lines) == 3
        first = lines[0]
        assert first["status"] == 200 and first["key"] == "key-1"
        assert "gw-key" not in gw.logs()
        assert first["alias"] == "m" and first["provider"] == "p" and first["api"] == "chat"
        assert first["model"] == "m" and first["attempts"] == 1
        assert first["upstream_outcome"] == "ok"
        assert first["input_tokens"] > 0 and first["output_tokens"] > 0
        assert 0 <= first["overhead_ms"] <= first["ms"]
        assert "trace_id" not in first  # tracing is off
