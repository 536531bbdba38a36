"""One sandbox handed to a user: a started guest, the connection to its agent, its runtime,
lifetimes and the one-execution-at-a-time lock."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from gateway_core.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from gateway_core.sandbox_types import ExecResult, OutputChunk, SandboxInfo, SandboxStatus
from gateway_sandbox.backends.base import Guest
from gateway_sandbox.errors import AgentError, SandboxDead
from gateway_sandbox.protocol import (
    AgentClient,
    Cancel,
    Chunk,
    ConnectionLost,
    Error,
    Execute,
    FileData,
    ReadFile,
    Result,
    WriteFile,
    Written,
)

__all__ = ["GUEST_WORKDIR", "Sandbox", "check_path"]

if TYPE_CHECKING:
    from gateway_sandbox.manager import SandboxManager

GUEST_WORKDIR = "/work"
# How long past its own timeout an execution may take before the agent counts as hung.
_GRACE_S = 30.0
_FILE_OP_TIMEOUT_S = 60.0


def check_path(path: str) -> str:
    """Reject what is outside the work dir by its text alone; the agent also resolves
    symlinks before it touches anything."""
    if not path or "\0" in path:
        raise InvalidRequest("path must be a non-empty string without NUL bytes.",
                             param="path")
    if path.startswith("/"):
        if not path.startswith(GUEST_WORKDIR + "/"):
            raise InvalidRequest(f"path must be relative to, or under, {GUEST_WORKDIR}.",
                                 param="path")
        path = path[len(GUEST_WORKDIR) + 1:]
    if ".." in path.split("/"):
        raise InvalidRequest("path must not contain '..'.", param="path")
    norm = posixpath.normpath(path)
    if norm in (".", ""):
        raise InvalidRequest("path names the work directory itself, not a file.",
                             param="path")
    return norm


def _agent_error(err: Error) -> GatewayError:
    if err.code == "invalid_path":
        return InvalidRequest(err.message, param="path")
    if err.code == "not_found":
        return NotFound(err.message, param="path", code="file_not_found")
    if err.code == "too_large":
        return PayloadTooLarge(err.message, param="path")
    return AgentError(f"the sandbox agent failed: {err.message}")


class Sandbox:
    def __init__(self, manager: SandboxManager, guest: Guest, client: AgentClient, *,
                 runtime: str, lifetime_s: float, env: dict[str, str],
                 metadata: dict[str, str], clock: Callable[[], float]) -> None:
        self._manager = manager
        self.guest = guest
        self.client = client
        self.id = guest.id
        self.runtime = runtime
        self.backend = guest.backend
        self.env = env
        self.metadata = metadata
        self._clock = clock
        self.created_at = clock()
        self.last_used = self.created_at
        self.lifetime_s = lifetime_s
        self._lock = asyncio.Lock()
        self._closed = False
        self._dead = False
        self.freed = False  # the dead guest's processes and files are gone

    # ---- state ----

    @property
    def status(self) -> SandboxStatus:
        if self._closed:
            return "closed"
        if self._dead or not self.guest.alive() or self.client.closed:
            return "dead"
        return "running" if self._lock.locked() else "ready"

    @property
    def expires_at(self) -> float:
        return min(self.created_at + self.lifetime_s, self.last_used + self._manager.idle_ttl_s)

    def expired(self, now: float) -> bool:
        return not self._lock.locked() and now >= self.expires_at

    def info(self) -> SandboxInfo:
        return SandboxInfo(id=self.id, runtime=self.runtime, status=self.status,
                           created_at=int(self.created_at), expires_at=int(self.expires_at),
                           backend=self.backend, metadata=dict(self.metadata))

    def _touch(self) -> None:
        self.last_used = self._clock()

    def _check_usable(self) -> None:
        status = self.status
        if status == "closed":
            raise NotFound(f"No sandbox with id {self.id!r}.", param="id")
        if status == "dead":
            raise SandboxDead(f"Sandbox {self.id} is dead: its guest exited or stopped "
                              "answering. Delete it and create another.")

    async def mark_dead(self) -> None:
        """The guest died or hung: free what it holds; the record stays as "dead"."""
        self._dead = True
        self.freed = True
        await self.client.aclose()
        await self.guest.stop()

    # ---- execution ----

    async def execute(self, code: str, *, runtime: str | None = None,
                      timeout_s: float | None = None, env: dict[str, str] | None = None,
                      stdin: str | None = None) -> ExecResult:
        result: ExecResult | None = None
        async for event in self._run(code, runtime, timeout_s, env, stdin, stream=False):
            if isinstance(event, ExecResult):
                result = event
        assert result is not None  # _run always ends with a result or raises
        return result

    def execute_stream(self, code: str, *, runtime: str | None = None,
                       timeout_s: float | None = None, env: dict[str, str] | None = None,
                       stdin: str | None = None) -> AsyncGenerator[OutputChunk | ExecResult, None]:
        """Output chunks as they are produced, then one ExecResult. Closing or cancelling
        the iterator kills the execution in the guest."""
        return self._run(code, runtime, timeout_s, env, stdin, stream=True)

    async def _run(self, code: str, runtime: str | None, timeout_s: float | None,
                   env: dict[str, str] | None, stdin: str | None,
                   stream: bool) -> AsyncGenerator[OutputChunk | ExecResult, None]:
        mgr = self._manager
        rt_name = runtime or self.runtime
        rt = mgr.resolve_runtime(rt_name)
        mgr.check_code(code)
        timeout = mgr.check_exec_timeout(timeout_s)
        mgr.check_env(env)
        if stdin is not None and len(stdin.encode()) > mgr.limits.max_upload_bytes:
            raise PayloadTooLarge(f"stdin is over {mgr.limits.max_upload_bytes} bytes.",
                                  param="stdin")
        self._check_usable()
        async with self._lock:
            self._check_usable()
            self._touch()
            msg = Execute(id=self.client.new_id(), runtime=rt, code=code, timeout_s=timeout,
                          max_output_bytes=mgr.limits.max_output_bytes,
                          env={**self.env, **(env or {})}, stdin=stdin, stream=stream,
                          rlimits=mgr.exec_rlimits())
            started = time.monotonic()
            outcome = "failed"
            finished = False
            try:
                queue = await self.client.send(msg)
                # The agent enforces the timeout; past it plus a grace, it counts as hung.
                hung_at = started + timeout + _GRACE_S
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
                            yield ExecResult(stdout=item.stdout, stderr=item.stderr,
                                             exit_code=item.exit_code,
                                             duration_ms=item.duration_ms,
                                             timed_out=item.timed_out,
                                             truncated=item.truncated)
                            return
                        elif isinstance(item, Error):
                            finished = True
                            raise _agent_error(item)
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
                self._touch()
                mgr.observer.on_execute(rt_name, outcome, time.monotonic() - started)

    async def _cancel(self, target: int) -> None:
        with contextlib.suppress(ConnectionLost, TimeoutError):
            await self.client.call(Cancel(id=self.client.new_id(), target=target), 5.0)

    # ---- files ----

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> int:
        rel = check_path(path)
        if len(data) > self._manager.limits.max_upload_bytes:
            raise PayloadTooLarge(f"The file is over {self._manager.limits.max_upload_bytes} "
                                  "bytes.", param="body")
        self._check_usable()
        self._touch()
        reply = await self._file_call(WriteFile(id=self.client.new_id(), path=rel, data=data,
                                                mode=mode))
        if not isinstance(reply, Written):
            raise AgentError(f"unexpected reply {type(reply).__name__} to write_file")
        return reply.size

    async def read_file(self, path: str) -> bytes:
        rel = check_path(path)
        self._check_usable()
        self._touch()
        reply = await self._file_call(ReadFile(id=self.client.new_id(), path=rel,
                                               max_bytes=self._manager.limits.max_upload_bytes))
        if not isinstance(reply, FileData):
            raise AgentError(f"unexpected reply {type(reply).__name__} to read_file")
        return reply.data

    async def _file_call(self, msg: WriteFile | ReadFile) -> object:
        try:
            reply = await self.client.call(msg, _FILE_OP_TIMEOUT_S)
        except (TimeoutError, ConnectionLost) as exc:
            await self.mark_dead()
            raise SandboxDead(f"Sandbox {self.id} died: {exc}") from None
        if isinstance(reply, Error):
            raise _agent_error(reply)
        return reply

    # ---- end ----

    async def close(self) -> None:
        """Stop the guest and forget the sandbox (same as the manager's delete)."""
        await self._manager.delete(self.id)

    async def _shutdown(self) -> None:
        self._closed = True
        await self.client.aclose()
        await self.guest.stop()
