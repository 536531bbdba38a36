"""Traces end to end: the served gateway with [telemetry] on exports over OTLP/HTTP to an
in-test collector that decodes the official protobuf types. One client trace (its
traceparent) holds the gateway's server spans, the upstream attempt spans with the GenAI
attributes (retried once, then failed over), a stream's time to first chunk, and the sandbox
spans; no message text is exported unless capture_content is on."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.otlp import FakeCollector, FakeGRPCCollector, ReceivedSpan
from tests.fakes.upstream import OPENAI_KEY, Fail, FakeUpstream, Stall
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-trace-key"
SECRET_WORDS = "zebra-quartz-7781"  # in the user message; never in an export by default
SANDBOX_WORDS = "okapi-3141"  # in the executed code and its output
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
# Short batches for the test (the SDK reads OTEL_BSP_* when the config leaves them out).
ENV = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


def config(up: FakeUpstream, backup: FakeUpstream, endpoint: str, state_dir: Path | None,
           *, capture: bool = False) -> str:
    sandbox = (f'[sandbox]\nbackend = "process"\nstate_dir = "{state_dir}"\n'
               "[sandbox.pool]\nmin_ready = 0\nmax_total = 2\n") if state_dir else \
        "[sandbox]\nenabled = false\n"
    return f"""
