"""Egress from inside real bubblewrap jails through the gateway's proxy: loopback servers
stand for the internet, and the proxy's test-only resolver maps allowed.test and
denied.test to them."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import structlog.testing

from gateway_core.config.sandbox import EgressConfig, SandboxConfig
from gateway_core.errors import InvalidRequest, PermissionDenied
from gateway_sandbox import BackendUnavailable, Sandbox, SandboxManager
from gateway_sandbox.egress import EgressProxy
from tests.fakes.egress_upstreams import ALLOWED, BIG_BYTES, DENIED, Upstreams, upstreams
from tests.sandbox.conftest import make_config

pytestmark = pytest.mark.timeout(180)


class Recorder:
    """An EgressObserver that keeps what it was told (as the server's Prometheus one
    counts it)."""

    def __init__(self) -> None:
        self.decisions: list[str] = []
        self.sent = 0
        self.received = 0

    def on_egress(self, decision: str) -> None:
        self.decisions.append(decision)

    def on_egress_bytes(self, sent: int, received: int) -> None:
        self.sent += sent
        self.received += received


@pytest.fixture(scope="module")
def servers() -> Iterator[Upstreams]:
    with tempfile.TemporaryDirectory() as d, upstreams(Path(d)) as ups:
        yield ups


def egress_config(**kw: object) -> EgressConfig:
    return EgressConfig(allow_private_for_tests=True,
                        resolve={ALLOWED: "127.0.0.1", DENIED: "127.0.0.1"},
                        **kw)  # type: ignore[arg-type]


async def start(state_dir: Path, egress: EgressConfig,
                recorder: Recorder) -> tuple[SandboxManager, EgressProxy]:
    cfg = msgspec.structs.replace(make_config(state_dir, min_ready=0), egress=egress)
    proxy = EgressProxy(egress, recorder)
    await proxy.start()
    manager = SandboxManager.from_config(cfg, egress=proxy)
    try:
        await manager.start()
    except BackendUnavailable as exc:
        await proxy.aclose()
        pytest.skip(f"bubblewrap jails are unavailable here: {exc.message}")
    return manager, proxy


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def egress_manager(state_dir: Path, recorder: Recorder,
                         ) -> AsyncIterator[SandboxManager]:
    manager, proxy = await start(state_dir, egress_config(), recorder)
    try:
        yield manager
    finally:
        await asyncio.wait_for(manager.aclose(), 60)
        await proxy.aclose()


async def run_py(sb: Sandbox, code: str) -> dict[str, object]:
    """Run ``code`` in the sandbox; it prints one JSON object as its last line."""
    res = await sb.execute(code, runtime="python", timeout_s=60)
    assert res.exit_code == 0, res.stderr
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


FETCH = """
import json, ssl, urllib.request, urllib.error
def fetch(url, cafile=None):
    ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=20, context=ctx) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:  # refused, reset, cut short
        return {"status": None, "body": repr(e)}
"""


async def test_allowed_host_reached_denied_host_gets_readable_403(
        egress_manager: SandboxManager, servers: Upstreams, recorder: Recorder) -> None:
    sb = await egress_manager.create("python", network=[ALLOWED])
    network = sb.info().network
    assert network is not None and network.allow == [ALLOWED]
    with structlog.testing.capture_logs() as logs:
        out = await run_py(sb, FETCH + f"""
print(json.dumps({{"ok": fetch("http://{ALLOWED}:{servers.http_allowed}/hello?x=1"),
                  "no": fetch("http://{DENIED}:{servers.http_denied}/")}}))
""")
    ok, no = out["ok"], out["no"]
    assert isinstance(ok, dict) and isinstance(no, dict)
    assert ok["status"] == 200
    assert ok["body"].startswith("hello from allowed")
    assert f"Host: {ALLOWED}:{servers.http_allowed}" in ok["body"]
    assert "path /hello?x=1" in ok["body"]
    assert no["status"] == 403
    assert f"host {DENIED} is not allowed" in no["body"]
    egress_logs = [e for e in logs if e["event"] == "sandbox_egress"]
    assert {(e["host"], e["decision"]) for e in egress_logs} == {(ALLOWED, "allowed"),
                                                                 (DENIED, "denied")}
    allowed = next(e for e in egress_logs if e["decision"] == "allowed")
    assert allowed["sandbox"] == sb.id and allowed["port"] == servers.http_allowed
    assert allowed["received"] > 0 and allowed["sent"] > 0
    assert sorted(recorder.decisions) == ["allowed", "denied"]
    assert recorder.received == allowed["received"]


async def test_https_through_connect_and_sni_must_match(
        egress_manager: SandboxManager, servers: Upstreams) -> None:
    sb = await egress_manager.create("python", network=[ALLOWED])
    await sb.write_file("ca.pem", servers.ca.read_bytes())
    with structlog.testing.capture_logs() as logs:
        out = await run_py(sb, FETCH + f"""
