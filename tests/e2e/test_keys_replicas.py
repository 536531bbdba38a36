"""Two gateway processes sharing one Redis and one PostgreSQL, as two replicas would: a
key's budget holds across both under a burst (exactly N of 3N served when each request
uses what it reserved), and a key revoked through one stops working on the other at once
(Redis pub/sub: the cache's own lifetime here is ten minutes); a key's max_sandboxes
counts its sandboxes on both."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Reply
from tests.gateway_process import GatewayProcess
from tests.postgres_fixture import postgres_server
from tests.redis_fixture import RedisServer, redis_server

ADMIN = "adm-replicas"


def config(up: FakeUpstream, redis: RedisServer, storage_url: str,
           sandbox: str = "enabled = false") -> str:
    return f"""
[server]
admin_keys = ["{ADMIN}"]
[logging]
access_log = false
[sandbox]
{sandbox}
[rate_limit]
backend = "redis"
redis_url = "{redis.url}"
redis_timeout_s = 2.0
[storage]
url = "{storage_url}"
flush_interval_s = 0.1
key_cache_ttl_s = 600
[llm.providers.main]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.m]
provider = "main"
"""


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[FakeUpstream, GatewayProcess, GatewayProcess]]:
    with FakeUpstream() as up, redis_server() as redis, postgres_server() as pg:
        text = config(up, redis, pg.url)
        with GatewayProcess(text) as a, GatewayProcess(text) as b:
            yield up, a, b


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_budget_holds_across_two_processes(
        replicas: tuple[FakeUpstream, GatewayProcess, GatewayProcess]) -> None:
    up, a, b = replicas
    up.reset()
    n = 6
    # "hi" with max_tokens 10 reserves 7 + 10 tokens, and each reply uses exactly that.
    with httpx.Client(base_url=a.url, headers=_auth(ADMIN), timeout=30) as api:
        made = api.post("/admin/keys", json={"name": "burst", "max_tokens": n * 17,
                                             "period": "total"})
        assert made.status_code == 201, made.text
        key = made.json()
    up.script(*[Reply(text="ok", prompt_tokens=7, completion_tokens=10)] * (3 * n))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64),
                                     headers=_auth(key["key"])) as client:
            return await asyncio.gather(*(client.post(
                (a.url, b.url)[i % 2] + "/v1/chat/completions",
                json={"model": "m", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]})
                for i in range(3 * n)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * n + [429] * (2 * n), [r.text for r in responses][:3]
    assert len(up.requests) == n
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    # Both replicas' records reach the shared database; their sum is the upstream's.
    with httpx.Client(base_url=b.url, headers=_auth(ADMIN), timeout=30) as api:
        deadline = time.monotonic() + 10
        while True:
            with httpx.Client(base_url=a.url, headers=_auth(ADMIN), timeout=30) as api_a:
                api_a.get("/admin/usage")  # flushes a's waiting records
            rows = api.get("/admin/usage", params={"key": key["id"]}).json()["data"]
            if (rows and rows[0]["requests"] == 3 * n) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert rows[0]["requests"] == 3 * n and rows[0]["errors"] == 2 * n
    assert rows[0]["total_tokens"] == n * 17


def test_revoke_reaches_the_other_process_within_a_second(
        replicas: tuple[FakeUpstream, GatewayProcess, GatewayProcess]) -> None:
    up, a, b = replicas
    up.reset()
    ready = httpx.get(b.url + "/health/ready").json()
    assert ready["access"]["keys"]["invalidation"] == "redis"
    with httpx.Client(base_url=a.url, headers=_auth(ADMIN), timeout=30) as api:
        key = api.post("/admin/keys", json={"name": "short-lived"}).json()
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        # Cached on b now.
        r = httpx.post(b.url + "/v1/chat/completions", json=body, headers=_auth(key["key"]))
        assert r.status_code == 200
        assert api.post(f"/admin/keys/{key['id']}/revoke").status_code == 200
        revoked = time.monotonic()
    with httpx.Client(base_url=b.url, headers=_auth(key["key"]), timeout=30) as client:
        while client.post("/v1/chat/completions", json=body).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "b still accepts the revoked key"
            time.sleep(0.02)


def test_max_sandboxes_holds_across_two_processes() -> None:
    """A key's max_sandboxes counts its sandboxes on every process sharing the Redis: two
    here (one on each) and a third is refused on both; one deleted frees a place for
    either."""
    root = Path(tempfile.mkdtemp(prefix="agw-slots-"))
    root.chmod(0o711)  # the jails run as their own uids
    try:
        with FakeUpstream() as up, redis_server() as redis:
            texts = [config(up, redis, f"sqlite:///{root}/gw.db",
                            f'backend = "process"\nstate_dir = "{root}/{name}"\n'
                            "[sandbox.pool]\nmin_ready = 0\nmax_total = 4")
                     for name in ("a", "b")]
            with GatewayProcess(texts[0]) as a, GatewayProcess(texts[1]) as b:
                _quota_across(a, b)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _quota_across(a: GatewayProcess, b: GatewayProcess) -> None:
    ready = httpx.get(a.url + "/health/ready").json()
    if not ready["sandbox"]["available"]:
        pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
    with httpx.Client(base_url=a.url, headers=_auth(ADMIN), timeout=30) as api:
        key = api.post("/admin/keys", json={"name": "boxes", "max_sandboxes": 2}).json()

    def create(gw: GatewayProcess) -> httpx.Response:
        return httpx.post(gw.url + "/v1/sandboxes", json={"runtime": "python"},
                          headers=_auth(key["key"]), timeout=60)

    first, second = create(a), create(b)
    assert (first.status_code, second.status_code) == (201, 201), second.text
    for gw in (a, b):
        refused = create(gw)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "sandbox_quota_exceeded"
        assert refused.json()["error"]["param"] == "max_sandboxes"
    gone = httpx.delete(f"{a.url}/v1/sandboxes/{first.json()['id']}",
                        headers=_auth(key["key"]))
    assert gone.status_code == 204
    third = create(b)
    assert third.status_code == 201, third.text
    assert create(a).status_code == 429
    for made in (second, third):
        assert httpx.delete(f"{b.url}/v1/sandboxes/{made.json()['id']}",
                            headers=_auth(key["key"])).status_code == 204