[server]
api_keys = ["other-key", "{GATEWAY_KEY}"]
[logging]
format = "json"
[telemetry]
enabled = true
endpoint = "{endpoint}"
headers = {{ x-collector-token = "tok-123" }}
service_name = "gw-under-test"
capture_content = {"true" if capture else "false"}
capture_max_chars = 200
export_timeout_s = 2
{sandbox}
[rate_limit]
enabled = true
[llm]
max_retries = 1
backoff_base_s = 0.01
backoff_max_s = 0.02
[llm.cooldown]
failures = 1000
[llm.providers.oai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
rpm = 100000
[llm.providers.backup]
kind = "openai"
base_url = "{backup.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.providers.tiny]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
rpm = 1
[llm.models.tiny]
provider = "tiny"
model = "gpt-4o"
[llm.models.gpt-4o]
provider = "oai"
[llm.models.safe]
provider = "oai"
model = "gpt-4o"
fallbacks = ["backup/gpt-4o-mini"]
"""


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def headers(tp: str) -> dict[str, str]:
    return {"authorization": f"Bearer {GATEWAY_KEY}", "traceparent": tp}


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream() as backup:
        yield up, backup


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream],
            collector: FakeCollector) -> Iterator[GatewayProcess]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    state = Path(tempfile.mkdtemp(prefix="gw-trace-"))
    state.chmod(0o711)  # the jails' unprivileged uids pass through it
    up, backup = upstreams
    with GatewayProcess(config(up, backup, collector.endpoint, state), env=ENV) as gw:
        yield gw
    shutil.rmtree(state, ignore_errors=True)


def test_retry_then_failover_is_one_trace_under_the_clients_traceparent(
        gateway: GatewayProcess, upstreams: tuple[FakeUpstream, FakeUpstream],
        collector: FakeCollector) -> None:
    up, backup = upstreams
    up.reset()
    backup.reset()
    up.script(Fail(500), Fail(500))
    tp, trace_id, client_span = traceparent()
    t0 = time.perf_counter()
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=headers(tp), timeout=20, json={
        "model": "safe", "messages": [{"role": "user", "content": f"say {SECRET_WORDS}"}]})
    total_ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-attempts"] == "3"
    assert 0 <= float(r.headers["x-gateway-overhead-ms"]) <= total_ms

    spans = in_trace(collector.wait_for(
        lambda ss: any(s.kind == SERVER and s.trace_id == trace_id for s in ss)), trace_id)
    server = [s for s in spans if s.kind == SERVER]
    assert len(server) == 1
    root = server[0]
    assert root.parent_span_id == client_span  # continues the client's trace
    assert root.name == "POST /v1/chat/completions"
    assert root.service == "gw-under-test"
    a = root.attributes
    assert a["http.route"] == "/v1/chat/completions"
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.request.model"] == "safe"
    assert a["gateway.key"] == "key-1"  # its index in server.api_keys, never the key
    assert a["gateway.attempts"] == 3
    # Each admission to oai (its rpm) is an event, then the failover.
    admitted = {"provider": "oai", "limit": "requests", "decision": "admitted"}
    assert [(n, {k: v for k, v in e.items() if k != "remaining"}) for n, e in root.events] == [
        ("gateway.rate_limit", admitted), ("gateway.rate_limit", admitted),
        ("gateway.failover", {"from": "oai/gpt-4o", "to": "backup/gpt-4o-mini",
                              "reason": "status_500"})]

    attempts = sorted((s for s in spans if s.kind == CLIENT),
                      key=lambda s: s.attributes["gateway.attempt"])
    assert [s.parent_span_id for s in attempts] == [root.span_id] * 3
    assert [s.attributes["gateway.deployment"] for s in attempts] == [
        "oai/gpt-4o", "oai/gpt-4o", "backup/gpt-4o-mini"]
    assert [s.attributes["gateway.outcome"] for s in attempts] == [
        "status_500", "status_500", "ok"]
    assert [s.status_code for s in attempts] == [2, 2, 0]
    assert "gateway.retry_reason" not in attempts[0].attributes
    assert attempts[1].attributes["gateway.retry_reason"] == "status_500"
    assert attempts[2].attributes["gateway.failover_reason"] == "status_500"
    ok = attempts[2].attributes
    assert attempts[2].name == "chat gpt-4o-mini"
    assert ok["gen_ai.operation.name"] == "chat"
    assert ok["gen_ai.provider.name"] == "openai"
    assert ok["gateway.provider"] == "backup"
    assert ok["gen_ai.request.model"] == "gpt-4o-mini"
    body = r.json()
    assert ok["gen_ai.response.model"] == body["model"]
    assert ok["gen_ai.response.finish_reasons"] == ["stop"]
    assert ok["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert ok["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert ok["server.address"] == "127.0.0.1"
    for s in attempts:
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns

    # Each upstream request carried its own attempt span's context.
    sent = [q.headers["traceparent"] for q in up.requests + backup.requests]
    assert sent == [f"00-{trace_id}-{s.span_id}-01" for s in attempts]

    # The access line names the same trace.
    line = next(json.loads(x) for x in gateway.logs().splitlines()
                if x.startswith("{") and trace_id in x and '"event":"request"' in x)
    assert line["trace_id"] == trace_id and line["key"] == "key-1"
    assert line["alias"] == "safe" and line["provider"] == "backup" and line["attempts"] == 3
    assert line["model"] == "gpt-4o-mini" and line["overhead_ms"] >= 0
    assert collector.headers[-1]["x-collector-token"] == "tok-123"


def test_a_stream_span_has_its_time_to_first_chunk(
        gateway: GatewayProcess, collector: FakeCollector) -> None:
    tp, trace_id, _ = traceparent()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=headers(tp),
                      timeout=20, json={"model": "gpt-4o", "stream": True, "messages": [
                          {"role": "user", "content": f"stream {SECRET_WORDS}"}]}) as r:
        assert r.status_code == 200
        assert float(r.headers["x-gateway-overhead-ms"]) >= 0
        text = "".join(r.iter_text())
    assert "[DONE]" in text
    spans = in_trace(collector.wait_for(
        lambda ss: any(s.kind == SERVER and s.trace_id == trace_id for s in ss)), trace_id)
    (attempt,) = [s for s in spans if s.kind == CLIENT]
    (root,) = [s for s in spans if s.kind == SERVER]
    assert attempt.parent_span_id == root.span_id
    ttft = attempt.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < ttft <= (attempt.end_ns - attempt.start_ns) / 1e9
    assert root.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gateway.outcome"] == "ok"


def test_model_call_and_sandbox_run_in_one_trace(
        gateway: GatewayProcess, collector: FakeCollector) -> None:
    """An agent's step: the model call, then the sandbox that runs its tool call, all under
    the agent's one traceparent."""
    tp, trace_id, _ = traceparent()
    h = headers(tp)
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=h, timeout=20, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "write code"}]})
    assert r.status_code == 200
    r = httpx.post(gateway.url + "/v1/sandboxes", headers=h, json={"runtime": "python"},
                   timeout=60)
    assert r.status_code in (200, 201), r.text
    sid = r.json()["id"]
    try:
        r = httpx.post(f"{gateway.url}/v1/sandboxes/{sid}/execute", headers=h, timeout=60,
                       json={"code": f"print('{SANDBOX_WORDS}')"})
        assert r.status_code == 200 and r.json()["stdout"] == f"{SANDBOX_WORDS}\n"
    finally:
        httpx.delete(f"{gateway.url}/v1/sandboxes/{sid}", headers=h, timeout=30)
    spans = in_trace(collector.wait_for(lambda ss: len(
        [s for s in ss if s.trace_id == trace_id and s.kind == SERVER]) >= 4), trace_id)
    by_name = {s.name: s for s in spans}
    assert by_name["chat gpt-4o"].kind == CLIENT  # the model call's upstream attempt
    create, execute = by_name["sandbox.create"], by_name["sandbox.execute"]
    servers = {s.span_id: s for s in spans if s.kind == SERVER}
    assert servers[create.parent_span_id].name == "POST /v1/sandboxes"
    assert servers[execute.parent_span_id].name == "POST /v1/sandboxes/{id}/execute"
    assert create.attributes["gateway.sandbox.id"] == sid
    assert create.attributes["gateway.sandbox.start"] == "cold"  # min_ready = 0
    assert create.attributes["gateway.sandbox.backend"] == "process"
    assert execute.attributes["gateway.sandbox.id"] == sid
    assert execute.attributes["gateway.sandbox.runtime"] == "python"
    assert execute.attributes["process.exit.code"] == 0
    assert execute.attributes["gateway.sandbox.timed_out"] is False
    assert execute.attributes["gateway.sandbox.outcome"] == "ok"
    assert execute.attributes["gateway.sandbox.duration_s"] > 0
    line = next(json.loads(x) for x in gateway.logs().splitlines()
                if x.startswith("{") and trace_id in x and "/execute" in x
                and '"event":"request"' in x)
    assert line["sandbox_id"] == sid and line["runtime"] == "python"
    assert line["backend"] == "process" and line["outcome"] == "ok"