import socket
good = fetch("https://{ALLOWED}:{servers.https}/secure", cafile="ca.pem")
# A tunnel opened for allowed.test whose ClientHello names denied.test.
raw = socket.create_connection(("127.0.0.1", 3128), timeout=20)
raw.sendall(b"CONNECT {ALLOWED}:{servers.https} HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n")
head = raw.recv(4096).decode()
ctx = ssl.create_default_context(cafile="ca.pem")
try:
    ctx.wrap_socket(raw, server_hostname="{DENIED}").close()
    sni = "handshake completed"
except (ssl.SSLError, OSError) as e:
    sni = "refused: " + type(e).__name__
denied = fetch("https://{DENIED}:{servers.https}/", cafile="ca.pem")
print(json.dumps({{"good": good, "head": head, "sni": sni, "denied": denied}}))
""")
    good = out["good"]
    assert isinstance(good, dict)
    assert good["status"] == 200 and good["body"].startswith("hello from tls")
    assert str(out["head"]).startswith("HTTP/1.1 200")
    assert str(out["sni"]).startswith("refused")
    # urllib reports a refused CONNECT as an OSError carrying the proxy's status line.
    denied = out["denied"]
    assert isinstance(denied, dict) and "403" in denied["body"]
    decisions = [(e["kind"], e["decision"], e.get("reason") or "") for e in logs
                 if e["event"] == "sandbox_egress"]
    assert ("connect", "allowed", "") in decisions
    assert any(k == "connect" and d == "denied" and "SNI must match" in r
               for k, d, r in decisions)
    assert any(k == "connect" and d == "denied" and "not allowed" in r
               for k, d, r in decisions)


async def test_no_route_out_but_the_proxy(egress_manager: SandboxManager,
                                          servers: Upstreams) -> None:
    sb = await egress_manager.create("python", network=[ALLOWED])
    out = await run_py(sb, f"""
import json, socket
def connect(addr):
    try:
        socket.create_connection(addr, timeout=5).close()
        return "connected"
    except OSError as e:
        return type(e).__name__ + ": " + str(e.errno)
print(json.dumps({{"server": connect(("127.0.0.1", {servers.http_allowed})),
                  "public": connect(("192.0.2.1", 80)),
                  "dns": connect(("{ALLOWED}", 80))}}))
""")
    # The jail's loopback is its own: the host's servers are not on it.
    assert str(out["server"]).startswith("ConnectionRefusedError")
    assert "101" in str(out["public"])  # ENETUNREACH: no interface but lo
    assert out["dns"] != "connected"


async def test_pip_download_from_an_index_on_an_allowed_name(
        egress_manager: SandboxManager, servers: Upstreams) -> None:
    sb = await egress_manager.create("python", network=[ALLOWED])
    await sb.write_file("ca.pem", servers.ca.read_bytes())
    # Over HTTPS, as pip reaches pypi.org: a CONNECT tunnel whose SNI is checked.
    index = f"https://{ALLOWED}:{servers.https}/simple"
    res = await sb.execute(
        "import subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps',"
        " '--no-cache-dir', '--disable-pip-version-check', '--cert', '/work/ca.pem',"
        f" '--index-url', '{index}', '-d', '/work/dl', 'tinypkg'])\n"
        "sys.exit(p.returncode)", runtime="python", timeout_s=60)
    if "No module named pip" in res.stderr:
        pytest.skip("the host's python3 has no pip")
    assert res.exit_code == 0, res.stdout + res.stderr
    names = [e.name for e in (await sb.list_files("dl"))[0]]
    assert names == ["tinypkg-0.1-py3-none-any.whl"]


async def test_no_network_by_default(egress_manager: SandboxManager,
                                     servers: Upstreams) -> None:
    sb = await egress_manager.create("python")
    assert sb.info().network is None
    assert "HTTP_PROXY" not in sb.env
    out = await run_py(sb, FETCH + f"""
