"""E2B's control plane on the served gateway ([server.e2b]): the official ``e2b`` SDK's
list/get_info/set_timeout/kill/pause against sandboxes created over E2B's REST API, real
bubblewrap jails behind it; E2B's error shape; the gateway's keys guarding the prefix."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from gateway_core.errors import ConfigError
from gateway_server.routes.e2b import ENVD_VERSION
from tests.server.test_sandboxes_api import serve_app

e2b = pytest.importorskip("e2b")

KEY = "sk-e2b-test"


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    d = Path(tempfile.mkdtemp(prefix="agw-e2b-test-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    config = parse_config({
        "server": {"api_keys": [KEY], "e2b": {"enabled": True, "prefix": "/e2b"}},
        "llm": {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m1": {"provider": "local"}}},
        "sandbox": {"backend": "process", "state_dir": str(d / "state"),
                    "pool": {"min_ready": 1, "max_total": 4}},
    })
    try:
        async for url in serve_app(config):
            async with httpx.AsyncClient(base_url=url + "/e2b", timeout=60,
                                         headers={"X-API-Key": KEY}) as client:
                ready = (await client.get(url + "/health/ready")).json()
                if not ready["sandbox"]["available"]:
                    pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
                yield client
    finally:
        shutil.rmtree(d, ignore_errors=True)


def opts(api: httpx.AsyncClient, key: str = KEY) -> dict[str, str]:
    return {"api_key": key, "api_url": str(api.base_url).rstrip("/")}


async def create(api: httpx.AsyncClient, **body: object) -> dict[str, object]:
    r = await api.post("/v2/sandboxes", json={"templateID": "base", **body})
    assert r.status_code == 201, r.text
    created: dict[str, object] = r.json()
    return created


async def test_create_answers_what_the_sdk_reads(api: httpx.AsyncClient) -> None:
    sb = await create(api, timeout=120, metadata={"user": "ann"}, envVars={"A": "1"})
    assert sb["templateID"] == "python"  # "base" maps to the python runtime
    assert sb["clientID"] == "gateway"
    assert isinstance(sb["sandboxID"], str) and sb["sandboxID"]
    assert isinstance(sb["envdAccessToken"], str) and len(sb["envdAccessToken"]) == 64
    assert sb["envdVersion"] == ENVD_VERSION
    # The SDK's own model parses it.
    from e2b.api.client.models import Sandbox as CreatedModel
    assert CreatedModel.from_dict(sb).sandbox_id == sb["sandboxID"]


async def test_sdk_list_get_info_timeout_kill(api: httpx.AsyncClient) -> None:
    from e2b import AsyncSandbox, SandboxQuery, SandboxState
    a = await create(api, metadata={"team": "red"}, timeout=100)
    b = await create(api, metadata={"team": "blue", "k y": "v&w"})

    pager = AsyncSandbox.list(query=SandboxQuery(metadata={"team": "red"}), **opts(api))
    found = await pager.next_items()
    assert [s.sandbox_id for s in found] == [a["sandboxID"]]
    assert found[0].metadata == {"team": "red"} and found[0].state == SandboxState.RUNNING
    assert found[0].cpu_count >= 1 and found[0].memory_mb > 0
    # Keys and values that need quoting survive the SDK's double quoting.
    pager = AsyncSandbox.list(query=SandboxQuery(metadata={"k y": "v&w"}), **opts(api))
    assert [s.sandbox_id for s in await pager.next_items()] == [b["sandboxID"]]

    info = await AsyncSandbox.get_info(str(a["sandboxID"]), **opts(api))
    assert info.template_id == "python" and info.metadata == {"team": "red"}
    now = datetime.datetime.now(datetime.UTC)
    assert info.started_at <= now + datetime.timedelta(seconds=2)
    assert info.end_at <= now + datetime.timedelta(seconds=101)

    await AsyncSandbox.set_timeout(str(a["sandboxID"]), 30, **opts(api))
    info = await AsyncSandbox.get_info(str(a["sandboxID"]), **opts(api))
    assert info.end_at <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=31)

    assert await AsyncSandbox.kill(str(a["sandboxID"]), **opts(api)) is True
    assert await AsyncSandbox.kill(str(a["sandboxID"]), **opts(api)) is False
    with pytest.raises(e2b.NotFoundException):
        await AsyncSandbox.get_info(str(a["sandboxID"]), **opts(api))
    # The old "<sandboxID>-<clientID>" spelling names the same sandbox.
    r = await api.get(f"/sandboxes/{b['sandboxID']}-gateway")
    assert r.status_code == 200 and r.json()["sandboxID"] == b["sandboxID"]


async def test_pause_resume_connect_and_state_filter(api: httpx.AsyncClient) -> None:
    from e2b import AsyncSandbox, SandboxQuery, SandboxState
    sb = await create(api)
    sid = str(sb["sandboxID"])
    r = await api.post(f"/sandboxes/{sid}/pause")
    if r.status_code != 204:
        pytest.skip(f"pause unavailable on this host: {r.text}")
    assert (await api.post(f"/sandboxes/{sid}/pause")).status_code == 409
    paused = await AsyncSandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]),
                                     **opts(api)).next_items()
    assert [s.sandbox_id for s in paused] == [sid]
    running = await AsyncSandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING]),
                                      **opts(api)).next_items()
    assert sid not in [s.sandbox_id for s in running]
    assert (await api.get("/sandboxes")).json() == []  # v1 lists running ones only

    r = await api.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 60})
    assert r.status_code == 201 and r.json()["sandboxID"] == sid
    assert (await api.get(f"/sandboxes/{sid}")).json()["state"] == "running"
    r = await api.post(f"/sandboxes/{sid}/connect", json={"timeout": 60})
    assert r.status_code == 200
    r = await api.post(f"/sandboxes/{sid}/resume", json={"timeout": 60})
    assert r.status_code == 409 and r.json()["code"] == 409


async def test_list_pages_with_next_token(api: httpx.AsyncClient) -> None:
    ids = {str((await create(api))["sandboxID"]) for _ in range(3)}
    r = await api.get("/v2/sandboxes", params={"limit": 2})
    assert len(r.json()) == 2 and r.headers["x-next-token"] == "2"
    r2 = await api.get("/v2/sandboxes", params={"limit": 2, "nextToken": "2"})
    assert "x-next-token" not in r2.headers
    assert {s["sandboxID"] for s in r.json() + r2.json()} == ids


@pytest.mark.parametrize(("body", "field", "status"), [
    ({"templateID": "cobol"}, "templateID", 400),
    ({"templateID": "base", "timeout": 10 ** 7}, "timeout", 400),
    ({"templateID": "base", "timeout": -1}, "timeout", 400),
    ({"templateID": "base", "allow_internet_access": True}, "allow_internet_access", 400),
    ({"templateID": "base", "mcp": {"x": {}}}, "mcp", 400),
    # E2B's network maps onto the egress allow-list: host names in allowOut only.
    ({"templateID": "base", "network": {"allowOut": ["10.0.0.0/8"]}}, "network.allowOut[0]",
     400),
    ({"templateID": "base", "network": {"denyOut": ["1.1.1.1"]}}, "network.denyOut", 400),
    ({"templateID": "base", "network": {"rules": {}}}, "network.rules", 400),
    ({"templateID": "base", "network": {"allowPublicTraffic": True}},
     "network.allowPublicTraffic", 400),
    ({"templateID": "base", "envVars": {"A": 1}}, "envVars", 400),
    ({"timeout": 5}, "templateID", 400),
])
async def test_create_errors_in_e2b_shape_name_the_field(
        api: httpx.AsyncClient, body: dict[str, object], field: str, status: int) -> None:
    r = await api.post("/sandboxes", json=body)
    assert r.status_code == status
    err = r.json()
    assert err["code"] == status and field in err["message"]


async def test_network_allow_out_is_the_egress_allow_list(api: httpx.AsyncClient) -> None:
    """The SDK's network={"allow_out": [...], "deny_out": [ALL_TRAFFIC]}: the sandbox may
    reach those hosts through the gateway's egress proxy, nothing else."""
    from e2b import ALL_TRAFFIC, AsyncSandbox
    root = str(api.base_url).rstrip("/").removesuffix("/e2b")
    sb = await AsyncSandbox.create("base", network={"allow_out": ["pypi.org", "*.example.com"],
                                                    "deny_out": [ALL_TRAFFIC]}, **opts(api))
    try:
        r = await api.get(f"{root}/v1/sandboxes/{sb.sandbox_id}",
                          headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200, r.text
        assert r.json()["network"] == {"allow": ["pypi.org", "*.example.com"]}
        r = await api.post(f"{root}/v1/sandboxes/{sb.sandbox_id}/execute",
                           headers={"authorization": f"Bearer {KEY}"},
                           json={"code": "import os; print(os.environ['HTTPS_PROXY'])"})
        assert r.json()["stdout"].strip() == "http://127.0.0.1:3128", r.text
    finally:
        await sb.kill()
    plain = await create(api)
    r = await api.get(f"{root}/v1/sandboxes/{plain['sandboxID']}",
                      headers={"authorization": f"Bearer {KEY}"})
    assert r.json().get("network") is None  # no network unless asked


async def test_unknown_sandbox_and_bad_filters(api: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/sandboxes/nope"), ("DELETE", "/sandboxes/nope"),
                         ("POST", "/sandboxes/nope/timeout"), ("POST", "/sandboxes/nope/pause")]:
        r = await api.request(method, path, json={"timeout": 5})
        assert r.status_code == 404 and r.json()["code"] == 404, (method, path)
        assert "sandboxID" in r.json()["message"]
    r = await api.get("/v2/sandboxes", params={"state": "frozen"})
    assert r.status_code == 400 and "state" in r.json()["message"]
    r = await api.get("/v2/sandboxes", params={"limit": "x"})
    assert r.status_code == 400 and "limit" in r.json()["message"]


async def test_the_gateway_key_guards_the_prefix(api: httpx.AsyncClient) -> None:
    from e2b import AsyncSandbox
    r = await api.get("/v2/sandboxes", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["code"] == 401
    r = await api.get("/v2/sandboxes", headers={"X-API-Key": ""})
    assert r.status_code == 401 and "API key" in r.json()["message"]
    # /v1 keeps its own key check and OpenAI's error shape.
    r = await api.get(str(api.base_url.join("/v1/models")), headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(e2b.AuthenticationException):
        await AsyncSandbox.list(**opts(api, key="wrong")).next_items()


async def test_unserved_e2b_endpoints_are_e2b_shaped_404s(api: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/sandboxes/metrics"), ("GET", "/templates"),
                         ("POST", "/sandboxes/x/snapshots"), ("PUT", "/sandboxes")]:
        r = await api.request(method, path)
        assert r.status_code == 404 and r.json()["code"] == 404, (method, path, r.text)


async def test_disabled_by_default(tmp_path: Path) -> None:
    config = parse_config({
        "llm": {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m1": {"provider": "local"}}},
        "sandbox": {"enabled": False},
    })
    assert config.server.e2b.enabled is False
    async for url in serve_app(config):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/e2b/v2/sandboxes")
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


@pytest.mark.parametrize("prefix", ["e2b", "/e2b/", "/", "/e 2b"])
def test_prefix_is_checked_at_startup(prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.e2b\.prefix"):
        parse_config({"server": {"e2b": {"enabled": True, "prefix": prefix}},
                      "llm": {"providers": {}, "models": {}}})


async def test_sdk_create_pause_connect_kill(api: httpx.AsyncClient) -> None:
    # AsyncSandbox.create and .connect only call the control plane (envd is not contacted
    # until the data plane is used), so the SDK's own objects work end to end here.
    from e2b import AsyncSandbox, SandboxState
    sb = await AsyncSandbox.create(template="base", timeout=90, metadata={"via": "sdk"},
                                   envs={"A": "1"}, **opts(api))
    assert sb.sandbox_id
    info = await sb.get_info()
    assert info.sandbox_id == sb.sandbox_id and info.metadata == {"via": "sdk"}
    assert info.state == SandboxState.RUNNING
    await sb.set_timeout(40)
    if (await api.post(f"/sandboxes/{sb.sandbox_id}/pause")).status_code != 204:
        pytest.skip("pause unavailable on this host")
    assert (await sb.get_info()).state == SandboxState.PAUSED
    again = await AsyncSandbox.connect(sb.sandbox_id, timeout=60, **opts(api))
    assert again.sandbox_id == sb.sandbox_id
    assert (await again.get_info()).state == SandboxState.RUNNING
    assert await again.kill() is True
    with pytest.raises(e2b.NotFoundException):
        await AsyncSandbox.connect(sb.sandbox_id, **opts(api))
