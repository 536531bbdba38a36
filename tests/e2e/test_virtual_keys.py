"""Virtual keys through the served gateway (the real CLI serving it, SQLite as the store):
the key lifecycle over the admin API and the CLI, model allow-lists, aliases_only, budgets
refused with a 429 that names the budget, and usage rows that match what the upstream
reported, token for token."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Reply
from tests.gateway_process import GatewayProcess

ADMIN = "adm-test-key"
STATIC = "static-test-key"


def config(up: FakeUpstream, db: str, extra: str = "") -> str:
    return f"""
[server]
api_keys = ["{STATIC}"]
admin_keys = ["{ADMIN}"]
[logging]
access_log = false
[sandbox]
enabled = false
[storage]
url = "sqlite:///{db}"
flush_interval_s = 0.1
[llm]
aliases_only = true
[llm.providers.main]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.cheap]
provider = "main"
model = "gpt-4o-mini"
[llm.models.priced]
provider = "main"
model = "house-model"
input_cost_per_mtok = 1.0
output_cost_per_mtok = 4.0
cached_input_cost_per_mtok = 0.5
{extra}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[GatewayProcess]:
    upstream.reset()
    db = tmp_path_factory.mktemp("keys") / "gw.db"
    with GatewayProcess(config(upstream, str(db))) as gw:
        yield gw


def admin(gw: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"},
                        timeout=30)


def chat(gw: GatewayProcess, key: str, model: str = "cheap", **body: object) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}], **body})