import os
os.environ["HTTP_PROXY"] = "http://127.0.0.1:3128"
print(json.dumps(fetch("http://{ALLOWED}:{servers.http_allowed}/")))
""")
    assert out["status"] is None and "Connection refused" in str(out["body"])


async def test_bad_allow_entries_and_the_cap(state_dir: Path, recorder: Recorder) -> None:
    manager, proxy = await start(state_dir, egress_config(allow_cap=["*.test", "pypi.org"]),
                                 recorder)
    try:
        for bad in ("not a host", "*", "a.*.test", "http://x.test", "10.0.0.1", ""):
            with pytest.raises(InvalidRequest) as info:
                await manager.create("python", network=[ALLOWED, bad])
            assert info.value.param == "network.allow[1]", bad
        with pytest.raises(PermissionDenied) as denied:
            await manager.create("python", network=["files.pythonhosted.org"])
        assert denied.value.param == "network.allow[0]"
        assert "allow_cap" in denied.value.message
        assert manager.stats().active == 0
    finally:
        await manager.aclose()
        await proxy.aclose()


async def test_connection_cap_refuses_new_connections(
        state_dir: Path, servers: Upstreams, recorder: Recorder) -> None:
    manager, proxy = await start(state_dir, egress_config(max_connections=1), recorder)
    try:
        sb = await manager.create("python", network=[ALLOWED])
        out = await run_py(sb, FETCH + f"""
import socket
held = socket.create_connection(("127.0.0.1", 3128), timeout=20)
held.sendall(b"CONNECT {ALLOWED}:{servers.https} HTTP/1.1\\r\\n\\r\\n")
first = held.recv(4096).decode()
second = fetch("http://{ALLOWED}:{servers.http_allowed}/")
held.close()
import time
for _ in range(100):  # the proxy notices the close
    third = fetch("http://{ALLOWED}:{servers.http_allowed}/")
    if third["status"] == 200:
        break
    time.sleep(0.1)
print(json.dumps({{"first": first, "second": second, "third": third}}))
""")
        assert str(out["first"]).startswith("HTTP/1.1 200")
        second, third = out["second"], out["third"]
        assert isinstance(second, dict) and isinstance(third, dict)
        assert second["status"] == 403 and "open connections" in second["body"]
        assert third["status"] == 200
        assert "capped" in recorder.decisions
        # The gateway stays up and so does the sandbox.
        assert (await sb.execute("print(1)", runtime="python")).stdout == "1\n"
    finally:
        await manager.aclose()
        await proxy.aclose()


async def test_byte_cap_cuts_and_then_refuses(state_dir: Path, servers: Upstreams,
                                              recorder: Recorder) -> None:
    manager, proxy = await start(state_dir, egress_config(max_bytes=BIG_BYTES // 2), recorder)
    try:
        sb = await manager.create("python", network=[ALLOWED])
        with structlog.testing.capture_logs() as logs:
            out = await run_py(sb, FETCH + f"""
print(json.dumps({{"big": fetch("http://{ALLOWED}:{servers.http_allowed}/big"),
                  "after": fetch("http://{ALLOWED}:{servers.http_allowed}/")}}))
""")
        big, after = out["big"], out["after"]
        assert isinstance(big, dict) and isinstance(after, dict)
        assert big["status"] != 200 or len(big["body"]) < BIG_BYTES  # cut short
        assert after["status"] == 403 and "egress allowance" in after["body"]
        cut = next(e for e in logs if e["event"] == "sandbox_egress"
                   and e["decision"] == "allowed")
        assert "egress cap" in cut["reason"]
        assert cut["sent"] + cut["received"] == BIG_BYTES // 2
        assert recorder.decisions == ["allowed", "capped"]
    finally:
        await manager.aclose()
        await proxy.aclose()


async def test_delete_removes_the_sandbox_socket(egress_manager: SandboxManager) -> None:
    sb = await egress_manager.create("python", network=[ALLOWED])
    assert sb.egress is not None and sb.egress.path is not None
    path = sb.egress.path
    assert path.is_socket()
    await egress_manager.delete(sb.id)
    assert not path.exists()


def test_resolver_override_needs_allow_private_for_tests() -> None:
    with pytest.raises(ValueError, match="allow_private_for_tests"):
        EgressProxy(EgressConfig(resolve={ALLOWED: "127.0.0.1"}))
    assert SandboxConfig().egress.default_allow == []


async def test_firecracker_host_side_is_the_vms_vsock_listener(servers: Upstreams,
                                                              recorder: Recorder) -> None:
    """Firecracker turns a guest's vsock connection to host port 3128 into a connection to
    ``<uds_path>_3128`` in the VM's directory, bytes unchanged (its docs/vsock.md). No guest
    boots on this host (no hardware KVM), so this connects there as Firecracker would."""
    from gateway_sandbox.backends.firecracker import FirecrackerBackend
    from gateway_sandbox.backends.firecracker.backend import FirecrackerGuest
    from gateway_sandbox.backends.firecracker.vm import FirecrackerVM
    from gateway_sandbox.guest_layout import EGRESS_VSOCK_PORT

    d = Path(tempfile.mkdtemp(prefix="fce", dir="/tmp"))
    proxy = EgressProxy(egress_config(), recorder)
    await proxy.start()
    try:
        vm = FirecrackerVM("/usr/bin/firecracker", d / "vm")
        vm.dir.mkdir()
        backend = FirecrackerBackend(SandboxConfig(state_dir=str(d / "state")))
        guest = FirecrackerGuest(backend, "sbx_fc", vm, restored=False)
        route = guest.egress_route()
        assert route.host_path == d / "vm" / f"v.sock_{EGRESS_VSOCK_PORT}"
        assert (route.unix, route.vsock_port) == (None, EGRESS_VSOCK_PORT)
        allow = proxy.check_allow([ALLOWED])
        egress = await proxy.attach(guest.id, allow, route.host_path, route.uid)
        for host, status in ((ALLOWED, b"200"), (DENIED, b"403")):
            reader, writer = await asyncio.open_unix_connection(str(route.host_path))
            writer.write(f"GET http://{host}:{servers.http_allowed}/ HTTP/1.1\r\n"
                         f"Host: {host}\r\n\r\n".encode())
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            assert reply.split(b" ")[1] == status, reply
        await egress.aclose()
        assert not route.host_path.exists()
        assert recorder.decisions == ["allowed", "denied"]
    finally:
        await proxy.aclose()
        shutil.rmtree(d, ignore_errors=True)


async def test_egress_survives_pause_and_resume(egress_manager: SandboxManager,
                                                servers: Upstreams) -> None:
    from gateway_sandbox.errors import SandboxConflict

    sb = await egress_manager.create("python", network=[ALLOWED])
    path = sb.egress.path if sb.egress is not None else None
    try:
        await sb.pause()
    except SandboxConflict as exc:
        pytest.skip(f"process sandboxes cannot pause here: {exc.message}")
    await sb.resume()
    assert sb.egress is not None and sb.egress.path == path
    out = await run_py(sb, FETCH + f"""
