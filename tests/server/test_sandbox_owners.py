"""Sandboxes belong to the key that created them, over /v1/sandboxes and E2B's API: another
key gets 404 for them (their files, commands and execute too) and does not see them listed;
a team's keys see the sandboxes of a key that shares with its team; admin keys see all. The
caller's max_sandboxes and max_sandbox_seconds apply to create."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from tests.server.test_sandboxes_api import serve_app, state_dir  # noqa: F401 - a fixture

ADMIN = "adm-sandboxes"


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    db = Path(tempfile.mkdtemp(prefix="agw-owners-")) / "gw.db"
    config = parse_config({
        "server": {"admin_keys": [ADMIN], "e2b": {"enabled": True}},
        "storage": {"url": f"sqlite:///{db}"},
        "llm": {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m1": {"provider": "local"}}},
        "sandbox": {"backend": "process", "state_dir": str(state_dir),
                    "pool": {"min_ready": 1, "max_total": 4}},
    })
    async for url in serve_app(config):
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     headers={"authorization": f"Bearer {ADMIN}"}) as client:
            ready = (await client.get("/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            yield client


async def _key(admin: httpx.AsyncClient, **spec: object) -> dict[str, str]:
    r = await admin.post("/admin/keys", json={"name": "k", **spec})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['key']}"}


async def test_other_keys_get_404_and_do_not_see_it(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.post("/admin/teams", json={"name": "t", "id": "t"})).status_code \
        == 201
    alice = await _key(gateway, team="t")
    bob = await _key(gateway)
    carol = await _key(gateway, team="t")
    sharer = await _key(gateway, team="t", share_sandboxes_with_team=True)

    r = await gateway.post("/v1/sandboxes", json={"runtime": "python"}, headers=alice)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    path = f"/v1/sandboxes/{sid}"
    assert (await gateway.post(path + "/execute", json={"code": "print(6 * 7)"},
                               headers=alice)).json()["stdout"] == "42\n"
    for who in (bob, carol):
        for r in (await gateway.get(path, headers=who),
                  await gateway.post(path + "/execute", json={"code": "1"}, headers=who),
                  await gateway.get(path + "/files", params={"path": "/tmp"}, headers=who),
                  await gateway.post(path + "/commands", json={"cmd": "true"}, headers=who),
                  await gateway.delete(path, headers=who)):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["param"] == "id"
        listed = (await gateway.get("/v1/sandboxes", headers=who)).json()["data"]
        assert sid not in [s["id"] for s in listed]
        # E2B's view of the same sandbox (its SDK sends X-API-Key).
        e2b = {"x-api-key": who["authorization"].removeprefix("Bearer ")}
        async with httpx.AsyncClient(base_url=gateway.base_url, headers=e2b) as client:
            assert (await client.get(f"/e2b/sandboxes/{sid}")).status_code == 404
            assert sid not in [s["sandboxID"] for s in
                               (await client.get("/e2b/v2/sandboxes")).json()]
    assert [s["id"] for s in (await gateway.get("/v1/sandboxes", headers=alice)
                              ).json()["data"]] == [sid]
    # Admin keys see and use every sandbox.
    assert (await gateway.get(path)).status_code == 200

    # A key that shares with its team: its team's keys may use the sandbox, others not.
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python"}, headers=sharer)
    shared = r.json()["id"]
    assert (await gateway.get(f"/v1/sandboxes/{shared}", headers=carol)).status_code == 200
    assert (await gateway.get(f"/v1/sandboxes/{shared}", headers=bob)).status_code == 404

    assert (await gateway.delete(path, headers=alice)).status_code == 204
    assert (await gateway.delete(f"/v1/sandboxes/{shared}", headers=carol)).status_code == 204


async def test_sandbox_quotas_apply_to_create(gateway: httpx.AsyncClient) -> None:
    one = await _key(gateway, max_sandboxes=1)
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python"}, headers=one)
    assert r.status_code == 201
    first = r.json()["id"]
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python"}, headers=one)
    assert r.status_code == 429 and r.json()["error"]["code"] == "sandbox_quota_exceeded"
    assert (await gateway.delete(f"/v1/sandboxes/{first}", headers=one)).status_code == 204
    assert (await gateway.post("/v1/sandboxes", json={"runtime": "python"},
                               headers=one)).status_code == 201

    # 100 s of sandbox lifetime per day: a 60 s sandbox fits, a second one does not.
    timed = await _key(gateway, max_sandbox_seconds=100, period="day")
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "timeout_s": 60},
                           headers=timed)
    assert r.status_code == 201, r.text
    sixty = r.json()["id"]
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "timeout_s": 60},
                           headers=timed)
    assert r.status_code == 429 and "max_sandbox_seconds" in r.json()["error"]["message"]
    # Deleting gives the unused seconds back.
    assert (await gateway.delete(f"/v1/sandboxes/{sixty}", headers=timed)).status_code == 204
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "timeout_s": 60},
                           headers=timed)
    assert r.status_code == 201, r.text
