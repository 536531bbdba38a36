"""The SSE reader of the providers against a real aiohttp server that writes the same events
cut in every way a network can cut them: events split across reads and many in one read,
CRLF line ends, multi-line data, comments and id fields, a last event without its blank
line, an event of several megabytes in one line, and a stall (TimeoutError)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway_llm.providers.base import sse_events

BODY = (b": a comment\r\n"
        b"event: start\r\ndata: {\"a\": 1}\r\n\r\n"
        b"id: 7\ndata: line one\ndata:line two\n\n"
        b"retry: 10\n\n"  # no data: no event
        b"data: [DONE]\n\n"
        b"data: tail without its blank line")
EVENTS = [(b"start", b'{"a": 1}'), (b"", b"line one\nline two"), (b"", b"[DONE]"),
          (b"", b"tail without its blank line")]


async def _serve(pieces: list[bytes], pause_s: float = 0.0) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(pause_s)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


async def _read(pieces: list[bytes], idle_timeout: float = 5.0,
                pause_s: float = 0.0) -> list[tuple[bytes, bytes]]:
    runner, url = await _serve(pieces, pause_s)
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            events: AsyncIterator[tuple[bytes, bytes]] = sse_events(resp, idle_timeout)
            return [e async for e in events]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 7, 64], ids=lambda c: f"pieces-of-{c}")
async def test_the_same_events_however_the_body_is_cut(cut: int) -> None:
    pieces = [BODY] if cut == 0 else [BODY[i:i + cut] for i in range(0, len(BODY), cut)]
    # A pause between pieces makes each its own network read.
    assert await _read(pieces, pause_s=0.001 if cut >= 7 else 0.0) == EVENTS


async def test_an_event_of_megabytes_in_one_line() -> None:
    big = b"x" * (3 << 20)
    got = await _read([b"data: ", big[: 1 << 20], big[1 << 20:], b"\n\ndata: [DONE]\n\n"])
    assert got == [(b"", big), (b"", b"[DONE]")]


async def test_a_stall_longer_than_the_idle_timeout_raises() -> None:
    with pytest.raises(TimeoutError):
        await _read([b"data: one\n\n", b"data: two\n\n"], idle_timeout=0.2, pause_s=1.0)
