"""The host side of Firecracker's vsock (``CONNECT <port>`` / ``OK <n>``, then the agent's
frames) against a stand-in for Firecracker's vsock muxer that relays to the real agent; the
muxer refuses the first connections, as Firecracker does while nothing listens in the guest."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.backends.firecracker import vsock
from gateway_sandbox.protocol import AgentClient, Execute, Result
from gateway_sandbox.runtimes import RUNTIMES


class Muxer:
    """Listens where Firecracker's vsock socket would be; relays port 52 to an agent."""

    def __init__(self, path: Path, workdir: Path, refuse_first: int) -> None:
        self.path = path
        self.workdir = workdir
        self.refuse_left = refuse_first
        self.requests: list[bytes] = []
        self.agents: list[asyncio.subprocess.Process] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.requests.append(line)
        if line != b"CONNECT 52\n" or self.refuse_left > 0:
            self.refuse_left -= 1
            writer.close()  # what Firecracker does when no guest listener accepts
            return
        agent = await asyncio.create_subprocess_exec(
            sys.executable, str(AGENT_PATH), "--stdio", "--workdir", str(self.workdir),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.agents.append(agent)
        assert agent.stdin is not None and agent.stdout is not None
        writer.write(b"OK 1073741824\n")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, agent.stdin), pump(agent.stdout, writer))  # type: ignore[arg-type]


@pytest.fixture
async def muxer() -> AsyncIterator[Muxer]:
    d = Path(tempfile.mkdtemp(prefix="vs", dir="/tmp"))
    (d / "work").mkdir()
    mux = Muxer(d / "v.sock", d / "work", refuse_first=3)
    server = await asyncio.start_unix_server(mux.handle, str(mux.path))
    try:
        yield mux
    finally:
        server.close()
        for agent in mux.agents:
            with contextlib.suppress(ProcessLookupError):
                agent.kill()
            await agent.wait()
        await server.wait_closed()
        shutil.rmtree(d, ignore_errors=True)


async def test_connect_handshake_then_agent_frames(muxer: Muxer) -> None:
    for _ in range(3):  # refused while "nothing listens in the guest"
        with pytest.raises((vsock.VsockRefused, ConnectionError)):
            await vsock.connect(str(muxer.path), 52)
    reader, writer = await vsock.connect(str(muxer.path), 52)
    client = await AgentClient.connect(reader, writer, timeout_s=10)
    try:
        msg = Execute(id=client.new_id(), runtime=RUNTIMES["python"], code="print(1 + 1)",
                      timeout_s=20, max_output_bytes=4096)
        queue = await client.send(msg)
        reply = await asyncio.wait_for(queue.get(), 30)
        while not isinstance(reply, Result):
            reply = await asyncio.wait_for(queue.get(), 30)
        assert reply.stdout == "2\n"
    finally:
        await client.aclose()
    assert muxer.requests == [b"CONNECT 52\n"] * 4
