"""/v1/sandboxes: create, list, describe, delete sandboxes, execute code (JSON or Server-Sent
Events) and move files in and out, over the app's SandboxManager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway_core.errors import InvalidRequest, PayloadTooLarge, ServiceUnavailable
from gateway_core.sandbox_types import (
    CreateSandboxRequest,
    ExecResult,
    ExecuteRequest,
    FileWritten,
    SandboxList,
)
from gateway_sandbox import SandboxManager
from gateway_server.bodies import decode_typed

__all__ = [
    "create_sandbox",
    "delete_sandbox",
    "execute",
    "get_file",
    "get_sandbox",
    "list_sandboxes",
    "put_file",
    "routes",
]

T = TypeVar("T")

_create_decoder = msgspec.json.Decoder(CreateSandboxRequest)
_execute_decoder = msgspec.json.Decoder(ExecuteRequest)
_encoder = msgspec.json.Encoder()


def _json(obj: object, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def _manager(request: Request) -> SandboxManager:
    manager: SandboxManager | None = getattr(request.app.state, "sandboxes", None)
    if manager is None:
        reason = getattr(request.app.state, "sandbox_unavailable_reason", None)
        raise ServiceUnavailable(f"Sandboxes are unavailable: {reason or 'not configured'}.",
                                 code="sandboxes_unavailable")
    return manager


async def _decode(decoder: msgspec.json.Decoder[T], request: Request) -> T:
    body = await request.body()
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    return decode_typed(decoder, body)


async def create_sandbox(request: Request) -> Response:
    manager = _manager(request)
    req = await _decode(_create_decoder, request)
    sb = await manager.create(req.runtime, timeout_s=req.timeout_s, env=req.env,
                              metadata=req.metadata)
    return _json(sb.info(), 201)


async def list_sandboxes(request: Request) -> Response:
    manager = _manager(request)
    # ?metadata.key=value filters; several are ANDed.
    want = {k[len("metadata."):]: v for k, v in request.query_params.items()
            if k.startswith("metadata.")}
    return _json(SandboxList(data=[sb.info() for sb in manager.list(want)]))


async def get_sandbox(request: Request) -> Response:
    return _json(_manager(request).get(request.path_params["id"]).info())


async def delete_sandbox(request: Request) -> Response:
    await _manager(request).delete(request.path_params["id"])
    return Response(status_code=204)


async def execute(request: Request) -> Response:
    manager = _manager(request)
    sb = manager.get(request.path_params["id"])
    req = await _decode(_execute_decoder, request)
    if not req.stream:
        result = await sb.execute(req.code, runtime=req.runtime, timeout_s=req.timeout_s,
                                  env=req.env, stdin=req.stdin)
        return _json(result)
    events = sb.execute_stream(req.code, runtime=req.runtime, timeout_s=req.timeout_s,
                               env=req.env, stdin=req.stdin)
    # Pull the first event before answering, so bad input is still a 4xx in the error shape.
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def sse() -> AsyncIterator[bytes]:
        try:
            event = first
            while True:
                name = "result" if isinstance(event, ExecResult) else event.stream
                yield b"event: " + name.encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"
                if isinstance(event, ExecResult):
                    return
                event = await anext(events)
        finally:
            # A client that went away cancels us here; closing the generator kills the run.
            await events.aclose()

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _path(request: Request) -> str:
    path = request.query_params.get("path")
    if not path:
        raise InvalidRequest("The query parameter 'path' is required.", param="path")
    return path


async def put_file(request: Request) -> Response:
    manager = _manager(request)
    sb = manager.get(request.path_params["id"])
    path = _path(request)
    limit = manager.limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The file is over {limit} bytes.", param="body")
    data = await request.body()
    size = await sb.write_file(path, data)
    return _json(FileWritten(path=path, size=size), 201)


async def get_file(request: Request) -> Response:
    manager = _manager(request)
    sb = manager.get(request.path_params["id"])
    data = await sb.read_file(_path(request))
    return Response(data, media_type="application/octet-stream")


routes = [
    Route("/v1/sandboxes", create_sandbox, methods=["POST"]),
    Route("/v1/sandboxes", list_sandboxes, methods=["GET"]),
    Route("/v1/sandboxes/{id}", get_sandbox, methods=["GET"]),
    Route("/v1/sandboxes/{id}", delete_sandbox, methods=["DELETE"]),
    Route("/v1/sandboxes/{id}/execute", execute, methods=["POST"]),
    Route("/v1/sandboxes/{id}/files", put_file, methods=["PUT"]),
    Route("/v1/sandboxes/{id}/files", get_file, methods=["GET"]),
]