def test_key_lifecycle_over_the_admin_api(gateway: GatewayProcess) -> None:
    with admin(gateway) as api:
        r = api.post("/admin/teams", json={"name": "Research", "id": "research",
                                           "max_tokens": 100000, "period": "month"})
        assert r.status_code == 201, r.text
        r = api.post("/admin/keys", json={"name": "ci", "team": "research",
                                          "models": ["cheap"], "rpm": 100,
                                          "metadata": {"owner": "ops"}})
        assert r.status_code == 201, r.text
        created = r.json()
        secret, key_id = created["key"], created["id"]
        assert secret.startswith("sk-agw-") and created["key_prefix"] == secret[:12]
        # Shown once: never again in a get or a list.
        got = api.get(f"/admin/keys/{key_id}").json()
        assert "key" not in got and got["models"] == ["cheap"] and got["team"] == "research"
        listed = api.get("/admin/keys", params={"team": "research"}).json()["data"]
        assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]
        assert chat(gateway, secret).status_code == 200

        r = api.patch(f"/admin/keys/{key_id}", json={"models": ["cheap", "priced"],
                                                     "rpm": None})
        assert r.status_code == 200 and r.json()["rpm"] is None
        assert chat(gateway, secret, "priced").status_code == 200

        rotated = api.post(f"/admin/keys/{key_id}/rotate").json()
        assert rotated["id"] == key_id and rotated["key"] != secret
        assert chat(gateway, secret).status_code == 401
        assert chat(gateway, rotated["key"]).status_code == 200

        r = api.post(f"/admin/keys/{key_id}/revoke")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        r = chat(gateway, rotated["key"])
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert api.get("/admin/keys").json()["data"] == []
        assert len(api.get("/admin/keys", params={"include_revoked": "1"})
                   .json()["data"]) == 1

        # Revoking a team stops its keys.
        other = api.post("/admin/keys", json={"name": "b", "team": "research"}).json()
        assert chat(gateway, other["key"]).status_code == 200
        assert api.delete("/admin/teams/research").status_code == 200
        assert chat(gateway, other["key"]).status_code == 401


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "max_cost": -1}, "max_cost"),
    ({"name": "x", "max_tokens": -5}, "max_tokens"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "x", "period": "week"}, "period"),
    ({"name": "x", "team": "nope"}, "team"),
    ({"rpm": 5}, "name"),
])
def test_bad_admin_input_is_a_400_naming_the_field(gateway: GatewayProcess,
                                                   body: dict[str, object],
                                                   param: str) -> None:
    with admin(gateway) as api:
        r = api.post("/admin/keys", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_admin_api_needs_an_admin_key(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/admin/keys").status_code == 401
    r = httpx.get(gateway.url + "/admin/keys", headers={"authorization": f"Bearer {STATIC}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    with admin(gateway) as api:
        key = api.post("/admin/keys", json={"name": "v"}).json()["key"]
    r = httpx.get(gateway.url + "/admin/usage", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_models_outside_the_allow_list_and_direct_addressing(gateway: GatewayProcess) -> None:
    with admin(gateway) as api:
        key = api.post("/admin/keys", json={"name": "m", "models": ["cheap"]}).json()["key"]
    r = chat(gateway, key, "priced")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert "'priced'" in r.json()["error"]["message"]
    models = httpx.get(gateway.url + "/v1/models",
                       headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert [m["id"] for m in models] == ["cheap"]
    # aliases_only: "provider/model" is refused even for unlimited keys.
    r = chat(gateway, STATIC, "main/gpt-4o-mini")
    assert r.status_code == 403 and r.json()["error"]["code"] == "aliases_only"
    # Pass-through endpoints are not for virtual keys (their spend is not metered).
    r = httpx.get(gateway.url + "/v1/files", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_budget_exhausted_answers_429_naming_it(gateway: GatewayProcess,
                                                upstream: FakeUpstream) -> None:
    # "hi" with max_tokens 10 reserves 7 + 10 = 17 tokens; each reply uses exactly that.
    with admin(gateway) as api:
        made = api.post("/admin/keys", json={"name": "b", "max_tokens": 3 * 17,
                                             "period": "day"}).json()
    key = made["key"]
    upstream.script(*[Reply(text="ok", prompt_tokens=7, completion_tokens=10)] * 4)
    assert [chat(gateway, key).status_code for _ in range(3)] == [200, 200, 200]
    r = chat(gateway, key)
    assert r.status_code == 429
    with admin(gateway) as api:
        spend = api.get(f"/admin/keys/{made['id']}").json()["spend"]
    assert (spend["period"], spend["tokens"], spend["requests"]) == ("day", 51, 4)
    assert spend["since"].endswith("T00:00:00Z")
    error = r.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
    assert "max_tokens = 51 per day" in error["message"] and "resets at" in error["message"]
    assert r.headers["x-gateway-budget-reset"].endswith("T00:00:00Z")
    assert int(r.headers["retry-after"]) > 0


def test_usage_rows_match_the_upstream_usage(gateway: GatewayProcess,
                                             upstream: FakeUpstream) -> None:
    with admin(gateway) as api:
        key = api.post("/admin/keys", json={"name": "u", "models": ["*"]}).json()
    upstream.script(Reply(text="a", prompt_tokens=120, completion_tokens=30, cached_tokens=20),
                    Reply(text="b", prompt_tokens=200, completion_tokens=50),
                    Reply(text="c", prompt_tokens=11, completion_tokens=3))
    assert chat(gateway, key["key"], "priced").status_code == 200
    assert chat(gateway, key["key"], "priced", stream=True,
                stream_options={"include_usage": True}).status_code == 200
    assert chat(gateway, key["key"], "cheap").status_code == 200
    assert chat(gateway, key["key"], "unknown-alias").status_code == 404
    with admin(gateway) as api:
        r = api.get("/admin/usage", params={"key": key["id"], "group_by": "model"})
    assert r.status_code == 200, r.text
    rows = {row["group"]: row for row in r.json()["data"]}
    priced, cheap = rows["priced"], rows["cheap"]
    assert (priced["requests"], priced["errors"]) == (2, 0)
    assert (priced["input_tokens"], priced["output_tokens"]) == (320, 80)
    assert priced["cached_tokens"] == 20
    # (100 * 1.0 + 20 * 0.5 + 30 * 4.0) + (200 * 1.0 + 50 * 4.0) micro-USD.
    assert priced["cost"] == pytest.approx(630e-6, abs=1e-12)
    assert (cheap["input_tokens"], cheap["output_tokens"]) == (11, 3)
    # gpt-4o-mini from the shipped table: 0.15 in, 0.6 out per Mtok.
    assert cheap["cost"] == pytest.approx((11 * 0.15 + 3 * 0.6) * 1e-6, abs=1e-12)
    assert rows["unknown-alias"]["errors"] == 1
    assert priced["p50_latency_ms"] > 0 and priced["p99_latency_ms"] >= priced["p50_latency_ms"]
    with admin(gateway) as api:
        total = api.get("/admin/usage", params={"key": key["id"]}).json()["data"]
        assert [t["requests"] for t in total] == [4]
        r = api.get("/admin/usage", params={"group_by": "week"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "group_by"


def test_key_lifecycle_through_the_cli(upstream: FakeUpstream,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    db = tmp_path_factory.mktemp("cli") / "gw.db"
    gw = GatewayProcess(config(upstream, str(db)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway_server.cli", *args, "--config",
                               str(gw.config_path)], capture_output=True, text=True,
                              timeout=60, cwd=gw.dir)

    made = cli("keys", "create", "--name", "from-cli", "--models", "cheap",
               "--max-tokens", "1000", "--period", "day")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["max_tokens"] == 1000 and key["models"] == ["cheap"]
    bad = cli("keys", "create", "--name", "x", "--max-cost", "-2")
    assert bad.returncode == 2 and "max_cost" in bad.stderr
    with gw:
        assert chat(gw, key["key"]).status_code == 200
        with admin(gw) as api:
            assert api.get(f"/admin/keys/{key['id']}").json()["name"] == "from-cli"
        listed = json.loads(cli("keys", "list").stdout)
        assert [k["id"] for k in listed] == [key["id"]]
        assert cli("keys", "revoke", key["id"]).returncode == 0
        # No Redis here: the gateway re-reads a cached key after at most a second.
        deadline = time.monotonic() + 10
        while chat(gw, key["key"]).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert chat(gw, key["key"]).status_code == 401


def test_two_workers_share_the_sqlite_store(upstream: FakeUpstream,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """--workers 2 on one SQLite file: the schema is migrated once before they start, a key
    made through one works on both, and both workers' records land in the one table."""
    upstream.reset()
    db = tmp_path_factory.mktemp("workers") / "gw.db"
    with GatewayProcess(config(upstream, str(db)), workers=2) as gw:
        with admin(gw) as api:
            key = api.post("/admin/keys", json={"name": "w"}).json()
        assert [chat(gw, key["key"]).status_code for _ in range(12)] == [200] * 12
        # Each worker writes its own records within its flush interval (0.1 s).
        deadline = time.monotonic() + 10
        while True:
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT count(*), sum(status = 200) FROM usage "
                                    "WHERE key_id = ?", (key["id"],)).fetchone()
            if rows == (12, 12) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rows == (12, 12)
