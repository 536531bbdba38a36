"""Where things are inside every guest (jail or VM): one home for the paths and the port
that the backends, the image builder and the image's init script must agree on (a test
checks init.sh against these)."""

from __future__ import annotations

__all__ = ["AGENT_VSOCK_PORT", "EGRESS_PROXY_PORT", "EGRESS_SOCKET", "EGRESS_VSOCK_PORT",
           "GUEST_AGENT", "GUEST_RUN", "GUEST_TMPDIR", "GUEST_WORKDIR", "WORK_DRIVE"]

#: The sandbox's working directory: code runs here, the file API is confined to it.
GUEST_WORKDIR = "/work"
GUEST_TMPDIR = "/tmp"
#: The agent file inside the guest.
GUEST_AGENT = "/opt/gateway-agent/agent.py"
#: Process backend: the directory holding the agent's Unix socket.
GUEST_RUN = "/run/agent"
#: Firecracker: the vsock port init starts the agent on (default of firecracker_agent_port).
AGENT_VSOCK_PORT = 52
#: Firecracker: the writable drive (disk_mb) init mounts on /work when it is there.
WORK_DRIVE = "/dev/vdb"
#: Egress: the port on the guest's loopback where the agent takes proxy connections
#: (HTTP_PROXY / HTTPS_PROXY point here) ...
EGRESS_PROXY_PORT = 3128
#: ... and forwards them to: process backend, the proxy's socket bound into the jail;
EGRESS_SOCKET = GUEST_RUN + "/egress.sock"
#: Firecracker, this vsock port on the host (Firecracker's ``<uds_path>_<port>`` socket).
EGRESS_VSOCK_PORT = 3128
