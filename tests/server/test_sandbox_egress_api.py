"""Egress over the HTTP API: the served gateway (hypercorn, real jails) with its egress
proxy in the lifespan; bad allow-lists are 400/403 naming the entry; a sandbox reaches the
allowed host, is refused the denied one, and /metrics counts both."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import structlog.testing

from tests.fakes.egress_upstreams import ALLOWED, DENIED, Upstreams, upstreams
from tests.server.test_sandboxes_api import error_of, gateway_config, serve_app

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def servers() -> Iterator[Upstreams]:
    with tempfile.TemporaryDirectory() as d, upstreams(Path(d)) as ups:
        yield ups


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="agw-egress-api-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = gateway_config(state_dir, egress={
        "allow_cap": ["*.test", "pypi.org"], "allow_private_for_tests": True,
        "resolve": {ALLOWED: "127.0.0.1", DENIED: "127.0.0.1"}})
    async for url in serve_app(config):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            ready = (await client.get("/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            assert ready["sandbox"]["egress"]["enabled"] is True
            yield client


def counter(text: str, decision: str) -> float:
    pattern = r'^gateway_sandbox_egress_total\{decision="' + decision + r'"\} (\S+)$'
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_bad_allow_lists_name_the_entry(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/v1/sandboxes", json={
        "runtime": "python", "network": {"allow": [ALLOWED, "not a host"]}})
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == "network.allow[1]"
    assert "not a host name" in str(err["message"])
    r = await gateway.post("/v1/sandboxes", json={
        "runtime": "python", "network": {"allow": ["github.com"]}})
    assert r.status_code == 403
    err = error_of(r)
    assert err["param"] == "network.allow[0]" and err["code"] == "egress_not_permitted"
    r = await gateway.post("/v1/sandboxes", json={
        "runtime": "python", "network": {"allow": [ALLOWED], "deny": []}})
    assert r.status_code == 400 and "deny" in str(error_of(r)["param"])
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "network": {
        "allow": [7]}})
    assert r.status_code == 400 and error_of(r)["param"] == "network.allow[0]"


async def test_allowed_and_denied_in_logs_and_metrics(gateway: httpx.AsyncClient,
                                                      servers: Upstreams) -> None:
    before = (await gateway.get("/metrics")).text
    r = await gateway.post("/v1/sandboxes", json={
        "runtime": "python", "network": {"allow": [ALLOWED]}})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["network"] == {"allow": [ALLOWED]}
    code = f"""
import urllib.request, urllib.error
print(urllib.request.urlopen("http://{ALLOWED}:{servers.http_allowed}/").read().decode())
try:
    urllib.request.urlopen("http://{DENIED}:{servers.http_denied}/")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""
    with structlog.testing.capture_logs() as logs:
        r = await gateway.post(f"/v1/sandboxes/{info['id']}/execute",
                               json={"code": code, "runtime": "python"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["exit_code"] == 0, out["stderr"]
    lines = out["stdout"].splitlines()
    assert lines[0].startswith("hello from allowed")
    assert lines[1].startswith("403 egress denied: host denied.test is not allowed")
    decided = {(e["host"], e["decision"]) for e in logs if e["event"] == "sandbox_egress"
               and e["sandbox"] == info["id"]}
    assert decided == {(ALLOWED, "allowed"), (DENIED, "denied")}
    after = (await gateway.get("/metrics")).text
    assert counter(after, "allowed") == counter(before, "allowed") + 1
    assert counter(after, "denied") == counter(before, "denied") + 1
    assert re.search(r'^gateway_sandbox_egress_bytes_total\{direction="received"\} [1-9]',
                     after, re.M)
    assert (await gateway.delete(f"/v1/sandboxes/{info['id']}")).status_code in (200, 204)
