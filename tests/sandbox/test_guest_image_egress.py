"""The agent's egress forwarder in a real guest kernel (the built image under QEMU's TCG, as
in test_guest_image): ``egress_start`` brings ``lo`` up if init left it down and listens on
127.0.0.1:3128. QEMU's microvm here has no vsock device, so a connection gets the
forwarder's 502 saying the proxy is unreachable (the vsock hop itself needs Firecracker on
hardware KVM: docs/firecracker.md, "Egress")."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.guest_layout import EGRESS_PROXY_PORT, EGRESS_VSOCK_PORT
from gateway_sandbox.image import GuestImage
from gateway_sandbox.image.builder import GUEST_AGENT
from gateway_sandbox.protocol import EgressStart, Ok
from tests.sandbox.test_guest_image import (
    _debugfs_cat,
    _execute,
    _qemu_agent,
    image,
    short_dir,
)

__all__ = ["image", "short_dir"]  # the fixtures, shared with test_guest_image

_LO_FLAGS = "print(int(open('/sys/class/net/lo/flags').read(), 16) & 1)"


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_egress_forwarder_in_a_real_guest(image: GuestImage, short_dir: Path) -> None:
    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) is not installed")
    if _debugfs_cat(image.rootfs, GUEST_AGENT) != AGENT_PATH.read_bytes():
        pytest.skip(f"the guest image {image.rootfs} holds an older agent (no egress_start): "
                    "rebuild it (`agentic-gateway sandbox build-image`)")
    proc, client = await _qemu_agent(image, short_dir)
    try:
        reply = await client.call(EgressStart(id=client.new_id(), port=EGRESS_PROXY_PORT,
                                              vsock_port=EGRESS_VSOCK_PORT), 120.0)
        assert isinstance(reply, Ok), reply
        up = await _execute(client, _LO_FLAGS)
        assert up.stdout == "1\n", up.stderr
        result = await _execute(client, (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {EGRESS_PROXY_PORT}), timeout=120)\n"
            "s.sendall(b'GET http://allowed.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n')\n"
            "data = b''\n"
            "while chunk := s.recv(4096):\n"
            "    data += chunk\n"
            "print(data.decode())\n"))
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("HTTP/1.1 502 Bad Gateway"), result.stdout
        assert "egress proxy unreachable from the sandbox" in result.stdout
        # A second egress_start is a no-op: the listener is already there.
        again = await client.call(EgressStart(id=client.new_id(), port=EGRESS_PROXY_PORT,
                                              vsock_port=EGRESS_VSOCK_PORT), 120.0)
        assert isinstance(again, Ok)
    finally:
        await client.aclose()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
