"""Host side of Firecracker's vsock: connect to the VM's Unix socket, ask for a guest port
with ``CONNECT <port>\\n`` and read ``OK <host port>\\n``; the agent's frames follow.
(https://github.com/firecracker-microvm/firecracker/blob/main/docs/vsock.md) Also the wait
for a VM's guest agent to say hello on it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway_sandbox.errors import BackendUnavailable
from gateway_sandbox.protocol import AgentClient, ConnectionLost

if TYPE_CHECKING:
    from gateway_sandbox.backends.firecracker.vm import FirecrackerVM

__all__ = ["VsockRefused", "connect", "wait_for_agent"]

# Frames can be large (file uploads): raise the reader's buffer limit accordingly.
_READER_LIMIT = 1 << 20


class VsockRefused(ConnectionError):
    """Nothing listens on that guest port yet (Firecracker closed the connection)."""


async def connect(uds_path: str, port: int, timeout_s: float = 2.0,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(uds_path, limit=_READER_LIMIT), timeout_s)
    try:
        writer.write(f"CONNECT {port}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        if not line.startswith(b"OK "):
            raise VsockRefused(f"guest port {port} refused: {line.decode(errors='replace')!r}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def wait_for_agent(vm: FirecrackerVM, port: int, timeout_s: float, *,
                         keep: bool = False) -> AgentClient | None:
    """Connect over vsock until the agent's hello arrives. Raises BackendUnavailable with the
    tail of the guest console when the VM dies or the agent does not answer in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no attempt"
    while True:
        if not vm.alive():
            raise BackendUnavailable(
                f"the Firecracker process exited with {vm.returncode} before the guest agent "
                f"answered; guest console tail:\n{vm.console_tail()}")
        left = deadline - loop.time()
        if left <= 0:
            raise BackendUnavailable(
                f"the guest agent did not answer on vsock port {port} within {timeout_s} s "
                f"(last: {last}); guest console tail:\n{vm.console_tail()}")
        try:
            reader, writer = await connect(str(vm.vsock_socket), port,
                                                 timeout_s=min(left, 2.0))
            client = await AgentClient.connect(reader, writer, timeout_s=min(left, 5.0))
        except (TimeoutError, OSError, ConnectionLost) as exc:
            last = repr(exc)
            await asyncio.sleep(0.005)
            continue
        if keep:
            return client
        await client.aclose()
        return None
