"""Wire types of the sandbox API (/v1/sandboxes): create, describe, execute, stream events
and file operations. Requests forbid unknown fields so a typo is a 400 naming it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "CommandInfo",
    "CommandList",
    "CommandRequest",
    "CommandStdinRequest",
    "CommandStarted",
    "ContextInfo",
    "ContextList",
    "CreateContextRequest",
    "CreateSandboxRequest",
    "ExecError",
    "ExecEvent",
    "ExecOutput",
    "ExecResult",
    "ExecuteRequest",
    "FileEntry",
    "FileList",
    "FileWritten",
    "MkdirRequest",
    "MoveRequest",
    "NetworkRequest",
    "OnTimeout",
    "OutputChunk",
    "Resources",
    "SandboxInfo",
    "SandboxLLM",
    "SandboxList",
    "SandboxStatus",
    "SignalRequest",
    "TemplateInfo",
    "TemplateList",
    "TemplatePool",
    "TemplateState",
    "TimeoutRequest",
]

SandboxStatus = Literal["ready", "running", "paused", "dead", "closed"]
#: What happens when a sandbox's lifetime or idle TTL runs out.
OnTimeout = Literal["delete", "pause"]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class NetworkRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Egress through the gateway's proxy: host names (``pypi.org``) or ``*.`` wildcards
    (``*.githubusercontent.com``), each within the config's cap. Empty: no network."""

    allow: Annotated[list[Annotated[str, msgspec.Meta(max_length=253)]],
                     msgspec.Meta(max_length=256)] = msgspec.field(default_factory=list)


class SandboxLLM(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A key for the code inside the sandbox: a child of the caller's key, never allowed
    more than its parent, revoked when the sandbox is deleted."""

    # Aliases the child may use (within the parent's); unset: the parent's.
    models: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]],
                      msgspec.Meta(min_length=1, max_length=256)] | None = None
    max_tokens: PositiveInt | None = None  # over the sandbox's life
    max_cost: Annotated[float, msgspec.Meta(ge=0)] | None = None  # USD


class CreateSandboxRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    runtime: str
    # Lifetime of the sandbox in seconds (capped by the config's max_lifetime_s).
    timeout_s: float | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    on_timeout: OnTimeout | None = None
    # Resources within the config's caps (unset: the config's defaults).
    cpus: Positive | None = None
    memory_mb: PositiveInt | None = None
    disk_mb: PositiveInt | None = None
    # A configured [sandbox.templates.NAME] (unset: "default", the backend's own root).
    template: str | None = None
    # Unset: the config's default allow-list ([sandbox.egress] default_allow).
    network: NetworkRequest | None = None
    # A child key of the caller's for the code inside (OPENAI_API_KEY, ANTHROPIC_API_KEY).
    llm: SandboxLLM | None = None


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    cpus: float
    memory_mb: int
    disk_mb: int


class SandboxInfo(msgspec.Struct, kw_only=True):
    id: str
    runtime: str
    status: SandboxStatus
    created_at: int
    expires_at: int
    backend: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    on_timeout: OnTimeout = "delete"
    resources: Resources | None = None
    template: str = "default"
    # The hosts its code may reach through the egress proxy (absent: no network).
    network: NetworkRequest | None = None
    object: str = "sandbox"


class TimeoutRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set the sandbox's remaining lifetime, from now (capped by max_lifetime_s)."""

    timeout_s: Positive


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
    # Run in this persistent context (names survive between executes) ...
    context_id: str | None = None
    # ... or in the default one for the runtime, made on first use.
    context: Literal["default"] | None = None


class ExecOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One representation of a cell's value: ``text/plain``, ``image/png`` (base64), ...
    ``bundle`` numbers the object it represents (a display()ed one, a figure, the value);
    ``value`` marks the representations of the cell's last expression."""

    mime: str
    data: str
    bundle: int = 0
    value: bool = False


class ExecError(msgspec.Struct, kw_only=True):
    """The exception a cell raised; the traceback points at the cell's own lines."""

    name: str
    value: str
    traceback: str


class ExecResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A fresh execute has the first six fields; a cell adds its results, error, context."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    truncated: bool
    # In a context: the last expression's value (and display()ed objects, figures) ...
    results: list[ExecOutput] = msgspec.field(default_factory=list)
    # ... the exception, and whether the interpreter had to be started afresh.
    error: ExecError | None = None
    context_id: str | None = None
    restarted: bool = False
    execution_count: int | None = None


class OutputChunk(msgspec.Struct, kw_only=True):
    """One piece of output as it was produced (SSE ``event: stdout`` or ``stderr``)."""

    stream: Literal["stdout", "stderr"]
    data: str


#: What ``execute_stream`` yields: chunks, then exactly one result.
ExecEvent = OutputChunk | ExecResult


class FileWritten(msgspec.Struct, kw_only=True):
    path: str
    size: int


class CreateContextRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    language: str = "python"
    cwd: str | None = None
    env: dict[str, str] | None = None


class ContextInfo(msgspec.Struct, kw_only=True):
    id: str
    language: str
    cwd: str | None
    created_at: int
    restarts: int = 0
    object: str = "context"


class ContextList(msgspec.Struct, kw_only=True):
    data: list[ContextInfo]
    object: str = "list"


class CommandRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A shell command, run as ``/bin/sh -c cmd`` in the sandbox."""

    cmd: str
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout_s: float | None = None
    stdin: str | None = None
    background: bool = False
    stream: bool = False


class CommandStarted(msgspec.Struct, kw_only=True):
    pid: int
    cmd: str
    status: Literal["running", "exited"] = "running"
    object: str = "command"


class CommandInfo(msgspec.Struct, kw_only=True):
    pid: int
    cmd: str
    status: Literal["running", "exited"]
    exit_code: int | None
    started_at: float
    truncated: bool
    stdout: str | None = None
    stderr: str | None = None
    object: str = "command"


class CommandList(msgspec.Struct, kw_only=True):
    data: list[CommandInfo]
    object: str = "list"


class CommandStdinRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    data: str = ""
    eof: bool = False


class SignalRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    signal: str = "TERM"


class FileEntry(msgspec.Struct, kw_only=True):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float
    target: str | None = None


class FileList(msgspec.Struct, kw_only=True):
    data: list[FileEntry]
    truncated: bool = False
    object: str = "list"


class MkdirRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: str


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    src: str
    dst: str
    overwrite: bool = False


#: A template's build: ``built``, ``missing`` (build it first) or ``building`` (under way).
TemplateState = Literal["built", "missing", "building"]


class TemplatePool(msgspec.Struct, kw_only=True):
    min_ready: int
    ready: int


class TemplateInfo(msgspec.Struct, kw_only=True):
    """One entry of GET /v1/templates: its recipe, build state and what the build holds."""

    name: str
    state: TemplateState
    # "debian-bookworm", or for "default" what the backend runs on (the host, an image).
    base: str
    apt: list[str]
    pip: list[str]
    files: list[str]
    runtimes: list[str]
    pool: TemplatePool
    recipe_hash: str | None = None
    built_at: int | None = None
    # The unpacked root (process backend) and the ext4 image (Firecracker), on disk.
    root_bytes: int | None = None
    image_bytes: int | None = None
    # For a template that is not built: the command that builds it.
    build_command: str | None = None
    object: str = "template"


class TemplateList(msgspec.Struct, kw_only=True):
    data: list[TemplateInfo]
    object: str = "list"