def test_no_content_in_the_export_and_readiness_shows_the_exporter(
        gateway: GatewayProcess, collector: FakeCollector) -> None:
    # After the tests above: their messages, answers and sandbox code were all exported.
    collector.wait_for(lambda ss: len(ss) >= 8)
    everything = b"".join(collector.bodies)
    assert SECRET_WORDS.encode() not in everything
    assert SANDBOX_WORDS.encode() not in everything
    assert OPENAI_KEY.encode() not in everything and GATEWAY_KEY.encode() not in everything
    ready = httpx.get(gateway.url + "/health/ready").json()["telemetry"]
    assert ready["enabled"] is True and ready["protocol"] == "http/protobuf"
    assert ready["endpoint"] == collector.endpoint
    assert ready["exported_spans"] >= 8 and ready["failed_exports"] == 0
    assert ready["capture_content"] is False
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'gateway_trace_exports_total{result="ok"}' in metrics
    count = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(
        'gateway_llm_overhead_seconds_count{api="chat",provider="backup"}'))
    assert count >= 1


def test_captured_content_is_cut_and_redacted(upstreams: tuple[FakeUpstream, FakeUpstream],
                                              ) -> None:
    up, backup = upstreams
    up.reset()
    key_shaped = "sk-live-" + "a1B2c3D4e5F6g7H8"
    with FakeCollector() as c, GatewayProcess(
            config(up, backup, c.endpoint, None, capture=True), env=ENV) as gw:
        tp, trace_id, _ = traceparent()
        long_tail = "x" * 1000
        r = httpx.post(gw.url + "/v1/chat/completions", headers=headers(tp), timeout=20,
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content":
                             f"{SECRET_WORDS} {key_shaped} {GATEWAY_KEY} {long_tail}"}]})
        assert r.status_code == 200
        spans = in_trace(c.wait_for(lambda ss: any(s.kind == SERVER for s in ss)), trace_id)
        (root,) = [s for s in spans if s.kind == SERVER]
        captured = root.attributes["gen_ai.input.messages"]
        assert SECRET_WORDS in captured
        assert key_shaped not in captured and GATEWAY_KEY not in captured
        assert captured.count("[REDACTED]") == 2
        assert captured.endswith("...[truncated]") and len(captured) <= 200 + 20
        assert SECRET_WORDS in root.attributes["gen_ai.output.messages"]
        everything = b"".join(c.bodies)
        assert key_shaped.encode() not in everything


