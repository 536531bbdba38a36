"""Raw pass-through of the OpenAI API routes the gateway does not implement itself (files,
batches, images, audio, vector stores, ...): the request goes to an OpenAI-kind provider as it
came (method, path, query, body streamed), with the provider's key instead of the client's,
and the answer comes back streamed. Which client headers go up and which upstream headers
come back is decided here, once, for every front door."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Literal

import aiohttp

from gateway_core.errors import UpstreamTimeout
from gateway_llm.errors import AttemptFailed
from gateway_llm.headers import (
    FORWARDED_REQUEST_HEADERS,
    UPSTREAM_REQUEST_ID,
    forwarded_headers,
    returned_headers,
    upstream_headers,
)
from gateway_llm.providers.base import HTTPProvider, connection_failed

__all__ = [
    "FORWARDED_REQUEST_HEADERS",
    "UPSTREAM_REQUEST_ID",
    "ForwardFailed",
    "MultipartField",
    "boundary_of",
    "find_multipart_field",
    "forward",
    "forwarded_headers",
    "iter_body",
    "returned_headers",
]

# The provider's own session headers that describe its JSON calls, not a raw pass-through.
_PROVIDER_BODY_HEADERS = frozenset({"content-type", "accept"})


class ForwardFailed(Exception):
    """One pass-through attempt got no response. ``body_sent``: whether the upstream may
    have seen (part of) the request, i.e. whether sending it again could repeat it."""

    def __init__(self, failure: AttemptFailed, *, body_sent: bool) -> None:
        super().__init__(failure.error.message)
        self.failure = failure
        self.body_sent = body_sent


async def forward(
    provider: HTTPProvider,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes | AsyncIterable[bytes] | None,
    *,
    forwarded: Mapping[str, str] | None = None,
    authorization: str | None = None,
) -> aiohttp.ClientResponse:
    """Send one request to ``provider``'s base URL + ``path`` (relative to /v1) and return
    once the response headers are in (first-byte timeout). ``headers`` are the client's
    content headers; ``forwarded`` its allow-listed ones (``forwarded_headers``), sent as
    the provider's policy says (``upstream_headers``); the provider's key and configured
    headers are added (``authorization`` replaces the key: the Admin API's own). The
    caller reads the body (``iter_body``) and releases the response. Transport failures
    raise ForwardFailed (502 / 504 for the client)."""
    url = provider.base_url + path
    if query:
        url += "?" + query
    base = {k: v for k, v in provider.headers.items() if k not in _PROVIDER_BODY_HEADERS}
    if authorization is not None:
        base["authorization"] = authorization
    sent = upstream_headers(base, forwarded or {},
                            client_organization=provider.config.client_organization)
    sent.update(headers)
    budget = provider.config.first_byte_timeout_s
    data: object = body
    if body is not None and not isinstance(body, bytes):
        data = _aiohttp_body(body)
    try:
        async with asyncio.timeout(budget):
            return await provider.session.request(method, url, data=data, headers=sent,
                                                  allow_redirects=False)
    except TimeoutError:
        failure = AttemptFailed(
            UpstreamTimeout(f"Provider {provider.name} sent no response within "
                            f"{budget:.1f}s."),
            reason="first_byte_timeout", retryable=True, failover=True)
        raise ForwardFailed(failure, body_sent=True) from None
    except aiohttp.ClientConnectorError as exc:
        # No connection was made: nothing of the request left the gateway.
        raise ForwardFailed(connection_failed(provider.name, exc), body_sent=False) from None
    except aiohttp.ClientError as exc:
        raise ForwardFailed(connection_failed(provider.name, exc), body_sent=True) from None


async def _aiohttp_body(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    # aiohttp takes an async generator as a streamed body (no buffering of the whole).
    async for chunk in body:
        yield chunk


async def iter_body(resp: aiohttp.ClientResponse, provider: str,
                    idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The response body as it arrives, each chunk within the idle timeout; the response is
    released at the end (a body cut short closes the upstream connection). A transport
    failure mid-body ends the iteration with the error raised (the status is already sent)."""
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    chunk = await resp.content.readany()
            except TimeoutError:
                raise UpstreamTimeout(
                    f"Provider {provider} stopped sending its response.") from None
            except aiohttp.ClientError as exc:
                raise connection_failed(provider, exc).error from None
            if not chunk:
                return
            yield chunk
    finally:
        resp.release()


# --- multipart: finding the model field without reading the file ------------------------

_NAME = re.compile(rb'[\s;]name="([^"]*)"', re.IGNORECASE)


MultipartField = tuple[int, int]  # [start, end) of the field's value in the head


def find_multipart_field(head: bytes, boundary: bytes, name: bytes,
                         ) -> MultipartField | Literal["absent", "more"]:
    """Where the value of form field ``name`` lies in the first bytes of a multipart body:
    its (start, end), "absent" if the body ended without it, "more" if the head is too
    short to tell. The parts before it must be whole in ``head`` (the SDKs send plain fields
    before files, so this is the first few hundred bytes)."""
    delim = b"--" + boundary
    pos = head.find(delim)
    if pos < 0:
        return "more" if len(head) < len(delim) + 2 else "absent"
    while True:
        after = pos + len(delim)
        if len(head) < after + 2:
            return "more"
        if head[after:after + 2] == b"--":
            return "absent"
        headers_end = head.find(b"\r\n\r\n", after)
        if headers_end < 0:
            return "more"
        m = _NAME.search(head, after, headers_end)
        start = headers_end + 4
        end = head.find(b"\r\n" + delim, start)
        if end < 0:
            return "more"
        if m is not None and m.group(1) == name:
            return start, end
        pos = end + 2


def boundary_of(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart/form-data content type."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode()
    return None
