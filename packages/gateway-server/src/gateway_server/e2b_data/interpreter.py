"""The code interpreter's API (port 49999) as ``e2b-code-interpreter`` calls it, over the
sandbox's persistent contexts (Python cell runner, Node ``vm``): ``POST /execute`` streams
JSON lines (stdout, stderr, result with its MIME bundle, error, execution count, end) and
``/contexts`` creates, lists, deletes, restarts and interrupts them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway_core.errors import GatewayError, InvalidRequest
from gateway_core.sandbox_types import ContextInfo, ExecOutput, ExecResult, OutputChunk
from gateway_server.bodies import decode_typed
from gateway_server.e2b_data.envd_http import envd_errors
from gateway_server.e2b_data.scope import current_sandbox, from_guest, http_message, to_guest

__all__ = ["Context", "ExecuteRequest", "NewContext", "result_event", "routes"]

# E2B's language names -> our runtimes (a runtime's own name works too), and back.
_LANGUAGES = {"python": "python", "python3": "python", "javascript": "node", "js": "node",
              "node": "node"}
_E2B_LANGUAGE = {"python": "python", "node": "javascript"}
# MIME types -> the Result fields the SDK reads; anything else goes to ``extra``.
_MIME_FIELDS = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown",
                "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
                "application/pdf": "pdf", "text/latex": "latex", "application/json": "json",
                "application/javascript": "javascript"}


class ExecuteRequest(msgspec.Struct, kw_only=True):
    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None


class NewContext(msgspec.Struct, kw_only=True):
    language: str | None = None
    cwd: str | None = None


class Context(msgspec.Struct, kw_only=True):
    id: str
    language: str
    cwd: str


class Stdout(msgspec.Struct, tag_field="type", tag="stdout", kw_only=True):
    text: str
    timestamp: int


class Stderr(msgspec.Struct, tag_field="type", tag="stderr", kw_only=True):
    text: str
    timestamp: int


class Error(msgspec.Struct, tag_field="type", tag="error", kw_only=True):
    name: str
    value: str
    traceback: str


class ExecutionCount(msgspec.Struct, tag_field="type", tag="number_of_executions",
                     kw_only=True):
    execution_count: int


class End(msgspec.Struct, tag_field="type", tag="end_of_execution"):
    pass


_execute_decoder = msgspec.json.Decoder(ExecuteRequest)
_context_decoder = msgspec.json.Decoder(NewContext)
_encoder = msgspec.json.Encoder()


def _runtime(language: str | None) -> str:
    if language is None:
        return "python"
    runtime = _LANGUAGES.get(language.lower())
    if runtime is None:
        raise InvalidRequest(f"Language {language!r} is not served here; use python or "
                             "javascript.", param="language")
    return runtime


def _context(info: ContextInfo) -> Context:
    return Context(id=info.id, language=_E2B_LANGUAGE.get(info.language, info.language),
                   cwd=from_guest(info.cwd or "."))


def result_event(outputs: list[ExecOutput]) -> dict[str, object]:
    """One MIME bundle as the SDK's Result: ``{"type": "result", "text": ..., "png": ...,
    "is_main_result": ...}``."""
    event: dict[str, object] = {"type": "result",
                                "is_main_result": any(o.value for o in outputs)}
    extra: dict[str, str] = {}
    for o in outputs:
        field = _MIME_FIELDS.get(o.mime)
        if field is None:
            extra[o.mime] = o.data
        elif field == "json":
            try:
                event["json"] = json.loads(o.data)
            except ValueError:
                extra[o.mime] = o.data
        else:
            event[field] = o.data
    if extra:
        event["extra"] = extra
    return event


def _line(obj: object) -> bytes:
    return _encoder.encode(obj) + b"\n"


def _end_lines(result: ExecResult) -> list[bytes]:
    bundles: dict[int, list[ExecOutput]] = {}
    for o in result.results:
        bundles.setdefault(o.bundle, []).append(o)
    lines = [_line(result_event(outputs)) for _, outputs in sorted(bundles.items())]
    if result.error is not None:
        lines.append(_line(Error(name=result.error.name, value=result.error.value,
                                 traceback=result.error.traceback)))
    elif result.timed_out:
        lines.append(_line(Error(name="TimeoutError", value="The execution timed out.",
                                 traceback="")))
    if result.execution_count is not None:
        lines.append(_line(ExecutionCount(execution_count=result.execution_count)))
    lines.append(_line(End()))
    return lines


async def execute(request: Request) -> Response:
    sb = current_sandbox()
    req = decode_typed(_execute_decoder, await request.body())
    if req.env_vars:
        raise InvalidRequest("Per-execution env_vars are not supported here: a context keeps "
                             "its environment; set envs when creating the sandbox.",
                             param="env_vars")
    if req.context_id is not None:
        if req.language is not None:
            raise InvalidRequest("Give context_id or language, not both.", param="language")
        sb.context(req.context_id)  # a 404 before the stream starts
        events = sb.execute_stream(req.code, context_id=req.context_id)
    else:
        events = sb.execute_stream(req.code, context=_runtime(req.language))
    # The first event is awaited here, so a bad request is an error status, not a stream.
    first = await anext(events)

    async def lines() -> AsyncIterator[bytes]:
        try:
            item: OutputChunk | ExecResult = first
            while True:
                if isinstance(item, OutputChunk):
                    cls = Stdout if item.stream == "stdout" else Stderr
                    yield _line(cls(text=item.data, timestamp=time.time_ns()))
                else:
                    for line in _end_lines(item):
                        yield line
                    return
                item = await anext(events)
        except GatewayError as exc:
            yield _line(Error(name=type(exc).__name__, value=http_message(exc),
                              traceback=""))
        finally:
            await events.aclose()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def create_context(request: Request) -> Response:
    sb = current_sandbox()
    req = decode_typed(_context_decoder, await request.body() or b"{}")
    cwd = to_guest(req.cwd, "cwd") if req.cwd else None
    info = await sb.create_context(_runtime(req.language), cwd=cwd)
    return Response(_encoder.encode(_context(info)), media_type="application/json")


async def list_contexts(request: Request) -> Response:
    sb = current_sandbox()
    found = [_context(c.info()) for c in sb.contexts.values()]
    return Response(_encoder.encode(found), media_type="application/json")


async def delete_context(request: Request) -> Response:
    await current_sandbox().delete_context(request.path_params["id"])
    return Response(status_code=204)


async def restart_context(request: Request) -> Response:
    await current_sandbox().restart_context(request.path_params["id"])
    return Response(status_code=204)


async def interrupt_context(request: Request) -> Response:
    await current_sandbox().interrupt_context(request.path_params["id"])
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    """The code interpreter's routes, errors in envd's ``{"code", "message"}`` shape."""
    return [Route("/execute", envd_errors(execute), methods=["POST"]),
            Route("/contexts", envd_errors(create_context), methods=["POST"]),
            Route("/contexts", envd_errors(list_contexts), methods=["GET"]),
            Route("/contexts/{id}", envd_errors(delete_context), methods=["DELETE"]),
            Route("/contexts/{id}/restart", envd_errors(restart_context), methods=["POST"]),
            Route("/contexts/{id}/interrupt", envd_errors(interrupt_context), methods=["POST"])]
