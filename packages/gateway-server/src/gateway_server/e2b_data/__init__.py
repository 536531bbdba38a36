"""E2B's data plane for the official SDKs: envd (commands, files) and the code interpreter of
every sandbox behind the gateway's own host, addressed by the ``E2b-Sandbox-Id`` and
``E2b-Sandbox-Port`` headers, over the same SandboxManager as every other API."""

from gateway_server.e2b_data.plane import ENVD_PORT, INTERPRETER_PORT, DataPlane, routes

__all__ = ["ENVD_PORT", "INTERPRETER_PORT", "DataPlane", "routes"]
