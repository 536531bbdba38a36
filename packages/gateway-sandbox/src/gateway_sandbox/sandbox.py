"""One sandbox handed to a user: a started guest, the connection to its agent, its
persistent contexts, background commands, files, lifetime and pause state. It is given a
policy (limits, checks, observer) and a close callback, never its manager."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable

import msgspec

from gateway_core.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from gateway_core.sandbox_types import (
    CommandInfo,
    CommandStarted,
    ContextInfo,
    ExecError,
    ExecOutput,
    ExecResult,
    FileEntry,
    NetworkRequest,
    OnTimeout,
    OutputChunk,
    Resources,
    SandboxInfo,
    SandboxStatus,
)
from gateway_sandbox.backends.base import Guest
from gateway_sandbox.egress import SandboxEgress
from gateway_sandbox.errors import AgentError, SandboxConflict, SandboxDead, SandboxPaused
from gateway_sandbox.guest_layout import GUEST_WORKDIR
from gateway_sandbox.policy import SandboxPolicy
from gateway_sandbox.protocol import (
    AgentClient,
    Cancel,
    Cell,
    Chunk,
    ConnectionLost,
    ContextCreate,
    ContextDelete,
    ContextExec,
    ContextInterrupt,
    ContextRestart,
    Entries,
    EntryReply,
    Error,
    Execute,
    FileData,
    ListDir,
    MakeDir,
    Move,
    Ok,
    ProcGet,
    ProcInfo,
    ProcList,
    Procs,
    ProcSignal,
    ProcStart,
    ProcStdin,
    ReadFile,
    Remove,
    Reply,
    Request,
    Result,
    Stat,
    WriteFile,
    Written,
)
from gateway_sandbox.runtimes import SHELL

__all__ = ["GUEST_WORKDIR", "Sandbox", "check_path"]

# How long past its own timeout an execution may take before the agent counts as hung.
_GRACE_S = 30.0
_FILE_OP_TIMEOUT_S = 60.0
#: Streamed uploads and downloads move this much per agent frame.
CHUNK_BYTES = 1024 * 1024


class _InsufficientStorage(GatewayError):
    status = 507
    type = "invalid_request_error"
    code = "sandbox_disk_full"


def check_path(path: str, *, allow_root: bool = False, param: str = "path") -> str:
    """Reject what is outside the work dir by its text alone; the agent also resolves
    symlinks before it touches anything. ``allow_root``: the work dir itself is "."."""
    if not path or "\0" in path:
        raise InvalidRequest(f"{param} must be a non-empty string without NUL bytes.",
                             param=param)
    if path.startswith("/"):
        if path == GUEST_WORKDIR and allow_root:
            return "."
        if not path.startswith(GUEST_WORKDIR + "/"):
            raise InvalidRequest(f"{param} must be relative to, or under, {GUEST_WORKDIR}.",
                                 param=param)
        path = path[len(GUEST_WORKDIR) + 1:]
    if ".." in path.split("/"):
        raise InvalidRequest(f"{param} must not contain '..'.", param=param)
    norm = posixpath.normpath(path) if path else "."
    if norm in (".", ""):
        if allow_root:
            return "."
        raise InvalidRequest(f"{param} names the work directory itself, not a file.",
                             param=param)
    return norm


# Agent error code -> (error class, status override, code override); the param is the call's.
_AGENT_ERRORS: dict[str, tuple[type[GatewayError], int | None, str | None]] = {
    "invalid_path": (InvalidRequest, None, None),
    "not_a_directory": (InvalidRequest, None, "not_a_directory"),
    "invalid_cwd": (InvalidRequest, None, "invalid_cwd"),
    "bad_signal": (InvalidRequest, None, "invalid_signal"),
    "not_found": (NotFound, None, "file_not_found"),
    "unknown_context": (NotFound, None, "context_not_found"),
    "unknown_pid": (NotFound, None, "command_not_found"),
    "too_large": (PayloadTooLarge, None, None),
    "exists": (SandboxConflict, None, "already_exists"),
    "not_empty": (SandboxConflict, None, "directory_not_empty"),
    "stdin_closed": (SandboxConflict, None, "stdin_closed"),
    "context_busy": (SandboxConflict, None, "context_busy"),
    "no_space": (_InsufficientStorage, None, None),
}


def _agent_error(err: Error, param: str | None = "path") -> GatewayError:
    known = _AGENT_ERRORS.get(err.code)
    if known is None:
        return AgentError(f"the sandbox agent failed: {err.message}")
    cls, status, code = known
    if err.code == "invalid_cwd":
        param = "cwd"
    return cls(err.message[:1].upper() + err.message[1:] + ".", param=param, code=code,
               status=status)


class _Context(msgspec.Struct, kw_only=True):
    id: str
    language: str
    cwd: str | None
    created_at: float
    restarts: int = 0

    def info(self) -> ContextInfo:
        return ContextInfo(id=self.id, language=self.language, cwd=self.cwd,
                           created_at=int(self.created_at), restarts=self.restarts)


class Sandbox:
    def __init__(self, guest: Guest, client: AgentClient, *, policy: SandboxPolicy,
                 on_close: Callable[[str], Awaitable[None]], runtime: str, lifetime_s: float,
                 env: dict[str, str], metadata: dict[str, str], clock: Callable[[], float],
                 on_timeout: OnTimeout = "delete", resources: Resources | None = None,
                 template: str = "default",
                 egress: SandboxEgress | None = None) -> None:
        self.guest = guest
        # Its own socket on the egress proxy (None: no network); closed with the sandbox.
        self.egress = egress
        self.client = client
        self.policy = policy
        self._on_close = on_close
        self.id = guest.id
        self.runtime = runtime
        self.template = template
        self.backend = guest.backend
        self.env = env
        self.metadata = metadata
        self.on_timeout: OnTimeout = on_timeout
        self.resources = resources or policy.default_resources()
        self._clock = clock
        self.created_at = clock()
        self.last_used = self.created_at
        self.lifetime_s = lifetime_s
        self.deadline = self.created_at + lifetime_s
        self.paused_at: float | None = None
        self._lock = asyncio.Lock()  # one execution (cell, code or command) at a time
        self._state_lock = asyncio.Lock()  # pause / resume / context creation
        self.contexts: dict[str, _Context] = {}
        self._closed = False
        self._dead = False
        self.freed = False  # the dead guest's processes and files are gone

    # ---- state ----

    @property
    def status(self) -> SandboxStatus:
        if self._closed:
            return "closed"
        if self._dead or not self.guest.alive() or (self.client.closed and not self.paused):
            return "dead"
        if self.paused:
            return "paused"
        return "running" if self._lock.locked() else "ready"

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def expires_at(self) -> float:
        if self.paused:
            return self.deadline
        return min(self.deadline, self.last_used + self.policy.idle_ttl_s)

    def expired(self, now: float) -> bool:
        return not self._lock.locked() and not self._state_lock.locked() \
            and now >= self.expires_at

    def info(self) -> SandboxInfo:
        return SandboxInfo(id=self.id, runtime=self.runtime, status=self.status,
                           created_at=int(self.created_at), expires_at=int(self.expires_at),
                           backend=self.backend, metadata=dict(self.metadata),
                           on_timeout=self.on_timeout, resources=self.resources,
                           template=self.template,
                           network=NetworkRequest(allow=self.egress.allow_list)
                           if self.egress is not None else None)

    def touch(self) -> None:
        """Count an API call as activity: the idle TTL starts again."""
        self.last_used = self._clock()

    def _check_usable(self) -> None:
        status = self.status
        if status == "closed":
            raise NotFound(f"No sandbox with id {self.id!r}.", param="id")
        if status == "dead":
            raise SandboxDead(f"Sandbox {self.id} is dead: its guest exited or stopped "
                              "answering. Delete it and create another.")
        if status == "paused":
            raise SandboxPaused(f"Sandbox {self.id} is paused; POST "
                                f"/v1/sandboxes/{self.id}/resume first.", param="id")

    async def mark_dead(self) -> None:
        """The guest died or hung: free what it holds; the record stays as "dead"."""
        self._dead = True
        self.freed = True
        await self._close_egress()
        await self.client.aclose()
        await self.guest.stop()

    async def _close_egress(self) -> None:
        if self.egress is not None:
            await self.egress.aclose()

    async def _call(self, msg: Request, param: str | None = "path",
                    timeout_s: float = _FILE_OP_TIMEOUT_S) -> Reply:
        """One request to the agent, its error as the caller's, a lost agent as dead."""
        self._check_usable()
        self.touch()
        try:
            reply = await self.client.call(msg, timeout_s)
        except (TimeoutError, ConnectionLost) as exc:
            await self.mark_dead()
            raise SandboxDead(f"Sandbox {self.id} died: {exc}") from None
        if isinstance(reply, Error):
            raise _agent_error(reply, param)
        return reply

    # ---- lifecycle ----

    def set_timeout(self, timeout_s: float) -> None:
        """The sandbox lives ``timeout_s`` more seconds from now (paused or not)."""
        t = self.policy.check_lifetime(timeout_s)
        self._check_alive()
        self.lifetime_s = t
        self.deadline = self._clock() + t
        self.touch()

    def _check_alive(self) -> None:
        if self.status in ("closed", "dead"):
            self._check_usable()

    async def pause(self) -> None:
        """Freeze the guest (no CPU; a VM's memory goes to disk); files, contexts and
        background commands are kept. It is deleted max_paused_s after, unless extended."""
        async with self._observed("pause"):
            await self._pause()

    async def resume(self) -> None:
        async with self._observed("resume"):
            await self._resume()

    @contextlib.asynccontextmanager
    async def _observed(self, action: str) -> AsyncIterator[None]:
        started = time.monotonic()
        outcome = "cancelled"
        try:
            yield
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.policy.observer.on_lifecycle(action, outcome, time.monotonic() - started,
                                              sandbox_id=self.id)

    async def _pause(self) -> None:
        async with self._state_lock:
            self._check_alive()
            if self.paused:
                raise SandboxConflict(f"Sandbox {self.id} is already paused.", param="id")
            if self._lock.locked():
                raise SandboxConflict(f"Sandbox {self.id} is running an execution; wait for "
                                      "it or cancel it before pausing.", param="id")
            if not self.guest.keeps_connection_when_paused:
                await self.client.aclose()
            await self.guest.pause()
            now = self._clock()
            self.paused_at = now
            self.deadline = max(self.deadline, now + self.policy.max_paused_s)

    async def _resume(self) -> None:
        async with self._state_lock:
            self._check_alive()
            if not self.paused:
                raise SandboxConflict(f"Sandbox {self.id} is not paused.", param="id",
                                      code="sandbox_not_paused")
            await self.guest.resume()
            route = self.guest.egress_route() if self.egress is not None else None
            if self.egress is not None and route is not None \
                    and route.host_path != self.egress.path:
                # A VM restored in a new directory: its vsock listener moves with it.
                try:
                    await self.egress.listen(route.host_path, route.uid)
                except OSError as exc:
                    await self.mark_dead()
                    raise SandboxDead(f"Sandbox {self.id} lost its egress on resume: "
                                      f"{exc}") from None
            if self.client.closed:
                try:
                    reader, writer = await asyncio.wait_for(self.guest.open_stream(),
                                                            _FILE_OP_TIMEOUT_S)
                    self.client = await AgentClient.connect(reader, writer)
                except (OSError, TimeoutError, ConnectionLost) as exc:
                    self.paused_at = None
                    await self.mark_dead()
                    raise SandboxDead(f"Sandbox {self.id} did not come back from its "
                                      f"pause: {exc}") from None
            self.paused_at = None
            now = self._clock()
            self.deadline = now + self.lifetime_s
            self.last_used = now

    # ---- contexts ----

    def context(self, context_id: str) -> _Context:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise NotFound(f"No context {context_id!r} in sandbox {self.id}.",
                           param="context_id", code="context_not_found")
        return ctx

    async def create_context(self, language: str | None = None, *, cwd: str | None = None,
                             env: dict[str, str] | None = None,
                             context_id: str | None = None) -> ContextInfo:
        lang = language or self.runtime
        rt = self.policy.resolve_runtime(lang, param="language", template=self.template)
        if rt.context is None:
            raise InvalidRequest(f"Language {lang!r} has no persistent contexts; use "
                                 "execute without a context.", param="language")
        self.policy.check_env(env)
        cid = context_id or "ctx_" + secrets.token_hex(8)
        await self._call(ContextCreate(id=self.client.new_id(), context=cid, language=lang,
                                       argv=rt.context, cwd=cwd,
                                       env={**rt.env, **self.env, **(env or {})}),
                         param="cwd")
        ctx = _Context(id=cid, language=lang, cwd=cwd, created_at=self._clock())
        self.contexts[cid] = ctx
        return ctx.info()

    async def delete_context(self, context_id: str) -> None:
        self.context(context_id)
        await self._call(ContextDelete(id=self.client.new_id(), context=context_id),
                         param="context_id")
        self.contexts.pop(context_id, None)

    async def restart_context(self, context_id: str) -> ContextInfo:
        ctx = self.context(context_id)
        await self._call(ContextRestart(id=self.client.new_id(), context=context_id),
                         param="context_id")
        ctx.restarts += 1
        return ctx.info()

    async def interrupt_context(self, context_id: str) -> bool:
        """SIGINT the running cell (its state survives; past the grace it is restarted).
        Returns whether a cell was running."""
        self.context(context_id)
        reply = await self._call(ContextInterrupt(id=self.client.new_id(), context=context_id),
                                 param="context_id")
        return bool(isinstance(reply, Ok) and reply.running)

    async def _default_context(self, language: str) -> str:
        cid = f"default-{language}"
        async with self._state_lock:
            if cid not in self.contexts:
                await self.create_context(language, context_id=cid)
        return cid

    # ---- execution ----

    async def execute(self, code: str, *, runtime: str | None = None,
                      timeout_s: float | None = None, env: dict[str, str] | None = None,
                      stdin: str | None = None, context_id: str | None = None,
                      context: str | None = None) -> ExecResult:
        result: ExecResult | None = None
        async for event in self.execute_stream(code, runtime=runtime, timeout_s=timeout_s,
                                               env=env, stdin=stdin, context_id=context_id,
                                               context=context, stream=False):
            if isinstance(event, ExecResult):
                result = event
        assert result is not None  # _run always ends with a result or raises
        return result

    async def execute_stream(self, code: str, *, runtime: str | None = None,
                             timeout_s: float | None = None,
                             env: dict[str, str] | None = None, stdin: str | None = None,
                             context_id: str | None = None, context: str | None = None,
                             stream: bool = True,
                             ) -> AsyncGenerator[OutputChunk | ExecResult, None]:
        """Output chunks as they are produced, then one ExecResult. Closing or cancelling
        the iterator kills the execution in the guest (in a context: interrupts the cell)."""
        pol = self.policy
        pol.check_code(code)
        timeout = pol.check_exec_timeout(timeout_s)
        self._check_usable()
        if context_id is not None or context is not None:
            if context_id is not None and context is not None:
                raise InvalidRequest("Give context_id or context, not both.", param="context")
            if env or stdin is not None:
                raise InvalidRequest("env and stdin are not taken by a context's cell; set "
                                     "env when creating the context.",
                                     param="env" if env else "stdin")
            if context_id is not None:
                ctx = self.context(context_id)
                if runtime is not None and runtime != ctx.language:
                    raise InvalidRequest(f"Context {context_id} runs {ctx.language}, not "
                                         f"{runtime}.", param="runtime")
                cid, label = context_id, ctx.language
            else:
                label = runtime or self.runtime
                pol.resolve_runtime(label, template=self.template)
                cid = await self._default_context(label)
            msg: Execute | ContextExec = ContextExec(
                id=self.client.new_id(), context=cid, code=code, timeout_s=timeout,
                grace_s=pol.limits.interrupt_grace_s,
                max_output_bytes=pol.limits.max_output_bytes, stream=stream)
            hung_after = timeout + pol.limits.interrupt_grace_s + _GRACE_S
        else:
            label = runtime or self.runtime
            rt = pol.resolve_runtime(label, template=self.template)
            pol.check_env(env)
            pol.check_stdin(stdin)
            msg = Execute(id=self.client.new_id(), runtime=rt, code=code, timeout_s=timeout,
                          max_output_bytes=pol.limits.max_output_bytes,
                          env={**self.env, **(env or {})}, stdin=stdin, stream=stream,
                          rlimits=pol.exec_rlimits(self.resources))
            cid = None
            hung_after = timeout + _GRACE_S
        async for event in self._run(msg, label, hung_after, cid):
            yield event

    async def run_command(self, cmd: str, *, cwd: str | None = None,
                          env: dict[str, str] | None = None, timeout_s: float | None = None,
                          stdin: str | None = None, stream: bool = False,
                          ) -> AsyncGenerator[OutputChunk | ExecResult, None]:
        """A foreground ``/bin/sh -c cmd``: chunks (when streaming), then one ExecResult."""
        pol = self.policy
        pol.check_code(cmd, param="cmd")
        timeout = pol.check_exec_timeout(timeout_s)
        pol.check_env(env)
        pol.check_stdin(stdin)
        self._check_usable()
        msg = Execute(id=self.client.new_id(), runtime=SHELL, code=cmd, timeout_s=timeout,
                      max_output_bytes=pol.limits.max_output_bytes,
                      env={**self.env, **(env or {})}, stdin=stdin, stream=stream,
                      rlimits=pol.exec_rlimits(self.resources), cwd=cwd)
        async for event in self._run(msg, "command", timeout + _GRACE_S, None):
            yield event

    async def _run(self, msg: Execute | ContextExec, label: str, hung_after: float,
                   context_id: str | None) -> AsyncGenerator[OutputChunk | ExecResult, None]:
        async with self._lock:
            self._check_usable()
            self.touch()
            started = time.monotonic()
            outcome = "failed"
            exit_code: int | None = None
            timed_out = False
            finished = False
            try:
                queue = await self.client.send(msg)
                # The agent enforces the timeout; past it plus a grace, it counts as hung.
                hung_at = started + hung_after
                try:
                    while True:
                        item = await asyncio.wait_for(queue.get(),
                                                      max(0.0, hung_at - time.monotonic()))
                        if isinstance(item, ConnectionLost):
                            finished = True
                            raise item
                        if isinstance(item, Chunk):
                            yield OutputChunk(stream=item.stream, data=item.data)
                        elif isinstance(item, Result):
                            finished = True
                            outcome = ("timeout" if item.timed_out else
                                       "ok" if item.exit_code == 0 else "error")
                            exit_code, timed_out = item.exit_code, item.timed_out
                            yield ExecResult(stdout=item.stdout, stderr=item.stderr,
                                             exit_code=item.exit_code,
                                             duration_ms=item.duration_ms,
                                             timed_out=item.timed_out,
                                             truncated=item.truncated)
                            return
                        elif isinstance(item, Cell):
                            finished = True
                            outcome = ("timeout" if item.timed_out else
                                       "ok" if item.error is None else "error")
                            timed_out = item.timed_out
                            exit_code = item.exit_code
                            if item.restarted and context_id in self.contexts:
                                self.contexts[context_id].restarts += 1
                            yield _cell_result(item, context_id)
                            return
                        elif isinstance(item, Error):
                            finished = True
                            raise _agent_error(item, "context_id" if context_id else "cwd")
                finally:
                    self.client.forget(msg.id)
                    if not finished:
                        outcome = "cancelled"
                        await asyncio.shield(self._cancel(msg.id))
            except ConnectionLost as exc:
                await self.mark_dead()
                raise SandboxDead(f"Sandbox {self.id} died during the execution: {exc}") \
                    from None
            except TimeoutError:
                outcome = "failed"
                await self.mark_dead()
                raise SandboxDead(f"Sandbox {self.id} stopped answering; it was stopped.") \
                    from None
            finally:
                self.touch()
                self.policy.observer.on_execute(label, outcome, time.monotonic() - started,
                                                sandbox_id=self.id, exit_code=exit_code,
                                                timed_out=timed_out)

    async def _cancel(self, target: int) -> None:
        with contextlib.suppress(ConnectionLost, TimeoutError):
            await self.client.call(Cancel(id=self.client.new_id(), target=target), 5.0)

    # ---- background commands ----

    async def start_command(self, cmd: str, *, cwd: str | None = None,
                            env: dict[str, str] | None = None, timeout_s: float | None = None,
                            stdin: str | None = None) -> CommandStarted:
        pol = self.policy
        pol.check_code(cmd, param="cmd")
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidRequest("timeout_s must be > 0.", param="timeout_s")
        pol.check_env(env)
        pol.check_stdin(stdin)
        reply = await self._call(ProcStart(
            id=self.client.new_id(), cmd=cmd, cwd=cwd, env={**self.env, **(env or {})},
            stdin=stdin, timeout_s=timeout_s, max_output_bytes=pol.limits.max_output_bytes,
            rlimits=pol.exec_rlimits(self.resources)), param="cwd")
        assert isinstance(reply, ProcInfo)
        return CommandStarted(pid=reply.pid, cmd=reply.cmd)

    async def list_commands(self) -> list[CommandInfo]:
        reply = await self._call(ProcList(id=self.client.new_id()), param=None)
        assert isinstance(reply, Procs)
        return [CommandInfo(pid=p.pid, cmd=p.cmd, status=p.status, exit_code=p.exit_code,
                            started_at=p.started_at, truncated=p.truncated)
                for p in reply.procs]

    async def get_command(self, pid: int, *, wait_s: float | None = None) -> CommandInfo:
        reply = await self._call(ProcGet(id=self.client.new_id(), pid=pid, wait_s=wait_s),
                                 param="pid", timeout_s=_FILE_OP_TIMEOUT_S + (wait_s or 0))
        assert isinstance(reply, ProcInfo)
        return _command_info(reply)

    async def follow_command(self, pid: int) -> AsyncGenerator[OutputChunk | CommandInfo, None]:
        """What the command printed so far and from now on, then its final status."""
        from gateway_sandbox.protocol import ProcFollow

        self._check_usable()
        self.touch()
        msg = ProcFollow(id=self.client.new_id(), pid=pid)
        queue = await self.client.send(msg)
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ConnectionLost):
                    finished = True
                    raise SandboxDead(f"Sandbox {self.id} died: {item}")
                if isinstance(item, Chunk):
                    yield OutputChunk(stream=item.stream, data=item.data)
                elif isinstance(item, ProcInfo):
                    finished = True
                    yield _command_info(item)
                    return
                elif isinstance(item, Error):
                    finished = True
                    raise _agent_error(item, "pid")
        finally:
            self.client.forget(msg.id)
            if not finished:
                await asyncio.shield(self._cancel(msg.id))

    async def command_stdin(self, pid: int, data: str, *, eof: bool = False) -> None:
        self.policy.check_stdin(data)
        await self._call(ProcStdin(id=self.client.new_id(), pid=pid, data=data.encode(),
                                   eof=eof), param="pid")

    async def signal_command(self, pid: int, signal: str = "TERM") -> None:
        if not signal.isalnum():
            raise InvalidRequest(f"Unknown signal {signal!r}.", param="signal")
        await self._call(ProcSignal(id=self.client.new_id(), pid=pid, signal=signal),
                         param="signal")

    # ---- files ----

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> int:
        if len(data) > self.policy.limits.max_upload_bytes:
            raise PayloadTooLarge(f"The file is over {self.policy.limits.max_upload_bytes} "
                                  "bytes.", param="body")

        async def one() -> AsyncGenerator[bytes, None]:
            yield data

        return await self.write_file_stream(path, one(), mode=mode)

    async def write_file_stream(self, path: str, chunks: AsyncIterable[bytes], *,
                                mode: int = 0o644) -> int:
        """Write what ``chunks`` yields, one agent frame per CHUNK_BYTES, never holding the
        whole file; over max_upload_bytes, the partial file is removed and 413 raised."""
        rel = check_path(path)
        limit = self.policy.limits.max_upload_bytes
        self._check_usable()
        total = 0
        first = True
        buf = bytearray()

        async def flush(final: bool) -> None:
            nonlocal first, buf
            while buf and (final or len(buf) >= CHUNK_BYTES):
                piece = bytes(buf[:CHUNK_BYTES])
                del buf[:CHUNK_BYTES]
                reply = await self._call(WriteFile(id=self.client.new_id(), path=rel,
                                                   data=piece, mode=mode, append=not first))
                if not isinstance(reply, Written):
                    raise AgentError(f"unexpected reply {type(reply).__name__} to write_file")
                first = False

        try:
            async for chunk in chunks:
                total += len(chunk)
                if total > limit:
                    raise PayloadTooLarge(f"The file is over {limit} bytes.", param="body")
                buf += chunk
                await flush(final=False)
            if first or buf:
                if not buf:
                    buf = bytearray()
                await self._write_last(rel, buf, mode, append=not first)
        except PayloadTooLarge:
            if not first:
                with contextlib.suppress(GatewayError):
                    await self._call(Remove(id=self.client.new_id(), path=rel))
            raise
        return total

    async def _write_last(self, rel: str, buf: bytearray, mode: int, *, append: bool) -> None:
        while True:
            piece = bytes(buf[:CHUNK_BYTES])
            del buf[:CHUNK_BYTES]
            reply = await self._call(WriteFile(id=self.client.new_id(), path=rel, data=piece,
                                               mode=mode, append=append))
            if not isinstance(reply, Written):
                raise AgentError(f"unexpected reply {type(reply).__name__} to write_file")
            append = True
            if not buf:
                return

    async def read_file(self, path: str) -> bytes:
        rel = check_path(path)
        reply = await self._call(ReadFile(id=self.client.new_id(), path=rel,
                                          max_bytes=self.policy.limits.max_upload_bytes))
        if not isinstance(reply, FileData):
            raise AgentError(f"unexpected reply {type(reply).__name__} to read_file")
        return reply.data

    async def open_download(self, path: str) -> tuple[int, AsyncGenerator[bytes, None]]:
        """The file's size and its bytes in CHUNK_BYTES pieces (checked before any is sent:
        missing, not a file, over max_download_bytes)."""
        rel = check_path(path)
        limit = self.policy.limits.max_download_bytes
        first = await self._call(ReadFile(id=self.client.new_id(), path=rel,
                                          max_bytes=CHUNK_BYTES, offset=0))
        if not isinstance(first, FileData):
            raise AgentError(f"unexpected reply {type(first).__name__} to read_file")
        if first.total > limit:
            raise PayloadTooLarge(f"The file is over {limit} bytes (max_download_bytes).",
                                  param="path")

        async def chunks() -> AsyncGenerator[bytes, None]:
            reply = first
            offset = 0
            while True:
                if reply.data:
                    yield reply.data
                offset += len(reply.data)
                if reply.eof or offset >= limit:
                    return
                nxt = await self._call(ReadFile(id=self.client.new_id(), path=rel,
                                                max_bytes=CHUNK_BYTES, offset=offset))
                assert isinstance(nxt, FileData)
                reply = nxt

        return first.total, chunks()

    async def list_files(self, path: str = ".", *, depth: int = 1) -> tuple[list[FileEntry],
                                                                              bool]:
        rel = check_path(path, allow_root=True)
        if depth < 1:
            raise InvalidRequest("depth must be >= 1.", param="depth")
        reply = await self._call(ListDir(id=self.client.new_id(), path=rel, depth=depth))
        assert isinstance(reply, Entries)
        return [_entry(e) for e in reply.entries], reply.truncated

    async def stat_file(self, path: str) -> FileEntry:
        rel = check_path(path, allow_root=True)
        reply = await self._call(Stat(id=self.client.new_id(), path=rel))
        assert isinstance(reply, EntryReply)
        return _entry(reply.entry)

    async def delete_file(self, path: str, *, recursive: bool = False) -> None:
        rel = check_path(path)
        await self._call(Remove(id=self.client.new_id(), path=rel, recursive=recursive))

    async def make_dir(self, path: str) -> bool:
        rel = check_path(path)
        reply = await self._call(MakeDir(id=self.client.new_id(), path=rel))
        return bool(isinstance(reply, Ok) and reply.created)

    async def move(self, src: str, dst: str, *, overwrite: bool = False) -> FileEntry:
        s = check_path(src, param="src")
        d = check_path(dst, param="dst")
        reply = await self._call(Move(id=self.client.new_id(), src=s, dst=d,
                                      overwrite=overwrite), param="dst")
        assert isinstance(reply, EntryReply)
        return _entry(reply.entry)

    # ---- end ----

    async def close(self) -> None:
        """Stop the guest and forget the sandbox (same as the manager's delete)."""
        await self._on_close(self.id)

    async def _shutdown(self) -> None:
        self._closed = True
        await self._close_egress()
        await self.client.aclose()
        await self.guest.stop()


def _cell_result(cell: Cell, context_id: str | None) -> ExecResult:
    return ExecResult(
        stdout=cell.stdout, stderr=cell.stderr, exit_code=cell.exit_code,
        duration_ms=cell.duration_ms, timed_out=cell.timed_out, truncated=cell.truncated,
        results=[ExecOutput(mime=r.mime, data=r.data, bundle=r.bundle, value=r.value)
                 for r in cell.results],
        error=ExecError(name=cell.error.name, value=cell.error.value,
                        traceback=cell.error.traceback) if cell.error else None,
        context_id=context_id, restarted=cell.restarted,
        execution_count=cell.execution_count or None)


def _command_info(p: ProcInfo) -> CommandInfo:
    return CommandInfo(pid=p.pid, cmd=p.cmd, status=p.status, exit_code=p.exit_code,
                       started_at=p.started_at, truncated=p.truncated, stdout=p.stdout,
                       stderr=p.stderr)


def _entry(e: object) -> FileEntry:
    return msgspec.convert(msgspec.to_builtins(e), FileEntry)
