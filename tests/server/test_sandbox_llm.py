"""A child key at work inside a sandbox: code in a real jail calls the gateway's chat API at
OPENAI_BASE_URL with its OPENAI_API_KEY — through the egress proxy, which routes the
gateway's own name to it — is bounded by the child's budget, and stops with the sandbox."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Reply
from tests.gateway_process import free_port
from tests.server.test_sandboxes_api import serve_as_admin

pytestmark = pytest.mark.timeout(180)
ADMIN = "adm-sandbox-llm"

# Run inside the sandbox: one chat completion with the child key, through HTTP_PROXY.
CALL = """
import json, os, urllib.error, urllib.request
req = urllib.request.Request(
    os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "m1", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
             "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.status, json.load(r)["choices"][0]["message"]["content"])
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"]["code"])
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="agw-sandbox-llm-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def gateway(state_dir: Path, upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    db = state_dir.parent / "gw.db"
    config = parse_config({
        "server": {"admin_keys": [ADMIN], "port": free_port()},
        "storage": {"url": f"sqlite:///{db}", "flush_interval_s": 0.1},
        "llm": {"providers": {"up": {"kind": "openai", "base_url": upstream.openai_base_url,
                                     "api_key": OPENAI_KEY}},
                "models": {"m1": {"provider": "up"}}},
        "sandbox": {"backend": "process", "state_dir": str(state_dir), "reap_interval_s": 0.2,
                    "pool": {"min_ready": 0, "max_total": 2}},
    })
    # On the configured port: the egress proxy routes the sandbox's gateway name there.
    async for client in serve_as_admin(config, ADMIN, config.server.port):
        yield client


async def test_code_inside_calls_the_gateway_with_its_child_key(
        gateway: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    parent = (await gateway.post("/admin/keys", json={"name": "agent"})).json()
    auth = {"authorization": f"Bearer {parent['key']}"}
    r = await gateway.post("/v1/sandboxes", headers=auth, json={
        "runtime": "python", "llm": {"models": ["m1"], "max_tokens": 40}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    env = (await gateway.post(f"/v1/sandboxes/{sid}/execute", headers=auth, json={
        "code": "import os; print(os.environ['OPENAI_BASE_URL'])"})).json()["stdout"]
    assert env.strip() == "http://gateway.sandbox.internal/v1"

    # "hi" with max_tokens 10 reserves (and uses) 17 tokens: two fit in 40, a third not.
    upstream.reset()
    upstream.script(*[Reply(text="from inside", prompt_tokens=7, completion_tokens=10)] * 3)
    outputs = []
    for _ in range(3):
        r = await gateway.post(f"/v1/sandboxes/{sid}/execute", headers=auth,
                               json={"code": CALL, "timeout_s": 60})
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
        outputs.append(r.json()["stdout"].strip())
    assert outputs == ["200 from inside", "200 from inside", "429 budget_exceeded"]
    # The upstream got the gateway's provider key, never the child's.
    assert [q.headers.get("authorization") for q in upstream.requests] == \
        [f"Bearer {OPENAI_KEY}"] * 2
    llm = (await gateway.get(f"/v1/sandboxes/{sid}", headers=auth)).json()["llm"]
    assert (llm["requests"], llm["input_tokens"], llm["output_tokens"]) == (3, 14, 20)
    # Other hosts stay closed: the sandbox asked for no network.
    denied = (await gateway.post(f"/v1/sandboxes/{sid}/execute", headers=auth, json={
        "code": "import urllib.request\ntry:\n    urllib.request.urlopen("
                "'http://example.com/', timeout=10)\nexcept Exception as e:\n    print(e)"})
              ).json()["stdout"]
    assert "403" in denied

    child = llm["key_id"]
    assert (await gateway.delete(f"/v1/sandboxes/{sid}", headers=auth)).status_code == 204
    assert (await gateway.get(f"/admin/keys/{child}")).json()["revoked_at"] is not None


async def test_a_child_key_dies_with_a_sandbox_that_expires(
        gateway: httpx.AsyncClient) -> None:
    """Not only on DELETE: the reaper ending a sandbox at its timeout revokes its key."""
    parent = (await gateway.post("/admin/keys", json={"name": "short"})).json()
    auth = {"authorization": f"Bearer {parent['key']}"}
    r = await gateway.post("/v1/sandboxes", headers=auth, json={
        "runtime": "python", "timeout_s": 1, "llm": {"models": ["m1"], "max_tokens": 40}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    child = (await gateway.get(f"/v1/sandboxes/{sid}", headers=auth)).json()["llm"]["key_id"]
    assert (await gateway.get(f"/admin/keys/{child}")).json()["revoked_at"] is None
    revoked = None
    for _ in range(100):  # the sandbox lives 1 s; the reaper looks every 0.2 s
        await asyncio.sleep(0.1)
        revoked = (await gateway.get(f"/admin/keys/{child}")).json()["revoked_at"]
        if revoked is not None:
            break
    assert revoked is not None
    assert (await gateway.get(f"/v1/sandboxes/{sid}", headers=auth)).status_code == 404


async def test_sandboxes_without_a_key_do_not_reach_the_gateway(
        gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python",
                                                  "network": {"allow": ["pypi.org"]}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    out = (await gateway.post(f"/v1/sandboxes/{sid}/execute", json={
        "code": "import urllib.request\ntry:\n    urllib.request.urlopen("
                "'http://gateway.sandbox.internal/health', timeout=10)\n"
                "except Exception as e:\n    print(e)"})).json()["stdout"]
    assert "403" in out
    assert (await gateway.delete(f"/v1/sandboxes/{sid}")).status_code == 204
