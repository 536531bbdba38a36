"""Errors of the sandbox library, all in the gateway's one hierarchy (status + error shape)."""

from __future__ import annotations

from gateway_core.errors import GatewayError, ServiceUnavailable

__all__ = ["AgentError", "BackendUnavailable", "PoolExhausted", "SandboxConflict", "SandboxDead",
           "SandboxPaused"]


class PoolExhausted(ServiceUnavailable):
    code = "sandbox_pool_exhausted"


class BackendUnavailable(ServiceUnavailable):
    code = "sandbox_backend_unavailable"


class SandboxDead(GatewayError):
    """The sandbox's guest died (crashed, was killed, or its agent stopped answering)."""

    status = 409
    type = "invalid_request_error"
    code = "sandbox_dead"


class AgentError(GatewayError):
    """The guest agent failed an operation for a reason that is not the caller's input."""

    status = 500
    type = "server_error"
    code = "sandbox_agent_error"


class SandboxConflict(GatewayError):
    """The sandbox is not in a state that allows the operation (resume of a running one,
    pause while an execution runs, a pause the backend cannot do)."""

    status = 409
    type = "invalid_request_error"
    code = "sandbox_state_conflict"


class SandboxPaused(SandboxConflict):
    """The sandbox is paused: resume it first."""

    code = "sandbox_paused"
