"""Usage records survive what they must: a graceful stop writes those still waiting, and
while the database is down they are kept (readiness says so; with on_unrecorded = "refuse"
virtual keys get 503) and written once it is back, none lost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import httpx

from tests.fakes.upstream import OPENAI_KEY, FakeUpstream, Reply
from tests.gateway_process import GatewayProcess
from tests.postgres_fixture import postgres_server

ADMIN = "adm-durable"
STATIC = "static-durable"


def config(up: FakeUpstream, url: str, storage: str) -> str:
    return f"""
[server]
api_keys = ["{STATIC}"]
admin_keys = ["{ADMIN}"]
[logging]
access_log = false
[sandbox]
enabled = false
[storage]
url = "{url}"
{storage}
[llm.providers.main]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
[llm.models.m]
provider = "main"
"""


def _chat(gw: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=30)


def _new_key(gw: GatewayProcess) -> str:
    r = httpx.post(gw.url + "/admin/keys", json={"name": "d"},
                   headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def _until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.1)


def test_graceful_stop_writes_waiting_records(tmp_path: object) -> None:
    db = f"{tmp_path}/usage.db"
    with FakeUpstream() as up:
        up.script(*[Reply(text="ok", prompt_tokens=9, completion_tokens=4)] * 5)
        # Far longer than the test: only the stop can have written them.
        gw = GatewayProcess(config(up, f"sqlite:///{db}", "flush_interval_s = 60"))
        with gw:
            key = _new_key(gw)
            assert [_chat(gw, key).status_code for _ in range(5)] == [200] * 5
        assert gw.proc is None
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT input_tokens, output_tokens, status FROM usage").fetchall()
    assert rows == [(9, 4, 200)] * 5


def test_records_wait_while_the_database_is_down() -> None:
    with FakeUpstream() as up, postgres_server() as pg:
        with GatewayProcess(config(up, pg.url, 'flush_interval_s = 0.1\n'
                                   'on_unrecorded = "refuse"')) as gw:
            key = _new_key(gw)
            assert _chat(gw, key).status_code == 200
            pg.halt()
            # Served until a write fails (the request's own record is the one waiting)...
            assert _chat(gw, STATIC).status_code == 200

            def warned() -> bool:
                access = httpx.get(gw.url + "/health/ready").json()["access"]
                return access["warning"] is not None and access["usage"]["pending"] >= 1
            _until(warned, "readiness warns that usage cannot be written")
            # ... then virtual keys are refused; static keys are not limited.
            r = _chat(gw, key)
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "usage_store_unavailable"
            assert _chat(gw, STATIC).status_code == 200
            pg.resume()

            def healthy() -> bool:
                access = httpx.get(gw.url + "/health/ready").json()["access"]
                return access["warning"] is None and access["usage"]["pending"] == 0
            _until(healthy, "the waiting records are written once the database is back")
            assert _chat(gw, key).status_code == 200
            r = httpx.get(gw.url + "/admin/usage", params={"group_by": "key"},
                          headers={"authorization": f"Bearer {ADMIN}"})
            by_key = {row["group"]: row for row in r.json()["data"]}
            assert by_key["static"]["requests"] == 2
            virtual = [row for name, row in by_key.items() if name != "static"]
            assert [(v["requests"], v["errors"]) for v in virtual] == [(3, 1)]
