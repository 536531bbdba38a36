"""envd's connect-rpc services, ``process.Process`` and ``filesystem.Filesystem``, over the
addressed sandbox's commands and files. connectrpc's ASGI applications (generated from
envd's .proto files) do the protocol: JSON and binary codecs, the envelope framing of
streams, the end-of-stream message and error JSON."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shlex
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from gateway_core.errors import GatewayError, InvalidRequest
from gateway_core.sandbox_types import CommandInfo, FileEntry, OutputChunk
from gateway_server.e2b_data._envd.filesystem import filesystem_connect as fs_connect
from gateway_server.e2b_data._envd.filesystem import filesystem_pb as fs
from gateway_server.e2b_data._envd.process import process_connect as proc_connect
from gateway_server.e2b_data._envd.process import process_pb as proc
from gateway_server.e2b_data.scope import connect_error, current_sandbox, from_guest, to_guest
from gateway_server.e2b_data.watchers import Change, Watchers, diff, look

__all__ = ["ErrorInterceptor", "FilesystemService", "ProcessService", "rpc_apps"]

REQ = TypeVar("REQ")
RES = TypeVar("RES")

# envd's SDKs ask for a keepalive at least this often (the Keepalive-Ping-Interval header).
_KEEPALIVE_S = 50.0
_SIGNALS = {proc.Signal.SIGKILL: "KILL", proc.Signal.SIGTERM: "TERM"}
_FILE_TYPES = {"file": fs.FileType.FILE, "dir": fs.FileType.DIRECTORY,
               "symlink": fs.FileType.SYMLINK}
_TYPE_CHARS = {"file": "-", "dir": "d", "symlink": "l"}


class ErrorInterceptor:
    """The gateway's errors as connect-rpc errors, for every kind of method."""

    async def intercept_unary(
            self, call_next: Callable[[REQ, RequestContext[REQ, RES]], Awaitable[RES]],
            request: REQ, ctx: RequestContext[REQ, RES], /) -> RES:
        try:
            return await call_next(request, ctx)
        except GatewayError as exc:
            raise connect_error(exc) from None

    async def intercept_client_stream(
            self, call_next: Callable[[AsyncIterator[REQ], RequestContext[REQ, RES]],
                                      Awaitable[RES]],
            request: AsyncIterator[REQ], ctx: RequestContext[REQ, RES], /) -> RES:
        try:
            return await call_next(request, ctx)
        except GatewayError as exc:
            raise connect_error(exc) from None

    async def intercept_server_stream(
            self, call_next: Callable[[REQ, RequestContext[REQ, RES]], AsyncIterator[RES]],
            request: REQ, ctx: RequestContext[REQ, RES], /) -> AsyncIterator[RES]:
        try:
            async for item in call_next(request, ctx):
                yield item
        except GatewayError as exc:
            raise connect_error(exc) from None


def _pid(selector: proc.ProcessSelector | None, field: str = "process") -> int:
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid):
            return int(pid)
        case Oneof(field="tag"):
            raise InvalidRequest("Processes have no tags here (tags name PTY sessions, "
                                 "which this gateway does not run); select by pid.",
                                 param=field + ".tag")
    raise InvalidRequest("Select the process by pid.", param=field)


def _no_pty(has_pty: bool) -> None:
    if has_pty:
        raise ConnectError(Code.UNIMPLEMENTED, "PTY sessions are not supported by this "
                                               "gateway (field: pty); run a command instead.")


def _event(event: proc.ProcessEvent) -> proc.StartResponse:
    return proc.StartResponse(event=event)


def _start_event(pid: int) -> proc.ProcessEvent:
    start: Oneof[Literal["start"], proc.ProcessEvent.StartEvent] = Oneof(
        "start", proc.ProcessEvent.StartEvent(pid=pid))
    return proc.ProcessEvent(event=start)


def _data_event(chunk: OutputChunk) -> proc.ProcessEvent:
    raw = chunk.data.encode()
    if chunk.stream == "stdout":
        out: Oneof[Literal["stdout"], bytes] = Oneof("stdout", raw)
        event = proc.ProcessEvent.DataEvent(output=out)
    else:
        err: Oneof[Literal["stderr"], bytes] = Oneof("stderr", raw)
        event = proc.ProcessEvent.DataEvent(output=err)
    data: Oneof[Literal["data"], proc.ProcessEvent.DataEvent] = Oneof("data", event)
    return proc.ProcessEvent(event=data)


def _end_event(info: CommandInfo) -> proc.ProcessEvent:
    code = -1 if info.exit_code is None else info.exit_code
    status = f"exit status {code}" if code < 128 else f"signal: {code - 128}"
    end: Oneof[Literal["end"], proc.ProcessEvent.EndEvent] = Oneof(
        "end", proc.ProcessEvent.EndEvent(exit_code=code, exited=True, status=status))
    return proc.ProcessEvent(event=end)


