"""Host side of Firecracker's vsock: connect to the VM's Unix socket, ask for a guest port
with ``CONNECT <port>\\n`` and read ``OK <host port>\\n``; the agent's frames follow.
(https://github.com/firecracker-microvm/firecracker/blob/main/docs/vsock.md)"""

from __future__ import annotations

import asyncio

__all__ = ["VsockRefused", "connect"]

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
