"""The guest agent on its own, as a real process on the host (no jail): the frame protocol
over a pipe and over a Unix socket, malformed frames, and file confinement."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.protocol import AgentClient, Execute, Hello, Ping, Pong, Result
from gateway_sandbox.runtimes import RUNTIMES


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, object]:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    obj = json.loads(await reader.readexactly(n))
    assert isinstance(obj, dict)
    return obj


@pytest.fixture
async def socket_agent(tmp_path: Path) -> AsyncIterator[Path]:
    sock = tmp_path / "agent.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(AGENT_PATH), "--unix", str(sock),
        "--workdir", str(tmp_path / "work"), "--tmpdir", str(tmp_path))
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.025)
        yield sock
    finally:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def test_stdio_transport_with_the_host_client(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(AGENT_PATH), "--stdio", "--workdir", str(tmp_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # The host side of the protocol works over any pair of streams.
        client = await AgentClient.connect(proc.stdout, proc.stdin)  # type: ignore[arg-type]
        assert client.hello.protocol == 2
        await client.ping()
        msg = Execute(id=client.new_id(), runtime=RUNTIMES["python"],
                      code="print(input() * 2)", timeout_s=10, max_output_bytes=1024,
                      stdin="ab")
        reply = await client.call(msg, 20)
        assert isinstance(reply, Result)
        assert (reply.stdout, reply.exit_code) == ("abab\n", 0)
        await client.aclose()
        # Closing the only connection of a --stdio agent ends it.
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_malformed_frame_closes_only_that_connection(socket_agent: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(socket_agent))
    hello = await read_frame(reader)
    assert hello["type"] == "hello" and hello["protocol"] == 2
    writer.write(struct.pack(">I", 5) + b"{nope")
    await writer.drain()
    err = await read_frame(reader)
    assert err["code"] == "malformed_frame"
    assert await reader.read() == b""  # that connection is closed...
    writer.close()
    # ...but the agent still serves new ones.
    reader, writer = await asyncio.open_unix_connection(str(socket_agent))
    client = await AgentClient.connect(reader, writer)
    reply = await client.call(Ping(id=client.new_id()), 5)
    assert isinstance(reply, Pong) and isinstance(client.hello, Hello)
    await client.aclose()


async def test_frames_without_id_or_op_and_unknown_ops(socket_agent: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(socket_agent))
    await read_frame(reader)
    writer.write(frame({"id": 7, "op": "reboot"}))
    await writer.drain()
    assert (await read_frame(reader))["code"] == "unknown_op"
    writer.write(frame({"op": "ping"}))
    await writer.drain()
    assert (await read_frame(reader))["code"] == "malformed_frame"
    writer.close()


async def test_output_cap_and_streamed_chunks(socket_agent: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(socket_agent))
    await read_frame(reader)
    writer.write(frame({"id": 1, "op": "execute", "runtime": {
        "name": "python", "file": "m.py", "run": [sys.executable, "{file}"]},
        "code": "print('y' * 5000)", "max_output_bytes": 100, "stream": True,
        "timeout_s": 10}))
    await writer.drain()
    got: list[dict[str, object]] = []
    for _ in range(100):
        got.append(await asyncio.wait_for(read_frame(reader), 20))
        if got[-1]["type"] == "result":
            break
    result = got[-1]
    assert result["truncated"] is True and result["stdout"] == "y" * 100
    assert "".join(str(f["data"]) for f in got[:-1]) == "y" * 100
    writer.close()


async def test_agent_rejects_paths_outside_its_workdir(socket_agent: Path,
                                                       tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "work" / "etc")
    reader, writer = await asyncio.open_unix_connection(str(socket_agent))
    await read_frame(reader)
    for i, path in enumerate(["../outside", "/etc/hostname", "etc/hostname"]):
        writer.write(frame({"id": i, "op": "read_file", "path": path}))
        await writer.drain()
        assert (await read_frame(reader))["code"] == "invalid_path"
    data = base64.b64encode(b"ok").decode()
    writer.write(frame({"id": 9, "op": "write_file", "path": "in/side.txt", "data": data}))
    await writer.drain()
    assert (await read_frame(reader))["type"] == "written"
    assert (tmp_path / "work" / "in" / "side.txt").read_bytes() == b"ok"
    writer.close()


def test_tty_transport(tmp_path: Path) -> None:
    """Serial-port mode (the QEMU image test uses it): the agent opens a tty by path."""
    import subprocess
    import termios
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    attrs = termios.tcgetattr(master)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(master, termios.TCSANOW, attrs)
    proc = subprocess.Popen([sys.executable, "-I", str(AGENT_PATH), "--tty", os.ttyname(slave),
                             "--workdir", str(tmp_path)])
    try:
        def read_exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = os.read(master, n - len(buf))
                assert chunk
                buf += chunk
            return buf

        def read() -> dict[str, object]:
            (n,) = struct.unpack(">I", read_exact(4))
            obj = json.loads(read_exact(n))
            assert isinstance(obj, dict)
            return obj

        assert read()["type"] == "hello"
        os.write(master, frame({"id": 1, "op": "ping"}))
        assert read() == {"id": 1, "type": "pong"}
        os.write(master, frame({"id": 2, "op": "execute", "code": "print(6 * 7)",
                                "runtime": {"name": "python", "file": "m.py",
                                            "run": [sys.executable, "{file}"]}}))
        result = read()
        assert (result["type"], result["stdout"]) == ("result", "42\n")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(master)
        os.close(slave)