print(json.dumps(fetch("http://{ALLOWED}:{servers.http_allowed}/again")))
""")
    assert out["status"] == 200 and "path /again" in str(out["body"])


async def test_a_flood_of_idle_connections_is_bounded(state_dir: Path, servers: Upstreams,
                                                      recorder: Recorder) -> None:
    # max_connections = 1: past 2 * 1 + 8 at once the proxy closes without reading.
    manager, proxy = await start(state_dir, egress_config(max_connections=1,
                                                          connect_timeout_s=60.0), recorder)
    try:
        sb = await manager.create("python", network=[ALLOWED])
        out = await run_py(sb, FETCH + f"""
import select, socket, time
socks = [socket.create_connection(("127.0.0.1", 3128), timeout=20) for _ in range(20)]
# The ones over the limit are closed at once; the others wait for a head (60 s).
pending, closed, deadline = list(socks), 0, time.monotonic() + 5
while pending and time.monotonic() < deadline:
    ready, _, _ = select.select(pending, [], [], max(0.0, deadline - time.monotonic()))
    for s in ready:
        pending.remove(s)
        try:
            closed += s.recv(1) == b""
        except OSError:
            closed += 1
for s in socks:
    s.close()
for _ in range(100):  # the proxy notices the closes
    after = fetch("http://{ALLOWED}:{servers.http_allowed}/")
    if after["status"] == 200:
        break
    time.sleep(0.1)
print(json.dumps({{"closed": closed, "after": after}}))
""")
        assert out["closed"] == 10
        after = out["after"]
        assert isinstance(after, dict) and after["status"] == 200
        assert recorder.decisions.count("capped") >= 10
    finally:
        await manager.aclose()
        await proxy.aclose()


async def test_curl_uses_the_proxy_variables(egress_manager: SandboxManager,
                                             servers: Upstreams) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    sb = await egress_manager.create("python", network=[ALLOWED])
    await sb.write_file("ca.pem", servers.ca.read_bytes())
    res = await sb.execute(
        "import subprocess\n"
        f"for url in ('http://{ALLOWED}:{servers.http_allowed}/c',"
        f" 'https://{ALLOWED}:{servers.https}/c', 'http://{DENIED}:{servers.http_denied}/'):\n"
        "    p = subprocess.run(['curl', '-sS', '--cacert', 'ca.pem', url],"
        " capture_output=True, text=True)\n"
        "    print(p.stdout.splitlines()[0] if p.stdout else p.stderr.strip())\n",
        runtime="python", timeout_s=60)
    assert res.exit_code == 0, res.stderr
    plain, tls, denied = res.stdout.splitlines()
    assert plain.startswith("hello from allowed") and tls.startswith("hello from tls")
    assert denied.startswith(f"egress denied: host {DENIED} is not allowed")
