"""E2B's data plane on the served gateway: the official ``e2b`` and ``e2b-code-interpreter``
SDKs, pointed at it with only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY, run commands,
move files and run code in contexts in real bubblewrap jails; the JS SDK from npm too."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from tests.server.test_sandboxes_api import serve_app

e2b = pytest.importorskip("e2b")
e2b_ci = pytest.importorskip("e2b_code_interpreter")

KEY = "sk-e2b-data-test"
ROOT = Path(__file__).resolve().parents[2]
NPM_CACHE = Path.home() / ".cache" / "agentic-gateway-tests" / "e2b-js"


@pytest.fixture
async def gateway(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    d = Path(tempfile.mkdtemp(prefix="agw-e2b-data-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    config = parse_config({
        "server": {"api_keys": [KEY], "e2b": {"enabled": True}},
        "llm": {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m1": {"provider": "local"}}},
        "sandbox": {"backend": "process", "state_dir": str(d / "state"),
                    "pool": {"min_ready": 1, "max_total": 6}},
    })
    try:
        async for url in serve_app(config):
            async with httpx.AsyncClient() as client:
                ready = (await client.get(url + "/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            # The three variables a user sets; nothing else.
            monkeypatch.setenv("E2B_API_URL", url + "/e2b")
            monkeypatch.setenv("E2B_SANDBOX_URL", url)
            monkeypatch.setenv("E2B_API_KEY", KEY)
            yield url
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_commands(gateway: str) -> None:
    from e2b import AsyncSandbox, CommandExitException
    sb = await AsyncSandbox.create()
    try:
        r = await sb.commands.run("echo hi")
        assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "", 0)
        out: list[str] = []
        r = await sb.commands.run("echo a; echo b >&2; exit 0", on_stdout=out.append)
        assert out == ["a\n"] and r.stderr == "b\n"
        with pytest.raises(CommandExitException) as info:
            await sb.commands.run("exit 3")
        assert info.value.exit_code == 3
        # Background: the handle has the pid; wait() gives the result.
        h = await sb.commands.run("sleep 0.2; echo done", background=True)
        assert h.pid > 0
        assert (await h.wait()).stdout == "done\n"
        # connect() to a running command by pid: its output so far and to come.
        h = await sb.commands.run("echo early; sleep 0.3; echo late", background=True)
        again = await sb.commands.connect(h.pid)
        assert (await again.wait()).stdout == "early\nlate\n"
        await h.disconnect()
        # kill() ends a running one; it is gone from the list.
        h = await sb.commands.run("sleep 60", background=True)
        assert h.pid in [p.pid for p in await sb.commands.list()]
        assert await h.kill() is True
        with pytest.raises(CommandExitException):
            await h.wait()
        assert h.pid not in [p.pid for p in await sb.commands.list()]
        # A command past its timeout: the SDK's TimeoutException, the command killed.
        with pytest.raises(e2b.TimeoutException):
            await sb.commands.run("sleep 30", timeout=1)
        for _ in range(100):  # the kill lands as the deadline passes; bounded wait for it
            if not [p for p in await sb.commands.list() if "sleep 30" in " ".join(p.args)]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the timed-out command is still running")
        # stdin: sent to a background command, then closed (EOF ends `cat`).
        h = await sb.commands.run("cat", background=True, stdin=True)
        await sb.commands.send_stdin(h.pid, "fed in\n")
        await sb.commands.close_stdin(h.pid)
        assert (await h.wait()).stdout == "fed in\n"
        # Without stdin=True, stdin is closed at once, as envd does.
        assert (await sb.commands.run("cat; echo end")).stdout == "end\n"
        # envs and cwd (E2B's /home/user is the sandbox's work dir).
        r = await sb.commands.run("echo $GREETING; pwd", envs={"GREETING": "hej"},
                                  cwd="/home/user")
        assert r.stdout.splitlines() == ["hej", "/work"]
        # A bad argument is the SDK's InvalidArgumentException, naming the field.
        from e2b import InvalidArgumentException
        with pytest.raises(InvalidArgumentException) as bad:
            await sb.commands.run("true", cwd="/home/user/no-such-dir")
        assert "process.cwd" in str(bad.value)
    finally:
        await sb.kill()


async def test_files(gateway: str) -> None:
    from e2b import AsyncSandbox, FileNotFoundException, FileType
    sb = await AsyncSandbox.create()
    try:
        info = await sb.files.write("/home/user/notes/a.txt", "hello")
        assert info.path.endswith("notes/a.txt") and info.name == "a.txt"
        assert await sb.files.read("/home/user/notes/a.txt") == "hello"
        assert await sb.files.read("notes/a.txt", format="bytes") == b"hello"
        await sb.files.write("b.bin", b"\x00\x01")
        names = {e.name: e.type for e in await sb.files.list("/home/user")}
        assert names["notes"] == FileType.DIR and names["b.bin"] == FileType.FILE
        assert await sb.files.make_dir("/home/user/sub") is True
        assert await sb.files.make_dir("/home/user/sub") is False  # already there
        moved = await sb.files.rename("/home/user/b.bin", "/home/user/sub/c.bin")
        assert moved.name == "c.bin"
        assert await sb.files.exists("/home/user/sub/c.bin")
        assert not await sb.files.exists("/home/user/b.bin")
        deep = await sb.files.list("/home/user", depth=2)
        assert "c.bin" in {e.name for e in deep}
        entry = await sb.files.get_info("/home/user/notes/a.txt")
        assert entry.size == 5 and entry.type == FileType.FILE
        await sb.files.remove("/home/user/notes")
        assert not await sb.files.exists("/home/user/notes/a.txt")
        with pytest.raises(FileNotFoundException):
            await sb.files.read("/home/user/missing.txt")
        with pytest.raises(e2b.SandboxException) as outside:
            await sb.files.write("/etc/passwd", "x")
        assert "path" in str(outside.value)
        # Streamed (file-like: octet-stream) and gzip-compressed uploads.
        import io
        await sb.files.write("/home/user/big.bin", io.BytesIO(b"z" * 300_000))
        assert (await sb.files.get_info("/home/user/big.bin")).size == 300_000
        await sb.files.write("/home/user/g.txt", "squeezed " * 1000, gzip=True)
        assert await sb.files.read("/home/user/g.txt") == "squeezed " * 1000
        async with httpx.AsyncClient(base_url=gateway) as client:
            r = await client.post("/files", params={"path": "/home/user/x"},
                                  content=b"not gzip",
                                  headers={"E2b-Sandbox-Id": sb.sandbox_id,
                                           "E2b-Sandbox-Port": "49983",
                                           "X-Access-Token": sb._envd_access_token or "",
                                           "Content-Type": "application/octet-stream",
                                           "Content-Encoding": "gzip"})
            assert r.status_code == 400 and "Content-Encoding" in r.json()["message"]
        # A directory watch: the SDK's stream reports what changed, by name.
        from e2b import FilesystemEventType
        seen: list[tuple[str, FilesystemEventType]] = []
        got = asyncio.Event()

        def on_event(event: e2b.FilesystemEvent) -> None:
            seen.append((event.name, event.type))
            got.set()
        handle = await sb.files.watch_dir("/home/user", on_event, timeout=30)
        await sb.files.write("/home/user/watched.txt", "w")
        await asyncio.wait_for(got.wait(), 20)
        await handle.stop()
        assert ("watched.txt", FilesystemEventType.CREATE) in seen
        # What a file written by the SDK holds, a command sees.
        await sb.files.write("/home/user/data.csv", "x,y\n1,2\n")
        assert (await sb.commands.run("wc -l < data.csv")).stdout.strip() == "2"
    finally:
        await sb.kill()


async def test_lifecycle_and_data_plane_auth(gateway: str) -> None:
    from e2b import AsyncSandbox, AuthenticationException
    sb = await AsyncSandbox.create(metadata={"who": "lifecycle"})
    assert await sb.is_running()
    await sb.set_timeout(120)
    listed = await AsyncSandbox.list().next_items()
    assert sb.sandbox_id in [s.sandbox_id for s in listed]
    # Another client connects by id and reaches the same sandbox's files and commands.
    await sb.files.write("/home/user/mark", "here")
    again = await AsyncSandbox.connect(sb.sandbox_id)
    assert await again.files.read("/home/user/mark") == "here"
    h = await sb.commands.run("sleep 30", background=True)
    assert h.pid in [p.pid for p in await again.commands.list()]
    await again.commands.kill(h.pid)
    # The data plane wants the sandbox's own token, compared in constant time.
    async with httpx.AsyncClient(base_url=gateway) as client:
        headers = {"E2b-Sandbox-Id": sb.sandbox_id, "E2b-Sandbox-Port": "49983"}
        r = await client.get("/health", headers=headers)
        assert r.status_code == 401 and "X-Access-Token" in r.json()["message"]
        r = await client.get("/health", headers={**headers, "X-Access-Token": "0" * 64})
        assert r.status_code == 401
        r = await client.post("/process.Process/List", json={},
                              headers={**headers, "X-Access-Token": "bad"})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        r = await client.get("/health", headers={**headers, "E2b-Sandbox-Port": "8080",
                                                 "X-Access-Token": sb._envd_access_token})
        assert r.status_code == 502 and "port 8080 is not open" in r.json()["message"]
        # Without the header, /health is the gateway's own.
        assert (await client.get("/health")).json()["status"] == "ok"
    # Killed while a command streams: the stream ends with the SDK's error, no hang.
    h = await sb.commands.run("sleep 60", background=True)
    await sb.kill()
    with pytest.raises(e2b.SandboxException):
        await asyncio.wait_for(h.wait(), 30)
    assert not await sb.is_running()
    with pytest.raises(e2b.SandboxException) as gone:
        await sb.files.read("/home/user/mark")
    assert "was not found" in str(gone.value)
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create(api_key="sk-wrong")


async def test_code_interpreter(gateway: str) -> None:
    from e2b_code_interpreter import AsyncSandbox
    sb = await AsyncSandbox.create()
    try:
        await sb.run_code("x = 1")
        ex = await sb.run_code("x + 1")
        assert ex.results[0].text == "2" and ex.text == "2" and ex.error is None
        ex = await sb.run_code("1 / 0")
        assert ex.error is not None and ex.error.name == "ZeroDivisionError"
        assert "division by zero" in ex.error.value and ex.error.traceback
        lines: list[str] = []
        ex = await sb.run_code("print('one'); print('two')",
                               on_stdout=lambda m: lines.append(m.line))
        assert "".join(lines) == "one\ntwo\n" == "".join(ex.logs.stdout)
        # A display()ed object and the value are separate results; only the value is main.
        ex = await sb.run_code("display('shown'); 'value'")
        assert [(r.text, r.is_main_result) for r in ex.results] == [
            ("'shown'", False), ("'value'", True)]
        js = await sb.create_code_context(language="javascript", cwd="/home/user")
        assert js.language == "javascript" and js.cwd == "/work"
        await sb.run_code("const y = 40", context=js)
        ex = await sb.run_code("y + 2", context=js)
        assert ex.results[0].text == "42"
        ids = {c.id for c in await sb.list_code_contexts()}
        assert js.id in ids
        await sb.restart_code_context(js)
        ex = await sb.run_code("typeof y", context=js)
        assert ex.results[0].text == "'undefined'"
        await sb.remove_code_context(js)
        assert js.id not in {c.id for c in await sb.list_code_contexts()}
        with pytest.raises(e2b.NotFoundException):
            await sb.run_code("1", context=js)
        with pytest.raises(e2b.SandboxException) as bad:
            await sb.run_code("1", language="cobol")
        assert "language" in str(bad.value)
        # A rich object's MIME bundle: its PNG is the Result's png, base64 as E2B sends it.
        ex = await sb.run_code("class Img:\n    def _repr_png_(self):\n"
                               "        return b'\\x89PNG-bytes'\nImg()")
        assert ex.results[0].png == "iVBORy1ieXRlcw=="  # base64 of b"\x89PNG-bytes"
        assert ex.results[0].text.startswith("<__main__.Img object")
        has_mpl = await sb.run_code("import importlib.util as u; "
                                    "u.find_spec('matplotlib') is not None")
        if has_mpl.text != "True":
            pytest.skip("matplotlib is not installed in the sandbox's python")
        ex = await sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\n"
                               "plt.show()")
        assert ex.results and ex.results[0].png
    finally:
        await sb.kill()


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_API_URL=url + "/e2b", E2B_SANDBOX_URL=url, E2B_API_KEY=KEY)
    return env


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()


async def test_python_quickstart_runs_unchanged(gateway: str) -> None:
    code, out = await _run([sys.executable, str(ROOT / "examples" / "e2b_quickstart.py")],
                           _env(gateway), ROOT)
    assert code == 0, out
    assert "2\n" in out and "hello from the gateway" in out and "Linux" in out


async def _npm_e2b() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for E2B's JS SDK")
    if not (NPM_CACHE / "node_modules" / "e2b" / "package.json").exists():
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        code, out = await _run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                                "--prefix", str(NPM_CACHE), "e2b@^2"], dict(os.environ),
                               NPM_CACHE)
        if code != 0:
            pytest.skip(f"npm install e2b failed here: {out[-500:]}")
    return NPM_CACHE


async def test_js_quickstart_runs_unchanged(gateway: str) -> None:
    cache = await _npm_e2b()
    env = _env(gateway)
    env["NODE_PATH"] = str(cache / "node_modules")
    script = cache / "e2b_quickstart.mjs"
    # ESM resolves packages next to the script, not by NODE_PATH: run a copy from the cache.
    shutil.copy(ROOT / "examples" / "e2b_quickstart.mjs", script)
    code, out = await _run(["node", str(script)], env, cache)
    assert code == 0, out
    assert "hello from the gateway" in out and "Linux" in out


async def test_connect_rpc_wire(gateway: str) -> None:
    """The protocol below the SDK: binary protobuf as well as JSON, the envelope framing of
    a server stream and its end message, errors as connect's JSON with their codes."""
    import struct

    from e2b import AsyncSandbox

    from gateway_server.e2b_data._envd.filesystem import filesystem_pb as fs
    from gateway_server.e2b_data._envd.process import process_pb as proc
    sb = await AsyncSandbox.create()
    headers = {"E2b-Sandbox-Id": sb.sandbox_id, "E2b-Sandbox-Port": "49983",
               "X-Access-Token": sb._envd_access_token or ""}
    try:
        async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as c:
            await sb.files.write("/home/user/w.txt", "12345")
            r = await c.post("/filesystem.Filesystem/Stat",
                             content=fs.StatRequest(path="/home/user/w.txt").to_binary(),
                             headers={"content-type": "application/proto"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/proto"
            entry = fs.StatResponse.from_binary(r.content).entry
            assert entry is not None and entry.size == 5 and entry.type == fs.FileType.FILE
            assert entry.path == "/work/w.txt" and entry.permissions.startswith("-rw")
            # Unary errors: connect's JSON, the code the SDK maps, the field named.
            r = await c.post("/filesystem.Filesystem/Stat", json={"path": "/home/user/nope"})
            assert r.status_code == 404 and r.json()["code"] == "not_found"
            r = await c.post("/filesystem.Filesystem/Stat", json={"path": "/etc/passwd"})
            assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
            assert "(field: path)" in r.json()["message"]
            r = await c.post("/filesystem.Filesystem/Stat", json={"nope": 1})
            assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
            # The non-streaming watcher calls (the Python sync SDK's WatchHandle).
            r = await c.post("/filesystem.Filesystem/CreateWatcher",
                             json={"path": "/home/user", "recursive": True})
            wid = r.json()["watcherId"]
            await sb.files.write("/home/user/deep/new.txt", "n")
            r = await c.post("/filesystem.Filesystem/GetWatcherEvents",
                             json={"watcherId": wid})
            events = {(e["name"], e["type"]) for e in r.json()["events"]}
            assert ("deep/new.txt", "EVENT_TYPE_CREATE") in events
            r = await c.post("/filesystem.Filesystem/GetWatcherEvents",
                             json={"watcherId": wid})
            assert r.json().get("events", []) == []  # only what changed since
            await c.post("/filesystem.Filesystem/RemoveWatcher", json={"watcherId": wid})
            r = await c.post("/filesystem.Filesystem/GetWatcherEvents",
                             json={"watcherId": wid})
            assert r.json()["code"] == "not_found" and "watcher_id" in r.json()["message"]
            # A server stream in binary: flags byte + 4-byte length per message, then the
            # end-of-stream message (flag 2) holding no error.
            req = proc.StartRequest(process=proc.ProcessConfig(cmd="/bin/sh",
                                                               args=["-c", "echo hi; exit 4"]))
            body = req.to_binary()
            r = await c.post("/process.Process/Start",
                             content=struct.pack(">BI", 0, len(body)) + body,
                             headers={"content-type": "application/connect+proto"})
            assert r.status_code == 200
            data, frames = r.content, []
            while data:
                flags, n = struct.unpack(">BI", data[:5])
                frames.append((flags, data[5:5 + n]))
                data = data[5 + n:]
            assert frames[-1] == (2, b"{}")
            events = [proc.StartResponse.from_binary(f).event for _, f in frames[:-1]]
            kinds = [e.event.field for e in events if e is not None and e.event is not None]
            assert kinds[0] == "start" and kinds[-1] == "end" and "data" in kinds
            end = events[-1].event.value  # type: ignore[union-attr]
            assert isinstance(end, proc.ProcessEvent.EndEvent) and end.exit_code == 4
            # A stream that fails ends with the error in its end message.
            r = await c.post("/process.Process/Connect",
                             content=_envelope(b'{"process": {"pid": 999999}}'),
                             headers={"content-type": "application/connect+json"})
            last = r.content[r.content.rindex(b"\x02\x00"):]
            assert b'"not_found"' in last
            r = await c.post("/process.Process/Start",
                             content=_envelope(b'{"process": {"cmd": "sh"}, "pty": {}}'),
                             headers={"content-type": "application/connect+json"})
            assert b'"unimplemented"' in r.content and b"pty" in r.content
    finally:
        await sb.kill()


def _envelope(body: bytes) -> bytes:
    import struct
    return struct.pack(">BI", 0, len(body)) + body