_KEEPALIVE_EVENT: Oneof[Literal["keepalive"], proc.ProcessEvent.KeepAlive] = Oneof(
    "keepalive", proc.ProcessEvent.KeepAlive())
_KEEPALIVE = proc.ProcessEvent(event=_KEEPALIVE_EVENT)


def _keepalive_s(ctx: RequestContext[REQ, RES]) -> float:
    raw = ctx.request_headers.get("keepalive-ping-interval", "")
    return min(_KEEPALIVE_S, float(raw)) if raw.isdigit() and int(raw) > 0 else _KEEPALIVE_S


async def _follow(pid: int, ctx: RequestContext[REQ, RES], *, kill_at_deadline: bool
                  ) -> AsyncIterator[proc.ProcessEvent]:
    """The command's output from its start and live, then its end; keepalives while it is
    quiet. A background task reads the agent so a keepalive never cancels that read. Past
    the client's deadline (connect-timeout-ms) the stream ends in deadline_exceeded, and a
    command it started is killed."""
    sb = current_sandbox()
    queue: asyncio.Queue[OutputChunk | CommandInfo | BaseException] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeout_ms / 1000 if ctx.timeout_ms else None

    async def pump() -> None:
        try:
            async for item in sb.follow_command(pid):
                queue.put_nowait(item)
        except Exception as exc:  # noqa: BLE001 - handed to the stream, which raises it
            queue.put_nowait(exc)

    task = asyncio.create_task(pump())
    interval = _keepalive_s(ctx)
    try:
        while True:
            wait = interval if deadline is None else min(interval, deadline - loop.time())
            try:
                item = await asyncio.wait_for(queue.get(), max(0.0, wait))
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    if kill_at_deadline:
                        with contextlib.suppress(GatewayError):  # it may have just exited
                            await sb.signal_command(pid, "KILL")
                    raise ConnectError(Code.DEADLINE_EXCEEDED,
                                       f"The command (pid {pid}) ran past the request's "
                                       "timeout.") from None
                yield _KEEPALIVE
                continue
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, OutputChunk):
                if item.data:
                    yield _data_event(item)
                continue
            yield _end_event(item)
            return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ProcessService(proc_connect.Process):
    """``process.Process`` over the sandbox's background commands (``/bin/sh -c``)."""

    async def list(self, request: proc.ListRequest,
                   ctx: RequestContext[proc.ListRequest, proc.ListResponse], /
                   ) -> proc.ListResponse:
        running = [c for c in await current_sandbox().list_commands() if c.status == "running"]
        out = []
        for c in running:
            try:
                argv = shlex.split(c.cmd)
            except ValueError:
                argv = ["/bin/sh", "-c", c.cmd]
            out.append(proc.ProcessInfo(
                config=proc.ProcessConfig(cmd=argv[0] if argv else "", args=argv[1:]),
                pid=c.pid))
        return proc.ListResponse(processes=out)

    async def start(self, request: proc.StartRequest,
                    ctx: RequestContext[proc.StartRequest, proc.StartResponse], /
                    ) -> AsyncIterator[proc.StartResponse]:
        _no_pty(request.has_field("pty"))
        cfg = request.process
        if cfg is None or not cfg.cmd:
            raise InvalidRequest("process.cmd must name the program to run.",
                                 param="process.cmd")
        cmd = shlex.join([cfg.cmd, *cfg.args])
        cwd = to_guest(cfg.cwd, "process.cwd") if cfg.has_field("cwd") and cfg.cwd else None
        # The client's deadline (connect-timeout-ms) bounds the command: the stream ends in
        # deadline_exceeded and the agent kills the command then, stream or no stream.
        timeout_ms = ctx.timeout_ms
        sb = current_sandbox()
        started = await sb.start_command(
            cmd, cwd=cwd, env=dict(cfg.envs) or None,
            timeout_s=timeout_ms / 1000 if timeout_ms else None)
        # envd keeps stdin open only when asked (the SDKs send stdin=false by default).
        if request.has_field("stdin") and not request.stdin:
            with contextlib.suppress(GatewayError):  # it may have exited already
                await sb.command_stdin(started.pid, "", eof=True)
        yield _event(_start_event(started.pid))
        async for event in _follow(started.pid, ctx, kill_at_deadline=True):
            yield _event(event)

    async def connect(self, request: proc.ConnectRequest,
                      ctx: RequestContext[proc.ConnectRequest, proc.ConnectResponse], /
                      ) -> AsyncIterator[proc.ConnectResponse]:
        pid = _pid(request.process)
        yield proc.ConnectResponse(event=_start_event(pid))
        async for event in _follow(pid, ctx, kill_at_deadline=False):
            yield proc.ConnectResponse(event=event)

    async def update(self, request: proc.UpdateRequest,
                     ctx: RequestContext[proc.UpdateRequest, proc.UpdateResponse], /
                     ) -> proc.UpdateResponse:
        _pid(request.process)
        _no_pty(True)
        return proc.UpdateResponse()

    async def stream_input(
            self, request: AsyncIterator[proc.StreamInputRequest],
            ctx: RequestContext[proc.StreamInputRequest, proc.StreamInputResponse], /
            ) -> proc.StreamInputResponse:
        pid: int | None = None
        async for message in request:
            event = message.event.value if message.event is not None else None
            if isinstance(event, proc.StreamInputRequest.StartEvent):
                pid = _pid(event.process, "start.process")
            elif isinstance(event, proc.StreamInputRequest.DataEvent):
                if pid is None:
                    raise InvalidRequest("The first message must be the start event "
                                         "selecting the process.", param="start")
                await self._input(pid, event.input, "data.input")
        return proc.StreamInputResponse()

    async def send_input(self, request: proc.SendInputRequest,
                         ctx: RequestContext[proc.SendInputRequest, proc.SendInputResponse], /
                         ) -> proc.SendInputResponse:
        await self._input(_pid(request.process), request.input, "input")
        return proc.SendInputResponse()

    @staticmethod
    async def _input(pid: int, data: proc.ProcessInput | None, field: str) -> None:
        match data.input if data is not None else None:
            case Oneof(field="stdin", value=raw):
                try:
                    text = bytes(raw).decode()
                except UnicodeDecodeError:
                    raise InvalidRequest("stdin must be UTF-8 text here.",
                                         param=field + ".stdin") from None
                await current_sandbox().command_stdin(pid, text)
            case Oneof(field="pty"):
                _no_pty(True)
            case _:
                raise InvalidRequest("Send stdin bytes.", param=field)

    async def send_signal(self, request: proc.SendSignalRequest,
                          ctx: RequestContext[proc.SendSignalRequest,
                                              proc.SendSignalResponse], /
                          ) -> proc.SendSignalResponse:
        pid = _pid(request.process)
        name = _SIGNALS.get(request.signal)
        if name is None:
            raise InvalidRequest("signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL.",
                                 param="signal")
        await current_sandbox().signal_command(pid, name)
        return proc.SendSignalResponse()

    async def close_stdin(self, request: proc.CloseStdinRequest,
                          ctx: RequestContext[proc.CloseStdinRequest,
                                              proc.CloseStdinResponse], /
                          ) -> proc.CloseStdinResponse:
        await current_sandbox().command_stdin(_pid(request.process), "", eof=True)
        return proc.CloseStdinResponse()