def test_a_collector_that_is_down_costs_a_counter(
        upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    with FakeCollector() as c:
        dead = c.endpoint  # closed when the block ends
    env: dict[str, Any] = dict(ENV)
    # A small queue that fills while the exporter retries: spans are dropped, silently.
    cfg = config(up, backup, dead, None).replace("export_timeout_s = 2",
                                                 "export_timeout_s = 2\nmax_queue_size = 64")
    with GatewayProcess(cfg, env=env) as gw:
        with httpx.Client(base_url=gw.url, timeout=20) as client:
            for _ in range(300):
                r = client.post("/v1/chat/completions", headers=headers(traceparent()[0]),
                                json={"model": "gpt-4o", "messages": [
                                    {"role": "user", "content": "hi"}]})
                assert r.status_code == 200
        deadline = time.monotonic() + 15
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            ready = httpx.get(gw.url + "/health/ready").json()
            if ready["telemetry"]["failed_exports"]:
                break
            time.sleep(0.1)
        assert ready["status"] == "ready"  # a collector is not a dependency of serving
        assert ready["telemetry"]["failed_exports"] >= 1
        assert ready["telemetry"]["last_export_ok"] is False
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'gateway_trace_exports_total{result="failed"}' in metrics
        # Not one log line per failed batch or dropped span.
        logs = gw.logs()
        assert "Failed to export" not in logs and "Traceback" not in logs
        assert "Queue full" not in logs and "opentelemetry" not in logs


def test_tracing_off_sends_no_trace_context_upstream(
        upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    cfg = config(up, backup, "http://127.0.0.1:9/v1/traces", None).replace(
        "[telemetry]\nenabled = true", "[telemetry]\nenabled = false")
    with GatewayProcess(cfg, env={k: v for k, v in os.environ.items()
                                  if not k.startswith("OTEL_")}) as gw:
        tp, _, _ = traceparent()
        r = httpx.post(gw.url + "/v1/chat/completions", headers=headers(tp), timeout=20,
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200 and float(r.headers["x-gateway-overhead-ms"]) >= 0
        assert "traceparent" not in up.requests[-1].headers
        assert httpx.get(gw.url + "/health/ready").json()["telemetry"] == {"enabled": False}


def test_a_client_that_goes_away_is_499_with_the_attempt_cancelled(
        gateway: GatewayProcess, upstreams: tuple[FakeUpstream, FakeUpstream],
        collector: FakeCollector) -> None:
    up, _ = upstreams
    up.reset()
    up.script(Stall(10.0))
    tp, trace_id, _ = traceparent()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                   f"authorization: Bearer {GATEWAY_KEY}\r\ntraceparent: {tp}\r\n"
                   f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                   f"\r\n{body}").encode())
        up.wait_for_requests(1)
    spans = in_trace(collector.wait_for(
        lambda ss: any(s.kind == SERVER and s.trace_id == trace_id for s in ss)), trace_id)
    (root,) = [s for s in spans if s.kind == SERVER]
    (attempt,) = [s for s in spans if s.kind == CLIENT]
    assert root.attributes["http.response.status_code"] == 499
    assert root.attributes["gateway.upstream_outcome"] == "cancelled"
    assert root.status_code == 0  # not a server error
    assert attempt.attributes["gateway.outcome"] == "cancelled"
    assert attempt.attributes["error.type"] == "cancelled"


def test_grpc_export(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    up, backup = upstreams
    up.reset()
    with FakeGRPCCollector() as c:
        cfg = config(up, backup, c.endpoint, None).replace(
            "[telemetry]\nenabled = true", '[telemetry]\nenabled = true\nprotocol = "grpc"')
        with GatewayProcess(cfg, env=ENV) as gw:
            tp, trace_id, _ = traceparent()
            r = httpx.post(gw.url + "/v1/chat/completions", headers=headers(tp), timeout=20,
                           json={"model": "gpt-4o", "messages": [
                               {"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            spans = in_trace(c.wait_for(lambda ss: len(ss) >= 2), trace_id)
            assert sorted(s.kind for s in spans) == [SERVER, CLIENT]
            assert c.headers[-1]["x-collector-token"] == "tok-123"
            ready = httpx.get(gw.url + "/health/ready").json()["telemetry"]
            assert ready["protocol"] == "grpc" and ready["exported_spans"] >= 2


def test_a_rate_limit_refusal_is_an_event_and_its_answer_has_an_overhead(
        gateway: GatewayProcess, collector: FakeCollector) -> None:
    statuses, trace_ids = [], []
    for _ in range(2):  # tiny allows one request a minute
        tp, trace_id, _ = traceparent()
        r = httpx.post(gateway.url + "/v1/chat/completions", headers=headers(tp), timeout=20,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        statuses.append(r.status_code)
        trace_ids.append(trace_id)
        assert float(r.headers["x-gateway-overhead-ms"]) >= 0
    assert statuses == [200, 429]
    spans = in_trace(collector.wait_for(
        lambda ss: any(s.kind == SERVER and s.trace_id == trace_ids[1] for s in ss)),
        trace_ids[1])
    (root,) = spans  # refused before any attempt
    assert root.attributes["http.response.status_code"] == 429
    assert root.events == [("gateway.rate_limit", {"provider": "tiny", "limit": "requests",
                                                   "decision": "denied"})]
