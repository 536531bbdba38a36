"""envd's plain HTTP API: ``/files`` upload (multipart, or a raw body) and download,
``/health`` and ``/envs``, over the addressed sandbox; errors as envd's ``{"code",
"message"}``, which the SDK maps by status (404 -> FileNotFoundException, ...)."""

from __future__ import annotations

import functools
import posixpath
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway_core.errors import GatewayError, InvalidRequest
from gateway_sandbox import Sandbox
from gateway_server.e2b_data.scope import current_sandbox, http_message, to_guest

__all__ = ["EnvdError", "WriteInfo", "envd_error", "envd_errors", "routes"]

_READ_BYTES = 1024 * 1024


class EnvdError(msgspec.Struct):
    code: int
    message: str


class WriteInfo(msgspec.Struct):
    """What ``POST /files`` answers for each file written."""

    name: str
    type: str
    path: str


_encoder = msgspec.json.Encoder()


def envd_error(status: int, message: str) -> Response:
    return Response(_encoder.encode(EnvdError(code=status, message=message)),
                    status_code=status, media_type="application/json")


async def _upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_READ_BYTES):
        yield chunk


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A gzip body as it arrives, inflated a bounded piece at a time (the sandbox caps the
    file's size, so a small body that inflates hugely stops at max_upload_bytes)."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    async for chunk in chunks:
        data = chunk
        while data:
            try:
                out = inflater.decompress(data, _READ_BYTES)
            except zlib.error as exc:
                raise InvalidRequest(f"The gzip body is corrupt: {exc}.",
                                     param="Content-Encoding") from None
            if out:
                yield out
            data = inflater.unconsumed_tail
    if not inflater.eof:
        raise InvalidRequest("The gzip body ended early.", param="Content-Encoding")


async def _write(sb: Sandbox, path: str, chunks: AsyncIterator[bytes]) -> WriteInfo:
    await sb.write_file_stream(path, chunks)
    return WriteInfo(name=posixpath.basename(path), type="file", path=path)


async def upload(request: Request) -> Response:
    sb = current_sandbox()
    query_path = request.query_params.get("path")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/octet-stream"):
        if not query_path:
            raise InvalidRequest("path is required with an application/octet-stream body.",
                                 param="path")
        path = to_guest(query_path)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", "gzip"):
            raise InvalidRequest(f"Content-Encoding {encoding!r} is not accepted; send gzip "
                                 "or none.", param="Content-Encoding")
        body = request.stream()
        chunks = _gunzip(body) if encoding == "gzip" else body
        return Response(_encoder.encode([await _write(sb, path, chunks)]),
                        media_type="application/json")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidRequest("Send the file as multipart/form-data (field 'file') or as "
                             "application/octet-stream.", param="file")
    written: list[WriteInfo] = []
    async with request.form(max_fields=0) as form:
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest("The form has no 'file' part.", param="file")
        for upload_file in files:
            # One file: the query's path names it; several: each part's filename does.
            name = query_path if query_path and len(files) == 1 else upload_file.filename
            if not name:
                raise InvalidRequest("Each file part needs a filename (its path).",
                                     param="file")
            written.append(await _write(sb, to_guest(name), _upload_chunks(upload_file)))
    return Response(_encoder.encode(written), media_type="application/json")


async def download(request: Request) -> Response:
    sb = current_sandbox()
    raw = request.query_params.get("path")
    if not raw:
        raise InvalidRequest("path is required.", param="path")
    path = to_guest(raw)
    size, chunks = await sb.open_download(path)
    name = posixpath.basename(path).replace('"', "")
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"content-length": str(size),
                                      "content-disposition": f'attachment; filename="{name}"'})


async def health(request: Request) -> Response:
    current_sandbox()
    return Response(status_code=204)


async def envs(request: Request) -> Response:
    return Response(_encoder.encode(current_sandbox().env), media_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


def envd_errors(handler: Handler) -> Handler:
    """The gateway's errors in envd's shape, the field named."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            return envd_error(exc.status, http_message(exc))
    return endpoint


def routes() -> list[BaseRoute]:
    """envd's HTTP routes."""
    return [Route("/files", envd_errors(download), methods=["GET"]),
            Route("/files", envd_errors(upload), methods=["POST"]),
            Route("/health", envd_errors(health), methods=["GET"]),
            Route("/envs", envd_errors(envs), methods=["GET"])]
