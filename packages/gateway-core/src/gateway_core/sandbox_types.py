"""Wire types of the sandbox API (/v1/sandboxes): create, describe, execute, stream events
and file operations. Requests forbid unknown fields so a typo is a 400 naming it."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "CreateSandboxRequest",
    "ExecEvent",
    "ExecResult",
    "ExecuteRequest",
    "FileWritten",
    "OutputChunk",
    "SandboxInfo",
    "SandboxList",
    "SandboxStatus",
]

SandboxStatus = Literal["ready", "running", "dead", "closed"]


class CreateSandboxRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    runtime: str
    # Lifetime of the sandbox in seconds (capped by the config's max_lifetime_s).
    timeout_s: float | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None


class SandboxInfo(msgspec.Struct, kw_only=True):
    id: str
    runtime: str
    status: SandboxStatus
    created_at: int
    expires_at: int
    backend: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    object: str = "sandbox"


class SandboxList(msgspec.Struct, kw_only=True):
    data: list[SandboxInfo]
    object: str = "list"


class ExecuteRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: str
    runtime: str | None = None
    timeout_s: float | None = None
    env: dict[str, str] | None = None
    stdin: str | None = None
    stream: bool = False


class ExecResult(msgspec.Struct, kw_only=True):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    truncated: bool


class OutputChunk(msgspec.Struct, kw_only=True):
    """One piece of output as it was produced (SSE ``event: stdout`` or ``stderr``)."""

    stream: Literal["stdout", "stderr"]
    data: str


#: What ``execute_stream`` yields: chunks, then exactly one result.
ExecEvent = OutputChunk | ExecResult


class FileWritten(msgspec.Struct, kw_only=True):
    path: str
    size: int