def entry_info(e: FileEntry) -> fs.EntryInfo:
    perms = _TYPE_CHARS.get(e.type, "?") + stat.filemode(e.mode & 0o7777)[1:]
    info = fs.EntryInfo(
        name=e.name, type=_FILE_TYPES.get(e.type, fs.FileType.UNSPECIFIED),
        path=from_guest(e.path), size=e.size, mode=e.mode & 0o7777, permissions=perms,
        owner="user", group="user",
        modified_time=Timestamp.from_datetime(
            datetime.datetime.fromtimestamp(e.mtime, datetime.UTC)))
    if e.target is not None:
        info.symlink_target = e.target
    return info


_EVENT_TYPES = {"create": fs.EventType.CREATE, "write": fs.EventType.WRITE,
                "remove": fs.EventType.REMOVE, "chmod": fs.EventType.CHMOD}
# How often a WatchDir stream looks at the directory again.
_WATCH_POLL_S = 0.5


def _fs_event(change: Change, include_entry: bool) -> fs.FilesystemEvent:
    event = fs.FilesystemEvent(name=change.name, type=_EVENT_TYPES[change.kind])
    if include_entry and change.entry is not None:
        event.entry = entry_info(change.entry)
    return event


class FilesystemService(fs_connect.Filesystem):
    """``filesystem.Filesystem`` over the sandbox's file API (confined to its work dir);
    watches compare the directory's listings (gateway_server.e2b_data.watchers)."""

    def __init__(self) -> None:
        self.watchers = Watchers()

    async def stat(self, request: fs.StatRequest,
                   ctx: RequestContext[fs.StatRequest, fs.StatResponse], /) -> fs.StatResponse:
        entry = await current_sandbox().stat_file(to_guest(request.path))
        return fs.StatResponse(entry=entry_info(entry))

    async def make_dir(self, request: fs.MakeDirRequest,
                       ctx: RequestContext[fs.MakeDirRequest, fs.MakeDirResponse], /
                       ) -> fs.MakeDirResponse:
        sb = current_sandbox()
        path = to_guest(request.path)
        if not await sb.make_dir(path):
            raise ConnectError(Code.ALREADY_EXISTS, f"{request.path} already exists "
                                                    "(field: path).")
        return fs.MakeDirResponse(entry=entry_info(await sb.stat_file(path)))

    async def move(self, request: fs.MoveRequest,
                   ctx: RequestContext[fs.MoveRequest, fs.MoveResponse], /) -> fs.MoveResponse:
        entry = await current_sandbox().move(to_guest(request.source, "source"),
                                             to_guest(request.destination, "destination"),
                                             overwrite=True)
        return fs.MoveResponse(entry=entry_info(entry))

    async def list_dir(self, request: fs.ListDirRequest,
                       ctx: RequestContext[fs.ListDirRequest, fs.ListDirResponse], /
                       ) -> fs.ListDirResponse:
        entries, _ = await current_sandbox().list_files(to_guest(request.path),
                                                        depth=max(1, request.depth))
        return fs.ListDirResponse(entries=[entry_info(e) for e in entries])

    async def remove(self, request: fs.RemoveRequest,
                     ctx: RequestContext[fs.RemoveRequest, fs.RemoveResponse], /
                     ) -> fs.RemoveResponse:
        await current_sandbox().delete_file(to_guest(request.path), recursive=True)
        return fs.RemoveResponse()

    async def watch_dir(self, request: fs.WatchDirRequest,
                        ctx: RequestContext[fs.WatchDirRequest, fs.WatchDirResponse], /
                        ) -> AsyncIterator[fs.WatchDirResponse]:
        sb = current_sandbox()
        path = to_guest(request.path)
        seen = await look(sb, path, request.recursive)
        started: Oneof[Literal["start"], fs.WatchDirResponse.StartEvent] = Oneof(
            "start", fs.WatchDirResponse.StartEvent())
        yield fs.WatchDirResponse(event=started)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeout_ms / 1000 if ctx.timeout_ms else None
        keepalive_at = loop.time() + _keepalive_s(ctx)
        while deadline is None or loop.time() < deadline:
            await asyncio.sleep(_WATCH_POLL_S)
            now = await look(sb, path, request.recursive)
            for change in diff(seen, now):
                item: Oneof[Literal["filesystem"], fs.FilesystemEvent] = Oneof(
                    "filesystem", _fs_event(change, request.include_entry))
                yield fs.WatchDirResponse(event=item)
            seen = now
            if loop.time() >= keepalive_at:
                keepalive_at = loop.time() + _keepalive_s(ctx)
                alive: Oneof[Literal["keepalive"], fs.WatchDirResponse.KeepAlive] = Oneof(
                    "keepalive", fs.WatchDirResponse.KeepAlive())
                yield fs.WatchDirResponse(event=alive)
        raise ConnectError(Code.DEADLINE_EXCEEDED, f"The watch of {request.path} ran past "
                                                   "the request's timeout.")

    async def create_watcher(self, request: fs.CreateWatcherRequest,
                             ctx: RequestContext[fs.CreateWatcherRequest,
                                                 fs.CreateWatcherResponse], /
                             ) -> fs.CreateWatcherResponse:
        wid = await self.watchers.create(current_sandbox(), to_guest(request.path),
                                         request.recursive, request.include_entry)
        return fs.CreateWatcherResponse(watcher_id=wid)

    async def get_watcher_events(self, request: fs.GetWatcherEventsRequest,
                                 ctx: RequestContext[fs.GetWatcherEventsRequest,
                                                     fs.GetWatcherEventsResponse], /
                                 ) -> fs.GetWatcherEventsResponse:
        sb = current_sandbox()
        watch = self.watchers.get(sb, request.watcher_id)
        changes = await self.watchers.changes(sb, request.watcher_id)
        return fs.GetWatcherEventsResponse(
            events=[_fs_event(c, watch.include_entry) for c in changes])

    async def remove_watcher(self, request: fs.RemoveWatcherRequest,
                             ctx: RequestContext[fs.RemoveWatcherRequest,
                                                 fs.RemoveWatcherResponse], /
                             ) -> fs.RemoveWatcherResponse:
        self.watchers.remove(current_sandbox(), request.watcher_id)
        return fs.RemoveWatcherResponse()


def rpc_apps() -> list[proc_connect.ProcessASGIApplication
                       | fs_connect.FilesystemASGIApplication]:
    """The two services as ASGI apps (each serves ``/<package>.<Service>/<Method>``)."""
    interceptors = [ErrorInterceptor()]
    # Compression off both ways, as envd's SDKs send and expect.
    return [proc_connect.ProcessASGIApplication(ProcessService(), interceptors=interceptors,
                                                compressions=()),
            fs_connect.FilesystemASGIApplication(FilesystemService(),
                                                 interceptors=interceptors,
                                                 compressions=())]

