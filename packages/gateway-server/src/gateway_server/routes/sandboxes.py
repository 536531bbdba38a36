"""/v1/sandboxes: create, list, describe, delete, extend, pause and resume sandboxes; execute
code (fresh, or in a persistent context) and shell commands (foreground, background), as
JSON or Server-Sent Events; and a filesystem API with streamed uploads and downloads, all
over the app's SandboxManager. Every call on a sandbox counts as activity for its idle TTL.
/v1/templates lists the templates sandboxes can be created from."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway_core.errors import InvalidRequest, PayloadTooLarge, ServiceUnavailable
from gateway_core.sandbox_types import (
    CommandInfo,
    CommandList,
    CommandRequest,
    CommandStdinRequest,
    ContextList,
    CreateContextRequest,
    CreateSandboxRequest,
    ExecResult,
    ExecuteRequest,
    FileList,
    FileWritten,
    MkdirRequest,
    MoveRequest,
    OutputChunk,
    SandboxList,
    SignalRequest,
    TemplateList,
    TimeoutRequest,
)
from gateway_sandbox import Sandbox, SandboxManager
from gateway_server import sandbox_access
from gateway_server.bodies import decode_typed

__all__ = [
    "create_sandbox",
    "delete_sandbox",
    "execute",
    "get_file",
    "get_sandbox",
    "list_sandboxes",
    "list_templates",
    "put_file",
    "routes",
]

T = TypeVar("T")

_create_decoder = msgspec.json.Decoder(CreateSandboxRequest)
_execute_decoder = msgspec.json.Decoder(ExecuteRequest)
_context_decoder = msgspec.json.Decoder(CreateContextRequest)
_command_decoder = msgspec.json.Decoder(CommandRequest)
_stdin_decoder = msgspec.json.Decoder(CommandStdinRequest)
_signal_decoder = msgspec.json.Decoder(SignalRequest)
_timeout_decoder = msgspec.json.Decoder(TimeoutRequest)
_mkdir_decoder = msgspec.json.Decoder(MkdirRequest)
_move_decoder = msgspec.json.Decoder(MoveRequest)
_encoder = msgspec.json.Encoder()
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(obj: object, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def _manager(request: Request) -> SandboxManager:
    manager: SandboxManager | None = getattr(request.app.state, "sandboxes", None)
    if manager is None:
        reason = getattr(request.app.state, "sandbox_unavailable_reason", None)
        raise ServiceUnavailable(f"Sandboxes are unavailable: {reason or 'not configured'}.",
                                 code="sandboxes_unavailable")
    return manager


def _sandbox(request: Request) -> Sandbox:
    sandbox_access.check_visible(request, request.path_params["id"])
    sb = _manager(request).get(request.path_params["id"])
    sb.touch()
    return sb


async def _decode(decoder: msgspec.json.Decoder[T], request: Request,
                  empty_ok: bool = False) -> T:
    body = await request.body()
    if not body:
        if empty_ok:
            body = b"{}"
        else:
            raise InvalidRequest("The request body is empty; expected a JSON object.")
    return decode_typed(decoder, body)


def _int_param(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name) if name in request.query_params \
        else request.path_params.get(name)
    if raw is None:
        if default is None:
            raise InvalidRequest(f"The parameter '{name}' is required.", param=name)
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, got {raw!r}.", param=name) from None


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


async def _sse(first: OutputChunk | ExecResult | CommandInfo,
               events: AsyncGenerator[OutputChunk | ExecResult | CommandInfo, None],
               ) -> AsyncIterator[bytes]:
    try:
        event = first
        while True:
            name = ("result" if isinstance(event, ExecResult) else
                    "exit" if isinstance(event, CommandInfo) else event.stream)
            yield b"event: " + name.encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"
            if not isinstance(event, OutputChunk):
                return
            event = await anext(events)
    finally:
        # A client that went away cancels us here; closing the generator stops the run.
        await events.aclose()


async def _stream(events: AsyncGenerator[OutputChunk | ExecResult | CommandInfo, None]
                  ) -> Response:
    # Pull the first event before answering, so bad input is still a 4xx in the error shape.
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    return StreamingResponse(_sse(first, events), media_type="text/event-stream",
                             headers=_SSE_HEADERS)


async def _last(events: AsyncGenerator[OutputChunk | ExecResult, None]) -> ExecResult:
    result: ExecResult | None = None
    async for event in events:
        if isinstance(event, ExecResult):
            result = event
    assert result is not None
    return result


# ---- sandboxes ----

async def create_sandbox(request: Request) -> Response:
    manager = _manager(request)
    req = await _decode(_create_decoder, request)
    slots = await sandbox_access.hold_quota(request)
    child = None
    try:
        child, child_env = await sandbox_access.child_key(request, manager, req.llm)
        network = None if req.network is None else req.network.allow
        if child is not None and sandbox_access.routes_gateway(manager):
            network = sandbox_access.network_with_gateway(manager, network)
        sb = await manager.create(req.runtime, timeout_s=req.timeout_s,
                                  env={**(req.env or {}), **child_env} if child_env else req.env,
                                  metadata=req.metadata, on_timeout=req.on_timeout,
                                  cpus=req.cpus, memory_mb=req.memory_mb, disk_mb=req.disk_mb,
                                  template=req.template, network=network)
    except BaseException:
        await sandbox_access.not_created(request, child, slots)
        raise
    await sandbox_access.created(request, manager, sb, child, slots)
    return _json(sb.info(), 201)


async def list_templates(request: Request) -> Response:
    return _json(TemplateList(data=_manager(request).template_infos()))


async def list_sandboxes(request: Request) -> Response:
    manager = _manager(request)
    # ?metadata.key=value filters; several are ANDed.
    want = {k[len("metadata."):]: v for k, v in request.query_params.items()
            if k.startswith("metadata.")}
    found = sandbox_access.visible(request, manager.list(want))
    return _json(SandboxList(data=[sb.info() for sb in found]))


async def get_sandbox(request: Request) -> Response:
    sb = _sandbox(request)
    llm = await sandbox_access.llm_usage(request, sb.id)
    if llm is None:
        return _json(sb.info())
    # What the code inside spent with its child key, beside the sandbox's own fields.
    return _json({**msgspec.structs.asdict(sb.info()), "llm": llm})


async def delete_sandbox(request: Request) -> Response:
    manager = _manager(request)
    sandbox_access.check_visible(request, request.path_params["id"])
    await manager.delete(request.path_params["id"])
    return Response(status_code=204)


async def set_timeout(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_timeout_decoder, request)
    await sandbox_access.set_timeout(request, sb, req.timeout_s)
    return _json(sb.info())


async def pause(request: Request) -> Response:
    sb = _sandbox(request)
    await sb.pause()
    return _json(sb.info())


async def resume(request: Request) -> Response:
    sb = _sandbox(request)
    await sb.resume()
    return _json(sb.info())


# ---- execution ----

async def execute(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_execute_decoder, request)
    events = sb.execute_stream(req.code, runtime=req.runtime, timeout_s=req.timeout_s,
                               env=req.env, stdin=req.stdin, context_id=req.context_id,
                               context=req.context, stream=req.stream)
    if not req.stream:
        return _json(await _last(events))
    return await _stream(events)


# ---- contexts ----

async def create_context(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_context_decoder, request, empty_ok=True)
    return _json(await sb.create_context(req.language, cwd=req.cwd, env=req.env), 201)


async def list_contexts(request: Request) -> Response:
    sb = _sandbox(request)
    return _json(ContextList(data=[c.info() for c in sb.contexts.values()]))


async def get_context(request: Request) -> Response:
    return _json(_sandbox(request).context(request.path_params["ctx"]).info())


async def delete_context(request: Request) -> Response:
    await _sandbox(request).delete_context(request.path_params["ctx"])
    return Response(status_code=204)


async def restart_context(request: Request) -> Response:
    return _json(await _sandbox(request).restart_context(request.path_params["ctx"]))


async def interrupt_context(request: Request) -> Response:
    running = await _sandbox(request).interrupt_context(request.path_params["ctx"])
    return _json({"interrupted": running})


# ---- commands ----

async def run_command(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_command_decoder, request)
    if req.background:
        if req.stream:
            raise InvalidRequest("A background command does not stream; follow it with "
                                 "GET .../commands/{pid}?follow=true.", param="stream")
        started = await sb.start_command(req.cmd, cwd=req.cwd, env=req.env,
                                         timeout_s=req.timeout_s, stdin=req.stdin)
        return _json(started, 201)
    events = sb.run_command(req.cmd, cwd=req.cwd, env=req.env, timeout_s=req.timeout_s,
                            stdin=req.stdin, stream=req.stream)
    if not req.stream:
        return _json(await _last(events))
    return await _stream(events)


async def list_commands(request: Request) -> Response:
    return _json(CommandList(data=await _sandbox(request).list_commands()))


async def get_command(request: Request) -> Response:
    sb = _sandbox(request)
    pid = _int_param(request, "pid")
    if _flag(request, "follow"):
        return await _stream(sb.follow_command(pid))
    return _json(await sb.get_command(pid))


async def command_stdin(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_stdin_decoder, request)
    await sb.command_stdin(_int_param(request, "pid"), req.data, eof=req.eof)
    return Response(status_code=204)


async def signal_command(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_signal_decoder, request, empty_ok=True)
    await sb.signal_command(_int_param(request, "pid"), req.signal)
    return Response(status_code=204)


# ---- files ----

def _path(request: Request, name: str = "path") -> str:
    path = request.query_params.get(name)
    if not path:
        raise InvalidRequest(f"The query parameter '{name}' is required.", param=name)
    return path


async def put_file(request: Request) -> Response:
    manager = _manager(request)
    sb = _sandbox(request)
    path = _path(request)
    limit = manager.limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The file is over {limit} bytes.", param="body")
    size = await sb.write_file_stream(path, request.stream())
    return _json(FileWritten(path=path, size=size), 201)


async def get_file(request: Request) -> Response:
    sb = _sandbox(request)
    size, chunks = await sb.open_download(_path(request))
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


async def delete_file(request: Request) -> Response:
    await _sandbox(request).delete_file(_path(request), recursive=_flag(request, "recursive"))
    return Response(status_code=204)


async def list_files(request: Request) -> Response:
    sb = _sandbox(request)
    entries, truncated = await sb.list_files(request.query_params.get("path") or ".",
                                             depth=_int_param(request, "depth", 1))
    return _json(FileList(data=entries, truncated=truncated))


async def stat_file(request: Request) -> Response:
    return _json(await _sandbox(request).stat_file(_path(request)))


async def make_dir(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_mkdir_decoder, request)
    created = await sb.make_dir(req.path)
    return _json(await sb.stat_file(req.path), 201 if created else 200)


async def move_file(request: Request) -> Response:
    sb = _sandbox(request)
    req = await _decode(_move_decoder, request)
    return _json(await sb.move(req.src, req.dst, overwrite=req.overwrite))


_S = "/v1/sandboxes/{id}"
routes = [
    Route("/v1/sandboxes", create_sandbox, methods=["POST"]),
    Route("/v1/sandboxes", list_sandboxes, methods=["GET"]),
    Route("/v1/templates", list_templates, methods=["GET"]),
    Route(_S, get_sandbox, methods=["GET"]),
    Route(_S, delete_sandbox, methods=["DELETE"]),
    Route(_S + "/timeout", set_timeout, methods=["POST"]),
    Route(_S + "/pause", pause, methods=["POST"]),
    Route(_S + "/resume", resume, methods=["POST"]),
    Route(_S + "/execute", execute, methods=["POST"]),
    Route(_S + "/contexts", create_context, methods=["POST"]),
    Route(_S + "/contexts", list_contexts, methods=["GET"]),
    Route(_S + "/contexts/{ctx}", get_context, methods=["GET"]),
    Route(_S + "/contexts/{ctx}", delete_context, methods=["DELETE"]),
    Route(_S + "/contexts/{ctx}/restart", restart_context, methods=["POST"]),
    Route(_S + "/contexts/{ctx}/interrupt", interrupt_context, methods=["POST"]),
    Route(_S + "/commands", run_command, methods=["POST"]),
    Route(_S + "/commands", list_commands, methods=["GET"]),
    Route(_S + "/commands/{pid}", get_command, methods=["GET"]),
    Route(_S + "/commands/{pid}/stdin", command_stdin, methods=["POST"]),
    Route(_S + "/commands/{pid}/signal", signal_command, methods=["POST"]),
    Route(_S + "/files", put_file, methods=["PUT"]),
    Route(_S + "/files", get_file, methods=["GET"]),
    Route(_S + "/files", delete_file, methods=["DELETE"]),
    Route(_S + "/files/list", list_files, methods=["GET"]),
    Route(_S + "/files/stat", stat_file, methods=["GET"]),
    Route(_S + "/files/mkdir", make_dir, methods=["POST"]),
    Route(_S + "/files/move", move_file, methods=["POST"]),
]
