"""/v1/sandboxes over HTTP: the gateway app (create_app) served by hypercorn on a free
loopback port, with real bubblewrap jails behind it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from gateway_core.config import Config, parse_config
from gateway_server.app import create_app
from tests.gateway_process import free_port


def gateway_config(state_dir: Path, **sandbox: object) -> Config:
    return parse_config({
        "llm": {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m1": {"provider": "local"}}},
        "sandbox": {"backend": "process", "state_dir": str(state_dir),
                    "pool": {"min_ready": 1, "max_total": 3},
                    "limits": {"max_upload_bytes": 1024 * 1024}, **sandbox},
    })


async def serve_app(config: Config, port: int | None = None) -> AsyncIterator[str]:
    """The app under hypercorn on ``port`` (a free one by default) until the caller is done;
    yields its URL once /health answers."""
    port = port or free_port()
    hc = HypercornConfig()
    hc.bind = [f"127.0.0.1:{port}"]
    hc.accesslog = None
    hc.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(create_app(config), hc,  # type: ignore[arg-type]
                                     shutdown_trigger=stop.wait))
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(400):
                try:
                    if (await client.get(url + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)



async def serve_as_admin(config: Config, admin_key: str,
                         port: int | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """``serve_app`` with a client holding ``admin_key``; skips when sandboxes are
    unavailable on this machine."""
    async for url in serve_app(config, port):
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     headers={"authorization": f"Bearer {admin_key}"}) as client:
            ready = (await client.get("/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            yield client

@pytest.fixture
def state_dir() -> AsyncIterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="agw-api-test-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    yield d / "state"  # type: ignore[misc]
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for url in serve_app(gateway_config(state_dir)):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            ready = (await client.get("/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            yield client


def error_of(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err)
    return err


async def test_create_execute_delete(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python",
                                                  "metadata": {"user": "u1"}})
    assert r.status_code == 201
    sb = r.json()
    assert {"id", "runtime", "status", "created_at", "expires_at", "backend"} <= set(sb)
    assert (sb["runtime"], sb["status"], sb["backend"]) == ("python", "ready", "process")
    r = await gateway.post(f"/v1/sandboxes/{sb['id']}/execute", json={"code": "print(1 + 1)"})
    assert r.status_code == 200
    result = r.json()
    assert (result["stdout"], result["exit_code"], result["timed_out"]) == ("2\n", 0, False)
    assert set(result) == {"stdout", "stderr", "exit_code", "duration_ms", "timed_out",
                           "truncated"}
    listed = (await gateway.get("/v1/sandboxes", params={"metadata.user": "u1"})).json()
    assert [s["id"] for s in listed["data"]] == [sb["id"]]
    assert (await gateway.get("/v1/sandboxes", params={"metadata.user": "x"})).json()[
        "data"] == []
    assert (await gateway.get(f"/v1/sandboxes/{sb['id']}")).json()["id"] == sb["id"]
    r = await gateway.delete(f"/v1/sandboxes/{sb['id']}")
    assert r.status_code == 204
    for r in (await gateway.get(f"/v1/sandboxes/{sb['id']}"),
              await gateway.delete(f"/v1/sandboxes/{sb['id']}"),
              await gateway.post(f"/v1/sandboxes/{sb['id']}/execute", json={"code": "1"})):
        assert r.status_code == 404
        assert error_of(r)["type"] == "not_found_error"


async def test_timeout_then_next_execute(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute",
                           json={"code": "while True: pass", "timeout_s": 1})
    assert r.json()["timed_out"] is True
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": "print('next')"})
    assert r.json()["stdout"] == "next\n"


async def test_bad_input_is_4xx_naming_the_field(gateway: httpx.AsyncClient) -> None:
    cases = [
        ({"runtime": "cobol"}, "runtime"),
        ({"runtime": 3}, "runtime"),
        ({"runtime": "python", "timeout_s": 0}, "timeout_s"),
        ({"runtime": "python", "colour": "red"}, "colour"),
    ]
    for body, param in cases:
        r = await gateway.post("/v1/sandboxes", json=body)
        assert r.status_code == 400, body
        assert error_of(r)["param"] == param
    r = await gateway.post("/v1/sandboxes", content=b"{not json")
    assert r.status_code == 400
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    for body, param in [({"code": ""}, "code"), ({"code": "1", "timeout_s": 1e9}, "timeout_s"),
                        ({"code": "1", "runtime": "cobol"}, "runtime"), ({}, None)]:
        r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json=body)
        assert r.status_code == 400, body
        if param:
            assert error_of(r)["param"] == param
    # An empty code is also a 400 when streaming (checked before the stream starts).
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": " ", "stream": True})
    assert r.status_code == 400 and error_of(r)["param"] == "code"


async def test_files_round_trip_and_confinement(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    url = f"/v1/sandboxes/{sid}/files"
    r = await gateway.put(url, params={"path": "data/in.txt"}, content=b"hello file")
    assert r.status_code == 201 and r.json()["size"] == 10
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute",
                           json={"code": "print(open('data/in.txt').read().upper())"})
    assert r.json()["stdout"] == "HELLO FILE\n"
    r = await gateway.get(url, params={"path": "/work/data/in.txt"})
    assert r.status_code == 200 and r.content == b"hello file"
    await gateway.post(f"/v1/sandboxes/{sid}/execute",
                       json={"code": "import os; os.symlink('/etc/passwd', 'pw')"})
    for path in ("../../etc/passwd", "/etc/passwd", "pw"):
        for r in (await gateway.get(url, params={"path": path}),
                  await gateway.put(url, params={"path": path}, content=b"x")):
            assert r.status_code == 400, path
            assert error_of(r)["param"] == "path"
    assert (await gateway.get(url)).status_code == 400
    r = await gateway.get(url, params={"path": "nothing.txt"})
    assert r.status_code == 404
    r = await gateway.put(url, params={"path": "big"}, content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413


async def test_streaming_execute_is_sse(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    code = "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)\n"
    events: list[tuple[str, dict[str, object]]] = []
    async with gateway.stream("POST", f"/v1/sandboxes/{sid}/execute",
                              json={"code": code, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    # Chunks arrive as produced (a program may write a line in pieces); joined per stream:
    for stream, text in (("stdout", "out\n"), ("stderr", "err\n")):
        assert "".join(str(e["data"]) for n, e in events if n == stream) == text
        assert all(e["stream"] == n for n, e in events[:-1])
    assert events[-1][0] == "result" and events[-1][1]["exit_code"] == 0


async def test_client_disconnect_kills_the_execution(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    code = "import time\nprint('started', flush=True)\ntime.sleep(300)\n"
    async with gateway.stream("POST", f"/v1/sandboxes/{sid}/execute",
                              json={"code": code, "stream": True}) as r:
        async for line in r.aiter_lines():
            if "started" in line:
                break
    # The next execute gets the lock only once the abandoned one was cancelled and killed.
    listing = ("import os\nprint([open(f'/proc/{p}/cmdline').read() "
               "for p in os.listdir('/proc') if p.isdigit()])")
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute",
                           json={"code": listing, "timeout_s": 10})
    assert r.status_code == 200
    assert "time.sleep" not in r.text and r.json()["stdout"].count("main.py") == 1


async def test_node_and_rust_over_http(gateway: httpx.AsyncClient) -> None:
    for runtime, code in [("node", "console.log(1 + 1)"),
                          ("rust", 'fn main() { println!("{}", 1 + 1); }')]:
        if shutil.which({"node": "node", "rust": "rustc"}[runtime],
                        path="/usr/local/bin:/usr/bin:/bin") is None:
            continue
        sid = (await gateway.post("/v1/sandboxes", json={"runtime": runtime})).json()["id"]
        r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": code})
        assert r.json()["stdout"] == "2\n", r.text
        assert (await gateway.delete(f"/v1/sandboxes/{sid}")).status_code == 204


async def test_readiness_reports_backend_and_limits(gateway: httpx.AsyncClient) -> None:
    sandbox = (await gateway.get("/health/ready")).json()["sandbox"]
    assert sandbox["available"] is True and sandbox["backend"] == "process"
    assert "weaker isolation than a microVM" in sandbox["isolation"]


async def test_unusable_bubblewrap_answers_503_and_llm_side_stays_up(state_dir: Path) -> None:
    config = gateway_config(state_dir, bwrap_path="/bin/false")
    async for url in serve_app(config):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.post("/v1/sandboxes", json={"runtime": "python"})
            assert r.status_code == 503
            err = error_of(r)
            assert "bubblewrap" in str(err["message"])
            assert (await client.get("/v1/sandboxes")).status_code == 503
            ready = (await client.get("/health/ready")).json()
            assert ready["sandbox"]["available"] is False
            assert (await client.get("/v1/models")).status_code == 200


async def test_context_keeps_state_over_http(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    r = await gateway.post(f"/v1/sandboxes/{sid}/contexts", json={"language": "python"})
    assert r.status_code == 201
    ctx = r.json()
    assert ctx["object"] == "context" and ctx["language"] == "python"
    url = f"/v1/sandboxes/{sid}/execute"
    r = await gateway.post(url, json={"code": "import json\ndata = {'k': [1, 2]}",
                                      "context_id": ctx["id"]})
    assert r.status_code == 200 and r.json()["exit_code"] == 0
    r = await gateway.post(url, json={"code": "json.dumps(data)", "context_id": ctx["id"]})
    body = r.json()
    assert body["results"] == [{"mime": "text/plain", "data": "'{\"k\": [1, 2]}'",
                                "value": True}]
    assert body["context_id"] == ctx["id"]
    r = await gateway.post(url, json={"code": "1/0", "context_id": ctx["id"]})
    assert r.json()["error"]["name"] == "ZeroDivisionError"
    # "context": "default" makes one per language on first use.
    await gateway.post(url, json={"code": "d = 5", "context": "default"})
    r = await gateway.post(url, json={"code": "d * 2", "context": "default"})
    assert r.json()["results"][0]["data"] == "10"
    listed = (await gateway.get(f"/v1/sandboxes/{sid}/contexts")).json()["data"]
    assert {c["id"] for c in listed} == {ctx["id"], "default-python"}
    r = await gateway.post(f"/v1/sandboxes/{sid}/contexts/{ctx['id']}/interrupt")
    assert r.json() == {"interrupted": False}
    r = await gateway.post(f"/v1/sandboxes/{sid}/contexts/{ctx['id']}/restart")
    assert r.json()["restarts"] == 1
    r = await gateway.post(url, json={"code": "data", "context_id": ctx["id"]})
    assert r.json()["error"]["name"] == "NameError"
    assert (await gateway.delete(f"/v1/sandboxes/{sid}/contexts/{ctx['id']}")).status_code \
        == 204
    for r in (await gateway.post(url, json={"code": "1", "context_id": ctx["id"]}),
              await gateway.get(f"/v1/sandboxes/{sid}/contexts/{ctx['id']}"),
              await gateway.post(f"/v1/sandboxes/{sid}/contexts/nope/interrupt")):
        assert r.status_code == 404 and error_of(r)["param"] == "context_id"
    for body, param in [({"language": "cobol"}, "language"), ({"lang": "python"}, "lang")]:
        r = await gateway.post(f"/v1/sandboxes/{sid}/contexts", json=body)
        assert r.status_code == 400 and error_of(r)["param"] == param


async def test_commands_over_http(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    url = f"/v1/sandboxes/{sid}/commands"
    r = await gateway.post(url, json={"cmd": "echo hi; exit 2"})
    assert (r.status_code, r.json()["stdout"], r.json()["exit_code"]) == (200, "hi\n", 2)
    r = await gateway.post(url, json={"cmd": "sleep 30", "background": True})
    assert r.status_code == 201
    pid = r.json()["pid"]
    listed = (await gateway.get(url)).json()["data"]
    assert [(c["pid"], c["status"]) for c in listed] == [(pid, "running")]
    r = await gateway.post(f"{url}/{pid}/signal", json={"signal": "KILL"})
    assert r.status_code == 204
    events: list[tuple[str, dict[str, object]]] = []
    async with gateway.stream("GET", f"{url}/{pid}", params={"follow": "true"}) as resp:
        name = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[-1][0] == "exit" and events[-1][1]["exit_code"] == 137
    r = await gateway.post(url, json={"cmd": "cat; echo", "background": True})
    pid2 = r.json()["pid"]
    await gateway.post(f"{url}/{pid2}/stdin", json={"data": "fed", "eof": True})
    for _ in range(100):
        info = (await gateway.get(f"{url}/{pid2}")).json()
        if info["status"] == "exited":
            break
        await asyncio.sleep(0.05)
    assert info["stdout"] == "fed\n" and info["exit_code"] == 0
    for body, param in [({"cmd": "echo \u0000"}, "cmd"), ({"cmd": ""}, "cmd"),
                        ({"cmd": "x", "background": True, "stream": True}, "stream")]:
        r = await gateway.post(url, json=body)
        assert r.status_code == 400 and error_of(r)["param"] == param, body
    r = await gateway.get(f"{url}/424242")
    assert r.status_code == 404 and error_of(r)["param"] == "pid"


async def test_filesystem_api_over_http(gateway: httpx.AsyncClient) -> None:
    sid = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()["id"]
    base = f"/v1/sandboxes/{sid}/files"
    r = await gateway.post(base + "/mkdir", json={"path": "d/e"})
    assert r.status_code == 201 and r.json()["type"] == "dir"

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"z" * 100_000

    r = await gateway.put(base, params={"path": "d/e/z.bin"}, content=body())
    assert r.status_code == 201 and r.json()["size"] == 400_000
    r = await gateway.get(base + "/list", params={"path": "d", "depth": 2})
    assert [(e["path"], e["type"]) for e in r.json()["data"]] == [("d/e", "dir"),
                                                                  ("d/e/z.bin", "file")]
    r = await gateway.get(base + "/stat", params={"path": "d/e/z.bin"})
    assert r.json()["size"] == 400_000
    r = await gateway.post(base + "/move", json={"src": "d/e/z.bin", "dst": "z.bin"})
    assert r.json()["path"] == "z.bin"
    r = await gateway.get(base, params={"path": "z.bin"})
    assert r.content == b"z" * 400_000 and r.headers["content-length"] == "400000"
    r = await gateway.delete(base, params={"path": "d"})
    assert r.status_code == 409
    assert (await gateway.delete(base, params={"path": "d", "recursive": "true"})).status_code \
        == 204
    r = await gateway.get(base + "/list")
    assert [e["name"] for e in r.json()["data"]] == ["z.bin"]
    for r in (await gateway.get(base + "/list", params={"path": "/etc"}),
              await gateway.get(base + "/stat", params={"path": "../x"}),
              await gateway.delete(base, params={"path": "/work"}),
              await gateway.post(base + "/mkdir", json={"path": "/etc/x"})):
        assert r.status_code == 400 and error_of(r)["param"] == "path"
    r = await gateway.post(base + "/move", json={"src": "z.bin", "dst": "/etc/z"})
    assert r.status_code == 400 and error_of(r)["param"] == "dst"


async def test_lifecycle_over_http(gateway: httpx.AsyncClient) -> None:
    ready = (await gateway.get("/health/ready")).json()["sandbox"]
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "timeout_s": 60})
    sb = r.json()
    sid = sb["id"]
    r = await gateway.post(f"/v1/sandboxes/{sid}/timeout", json={"timeout_s": 600})
    assert r.status_code == 200 and r.json()["expires_at"] > sb["expires_at"]
    r = await gateway.post(f"/v1/sandboxes/{sid}/timeout", json={"timeout_s": 1e9})
    assert r.status_code == 400 and error_of(r)["param"] == "timeout_s"
    r = await gateway.post(f"/v1/sandboxes/{sid}/resume")
    assert r.status_code == 409 and error_of(r)["code"] == "sandbox_not_paused"
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "disk_mb": 10**9})
    assert r.status_code == 400 and error_of(r)["param"] == "disk_mb"
    if ready.get("pause", "").startswith("unavailable"):
        return
    await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": "k = 9", "context":
                                                             "default"})
    r = await gateway.post(f"/v1/sandboxes/{sid}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": "k"})
    assert r.status_code == 409 and error_of(r)["code"] == "sandbox_paused"
    assert (await gateway.get(f"/v1/sandboxes/{sid}")).json()["status"] == "paused"
    r = await gateway.post(f"/v1/sandboxes/{sid}/resume")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    r = await gateway.post(f"/v1/sandboxes/{sid}/execute", json={"code": "k",
                                                                 "context": "default"})
    assert r.json()["results"][0]["data"] == "9"
