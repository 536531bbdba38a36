"""The gateway's descriptors stay out of its jails, under uvloop too (which serves the gateway
when installed, and whose subprocess_exec passes inheritable descriptors on regardless of
close_fds): an inheritable listening socket like hypercorn's is not in the jail's agent."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from gateway_sandbox import BackendUnavailable, SandboxManager
from tests.sandbox.conftest import make_config

PROBE = """
import os
seen = set()
for pid in ("1", "self"):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            seen.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
print(sorted(seen))
"""


async def _jail_descriptors(state_dir: Path, listener: socket.socket) -> str:
    m = SandboxManager.from_config(make_config(state_dir, min_ready=0))
    try:
        await m.start()
    except BackendUnavailable as exc:
        pytest.skip(f"bubblewrap jails are unavailable here: {exc.message}")
    try:
        sb = await m.create("python")
        result = await sb.execute(PROBE)
        assert result.exit_code == 0, result.stderr
        return result.stdout
    finally:
        await asyncio.wait_for(m.aclose(), 60)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_gateways_listening_socket_is_not_in_the_jail(state_dir: Path, loop: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.set_inheritable(True)  # as hypercorn makes its sockets
    inode = os.fstat(listener.fileno()).st_ino
    try:
        if loop == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            seen = uvloop.run(_jail_descriptors(state_dir, listener))
        else:
            seen = asyncio.run(_jail_descriptors(state_dir, listener))
    finally:
        listener.close()
    assert f"socket:[{inode}]" not in seen
