"""The real CLI serving the app with hypercorn: health, metrics, auth, request ids, body
limits and error shapes, seen over HTTP as a client sees them."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway_process import GatewayProcess

BASE = """
[logging]
format = "json"
[llm.providers.local]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[llm.models.m1]
provider = "local"
[sandbox]
enabled = false
"""


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(BASE) as gw:
        yield gw


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[GatewayProcess]:
    text = BASE.replace("[logging]", '[server]\napi_keys = ["k-one", "k-two"]\n[logging]')
    with GatewayProcess(text) as gw:
        yield gw


def test_health_and_readiness(open_gateway: GatewayProcess) -> None:
    r = httpx.get(open_gateway.url + "/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["version"]
    r = httpx.get(open_gateway.url + "/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert "local" in body["llm"]["providers"]
    assert body["sandbox"]["available"] is False


def test_metrics_prometheus_format_with_route_templates(open_gateway: GatewayProcess) -> None:
    httpx.get(open_gateway.url + "/v1/models/m1")
    httpx.get(open_gateway.url + "/v1/models/does-not-exist")
    text = httpx.get(open_gateway.url + "/metrics").text
    assert "# TYPE gateway_http_requests_total counter" in text
    assert "# TYPE gateway_http_request_duration_seconds histogram" in text
    assert "process_resident_memory_bytes" in text
    # Labelled by the route template, never the raw path.
    assert re.search(r'gateway_http_requests_total\{method="GET",route="/v1/models/\{model:path\}",'
                     r'status="200"\} 1\.0', text)
    assert "does-not-exist" not in text


def test_models_list(open_gateway: GatewayProcess) -> None:
    r = httpx.get(open_gateway.url + "/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["m1"]
    assert body["data"][0]["owned_by"] == "local"


def test_request_id_echoed_or_generated(open_gateway: GatewayProcess) -> None:
    r = httpx.get(open_gateway.url + "/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.get(open_gateway.url + "/health")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # One JSON access line per request carries it.
    assert '"request_id":"abc-123"' in open_gateway.logs()


def test_malformed_json_gets_400_in_openai_shape(open_gateway: GatewayProcess) -> None:
    r = httpx.post(open_gateway.url + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "not valid JSON" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", 400),
        ({"model": "m1"}, "messages", 400),
        ({"model": "m1", "messages": "hi"}, "messages", 400),
        ({"model": "m1", "messages": [{"role": "wizard", "content": "x"}]},
         "messages[0].role", 400),
        ({"model": "m1", "messages": []}, "messages", 400),
        ({"model": "m1", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
         "temperature", 400),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, "model", 404),
    ],
)
def test_bad_input_names_the_field(open_gateway: GatewayProcess, body: object, param: str,
                                   status: int) -> None:
    r = httpx.post(open_gateway.url + "/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_body_over_limit_gets_413(open_gateway: GatewayProcess) -> None:
    big = b'{"model": "m1", "messages": [], "pad": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    r = httpx.post(open_gateway.url + "/v1/chat/completions", content=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_unknown_path_and_method(open_gateway: GatewayProcess) -> None:
    r = httpx.get(open_gateway.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    # (GET /v1/chat/completions lists stored completions: a pass-through route.)
    r = httpx.get(open_gateway.url + "/v1/embeddings")
    assert r.status_code == 405 and "error" in r.json()


def test_api_keys_required_on_v1(keyed_gateway: GatewayProcess) -> None:
    url = keyed_gateway.url
    r = httpx.get(url + "/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.get(url + "/v1/models", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert "wrong" not in r.text
    for key in ("k-one", "k-two"):
        r = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
    # Health and metrics stay open for probes and scrapers.
    assert httpx.get(url + "/health").status_code == 200
    logs = keyed_gateway.logs()
    assert "k-one" not in logs and "k-two" not in logs


def test_sigterm_shuts_down_cleanly() -> None:
    gw = GatewayProcess(BASE).start()
    assert httpx.get(gw.url + "/health").status_code == 200
    code = gw.stop()
    assert code == 0, gw.logs()
    assert "gateway_stopped" in gw.logs()


def test_two_workers_metrics_are_summed() -> None:
    with GatewayProcess(BASE, workers=2) as gw:
        with httpx.Client() as client:
            for _ in range(30):
                # A new connection each time so both workers get requests.
                client.get(gw.url + "/health", headers={"connection": "close"})
            for _ in range(3):
                text = client.get(gw.url + "/metrics", headers={"connection": "close"}).text
                m = re.search(r'gateway_http_requests_total\{method="GET",route="/health",'
                              r'status="200"\} (\d+)', text)
                assert m is not None, text[:2000]
                assert float(m.group(1)) == 30.0
    assert "[sandbox] enabled" not in gw.logs()


def test_two_workers_with_sandboxes_say_where_sandboxes_live(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Sandboxes live in the worker that made them; with several workers the CLI says so."""
    state = tmp_path_factory.mktemp("sandboxes")
    text = BASE.replace("[sandbox]\nenabled = false",
                        f'[sandbox]\nbackend = "process"\nstate_dir = "{state}"')
    with GatewayProcess(text, workers=2) as gw:
        assert httpx.get(gw.url + "/health").status_code == 200
        logs = gw.logs()
    assert "warning: 2 workers with [sandbox] enabled" in logs, logs
    assert "--workers 1" in logs
