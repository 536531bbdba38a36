"""gateway_sandbox: code sandboxes with a warm pool over bubblewrap jails or microVMs."""

from gateway_sandbox.__about__ import __version__
from gateway_sandbox.backends.base import Backend, Guest
from gateway_sandbox.errors import AgentError, BackendUnavailable, PoolExhausted, SandboxDead
from gateway_sandbox.manager import SandboxManager, SandboxStats, select_backend
from gateway_sandbox.observer import SandboxObserver
from gateway_sandbox.runtimes import RUNTIMES, Runtime
from gateway_sandbox.sandbox import Sandbox

__all__ = [
    "__version__",
    "AgentError",
    "Backend",
    "BackendUnavailable",
    "Guest",
    "PoolExhausted",
    "RUNTIMES",
    "Runtime",
    "Sandbox",
    "SandboxDead",
    "SandboxManager",
    "SandboxObserver",
    "SandboxStats",
    "select_backend",
]
