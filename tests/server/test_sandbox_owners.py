"""Sandboxes belong to the key that created them, over /v1/sandboxes and E2B's API: another
key gets 404 for them (their files, commands and execute too) and does not see them listed;
a team's keys see the sandboxes of a key that shares with its team; admin keys see all. The
caller's max_sandboxes and max_sandbox_seconds apply to create (and to a longer timeout). A
sandbox created with "llm" gets a child key of its caller's in its environment: within the
parent's models and budget, bounded by its own, dead with the sandbox."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Reply
from tests.gateway_process import free_port
from tests.server.test_sandboxes_api import serve_as_admin, state_dir  # noqa: F401 - a fixture

ADMIN = "adm-sandboxes"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def gateway(state_dir: Path,  # noqa: F811
                  upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _app(state_dir, upstream, server={
            "e2b": {"enabled": True}, "sandbox_gateway_url": "http://gateway.sandbox.test"},
            models=("m1", "m2"), min_ready=1):
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
    sid = r.json()["id"]
    # A longer life is taken from the same quota: 60 -> 90 s fits in 100, 200 s does not
    # (429 naming the timeout, which stays as it was), over this API and over E2B's.
    r = await gateway.post(f"/v1/sandboxes/{sid}/timeout", json={"timeout_s": 90},
                           headers=timed)
    assert r.status_code == 200, r.text
    expires = r.json()["expires_at"]
    r = await gateway.post(f"/v1/sandboxes/{sid}/timeout", json={"timeout_s": 200},
                           headers=timed)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["param"] == "timeout"
    assert "max_sandbox_seconds" in r.json()["error"]["message"]
    e2b = {"x-api-key": timed["authorization"].removeprefix("Bearer ")}
    r = await gateway.post(f"/e2b/sandboxes/{sid}/timeout", json={"timeout": 200}, headers=e2b)
    assert r.status_code == 429 and "max_sandbox_seconds" in r.json()["message"], r.text
    assert (await gateway.get(f"/v1/sandboxes/{sid}", headers=timed)).json()["expires_at"] \
        == expires
    # A shorter one is always fine (its unused seconds come back on DELETE).
    r = await gateway.post(f"/e2b/sandboxes/{sid}/timeout", json={"timeout": 30}, headers=e2b)
    assert r.status_code == 204, r.text
    assert (await gateway.delete(f"/v1/sandboxes/{sid}", headers=timed)).status_code == 204
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "timeout_s": 95},
                           headers=timed)
    assert r.status_code == 201, r.text


async def _chat(gateway: httpx.AsyncClient, key: str, model: str = "m1") -> httpx.Response:
    return await gateway.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                              json={"model": model, "max_tokens": 10,
                                    "messages": [{"role": "user", "content": "hi"}]})


async def test_child_key_for_the_code_inside(gateway: httpx.AsyncClient,
                                             upstream: FakeUpstream) -> None:
    parent = await gateway.post("/admin/keys", json={"name": "p", "models": ["m1", "m2"],
                                                     "max_tokens": 1000})
    auth = {"authorization": f"Bearer {parent.json()['key']}"}
    # Never more than the parent may do: a 400 naming the field.
    for llm, param in (({"models": ["m1", "m3"]}, "llm.models[1]"),
                       ({"models": ["*"]}, "llm.models[0]"),
                       ({"max_tokens": 5000}, "llm.max_tokens"),
                       ({"colour": "red"}, "llm.colour")):
        r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "llm": llm},
                               headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text

    r = await gateway.post("/v1/sandboxes", headers=auth, json={
        "runtime": "python", "llm": {"models": ["m1"], "max_tokens": 100}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    code = ("import os; print(os.environ['OPENAI_API_KEY']); "
            "print(os.environ['OPENAI_BASE_URL']); print(os.environ['ANTHROPIC_BASE_URL'])")
    out = (await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": code},
                              headers=auth)).json()["stdout"].split()
    child = out[0]
    assert child.startswith("sk-agw-") and child != parent.json()["key"]
    assert out[1:] == ["http://gateway.sandbox.test/v1", "http://gateway.sandbox.test"]

    # Its own models and budget: "hi" with max_tokens 10 reserves (and uses) 17 tokens.
    upstream.reset()
    upstream.script(*[Reply(text="ok", prompt_tokens=7, completion_tokens=10)] * 6)
    assert (await _chat(gateway, child, "m2")).status_code == 403
    codes = [(await _chat(gateway, child)).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    # The parent's budget took the child's spend too: 1000 - 5 * 17 left.
    keys = (await gateway.get("/admin/keys", params={"include_revoked": "1"})).json()["data"]
    child_row = next(k for k in keys if k["metadata"].get("kind") == "sandbox")
    assert child_row["owner"] == parent.json()["id"]
    usage = (await gateway.get("/admin/usage", params={"key": child_row["id"]})).json()
    assert usage["data"][0]["requests"] == 7 and usage["data"][0]["total_tokens"] == 85
    llm = (await gateway.get(f"/v1/sandboxes/{sid}", headers=auth)).json()["llm"]
    assert llm == {"key_id": child_row["id"], "requests": 7, "input_tokens": 35,
                   "output_tokens": 50, "cost": 0.0}

    # It dies with its sandbox.
    assert (await gateway.delete(f"/v1/sandboxes/{sid}", headers=auth)).status_code == 204
    assert (await _chat(gateway, child)).status_code == 401
    assert (await gateway.get(f"/admin/keys/{child_row['id']}")).json()["revoked_at"]


async def test_child_spend_counts_against_the_parent(gateway: httpx.AsyncClient,
                                                     upstream: FakeUpstream) -> None:
    parent = (await gateway.post("/admin/keys", json={"name": "small", "max_tokens": 34,
                                                      "period": "day"})).json()
    auth = {"authorization": f"Bearer {parent['key']}"}
    r = await gateway.post("/v1/sandboxes", headers=auth,
                           json={"runtime": "python", "llm": {"models": ["m1"]}})
    assert r.status_code == 201, r.text
    out = (await gateway.post(f"/v1/sandboxes/{r.json()['id']}/execute", headers=auth,
                              json={"code": "import os; print(os.environ['ANTHROPIC_API_KEY'])"})
           ).json()["stdout"]
    child = out.strip()
    upstream.reset()
    upstream.script(*[Reply(text="ok", prompt_tokens=7, completion_tokens=10)] * 3)
    assert [(await _chat(gateway, child)).status_code for _ in range(2)] == [200, 200]
    r = await _chat(gateway, child)
    assert r.status_code == 429 and parent["id"] in r.json()["error"]["message"]
    # And the parent itself has nothing left either.
    assert (await _chat(gateway, parent["key"])).status_code == 429
    # Revoking the parent stops the child.
    assert (await gateway.post(f"/admin/keys/{parent['id']}/revoke")).status_code == 200
    assert (await _chat(gateway, child)).status_code == 401



async def test_max_sandboxes_holds_for_creates_at_once(
        state_dir: Path, upstream: FakeUpstream) -> None:  # noqa: F811
    """The quota is taken before the sandbox is made: three creates at once with
    max_sandboxes = 1, none ready in the pool (so each create waits for a boot), make one
    sandbox. The count used to be checked before any of them was recorded."""
    async for admin in _app(state_dir, upstream):
        one = await _key(admin, max_sandboxes=1)
        got = await asyncio.gather(*(admin.post("/v1/sandboxes", json={"runtime": "python"},
                                                headers=one) for _ in range(3)))
        assert sorted(r.status_code for r in got) == [201, 429, 429], [r.text for r in got]
        made = next(r for r in got if r.status_code == 201).json()["id"]
        assert (await admin.delete(f"/v1/sandboxes/{made}", headers=one)).status_code == 204



async def test_the_e2b_sdk_sees_max_sandboxes_as_its_rate_limit(
        gateway: httpx.AsyncClient) -> None:
    """The official e2b SDK's create, as a key with max_sandboxes = 1: the second create
    raises the SDK's RateLimitException carrying the gateway's message; once the first is
    killed a create succeeds again."""
    e2b = pytest.importorskip("e2b")
    one = await _key(gateway, max_sandboxes=1)
    opts = {"api_key": one["authorization"].removeprefix("Bearer "),
            "api_url": str(gateway.base_url).rstrip("/") + "/e2b"}
    first = await e2b.AsyncSandbox.create("base", **opts)
    with pytest.raises(e2b.RateLimitException, match="max_sandboxes"):
        await e2b.AsyncSandbox.create("base", **opts)
    await first.kill()
    again = await e2b.AsyncSandbox.create("base", **opts)
    await again.kill()

async def _app(state_dir: Path, upstream: FakeUpstream,  # noqa: F811
               rate_limit: dict[str, object] | None = None, *,
               server: dict[str, object] | None = None, models: tuple[str, ...] = ("m1",),
               min_ready: int = 0) -> AsyncIterator[httpx.AsyncClient]:
    """The app with keys and sandboxes, as the admin sees it."""
    db = Path(tempfile.mkdtemp(prefix="agw-owners-")) / "gw.db"
    config = parse_config({
        "server": {"admin_keys": [ADMIN], **(server or {})},
        "storage": {"url": f"sqlite:///{db}", "flush_interval_s": 0.1},
        "rate_limit": rate_limit or {},
        "llm": {"providers": {"local": {"kind": "openai", "base_url": upstream.openai_base_url,
                                        "api_key": OPENAI_KEY}},
                "models": {m: {"provider": "local"} for m in models}},
        "sandbox": {"backend": "process", "state_dir": str(state_dir),
                    "pool": {"min_ready": min_ready, "max_total": 4}},
    })
    async for admin in serve_as_admin(config, ADMIN):
        yield admin


@pytest.mark.parametrize("fail_open", [True, False])
async def test_sandbox_quotas_with_the_limit_store_down(
        state_dir: Path, upstream: FakeUpstream, fail_open: bool) -> None:  # noqa: F811
    """Redis unreachable: a key with sandbox quotas gets its sandbox (fail_open, the
    default) or a 503 in the API's shape (fail_open = false) — never a 500."""
    down = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "redis_timeout_s": 0.1, "fail_open": fail_open}
    async for admin in _app(state_dir, upstream, down):
        for spec in ({"max_sandboxes": 1}, {"max_sandbox_seconds": 100, "period": "day"}):
            key = await _key(admin, **spec)
            r = await admin.post("/v1/sandboxes", json={"runtime": "python",
                                                        "timeout_s": 60}, headers=key)
            if fail_open:
                assert r.status_code == 201, r.text
                sid = r.json()["id"]
                assert (await admin.delete(f"/v1/sandboxes/{sid}",
                                           headers=key)).status_code == 204
            else:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "ratelimit_store_unavailable"
                listed = (await admin.get("/v1/sandboxes", headers=key)).json()
                assert listed["data"] == []
