"""EventStreamResponse: chunks go out as they come; a client disconnect ends the stream
quietly and closes the iterator; any other cancellation goes on up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.types import Message

from gateway_server.event_stream import EventStreamResponse


class Events:
    def __init__(self, chunks: list[bytes], then_wait: bool = False) -> None:
        self.chunks = chunks
        self.then_wait = then_wait
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.then_wait:
            await asyncio.sleep(3600)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


def disconnect_after(event: asyncio.Event) -> Callable[[], Awaitable[Message]]:
    """An ASGI receive whose one message, a disconnect, comes once ``event`` is set."""
    async def receive() -> Message:
        await event.wait()
        return {"type": "http.disconnect"}
    return receive


async def test_chunks_go_out_in_order_and_the_iterator_is_closed() -> None:
    sent: list[Message] = []
    receive = disconnect_after(asyncio.Event())

    async def send(message: Message) -> None:
        sent.append(message)

    events = Events([b"data: 1\n\n", b"data: 2\n\n"])
    response = EventStreamResponse(events, headers={"x-gateway-provider": "p"})
    await response({"type": "http"}, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    assert (b"x-gateway-provider", b"p") in sent[0]["headers"]
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert sent[-1]["more_body"] is False
    assert events.closed


async def test_a_disconnect_ends_the_stream_quietly_and_closes_the_iterator() -> None:
    sent: list[Message] = []
    gone = asyncio.Event()
    receive = disconnect_after(gone)

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            gone.set()  # the client leaves after the first event

    events = Events([b"data: 1\n\n"], then_wait=True)
    await asyncio.wait_for(EventStreamResponse(events)({"type": "http"}, receive, send), 5)
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"]
    assert events.closed


async def test_a_cancellation_from_outside_goes_on_up() -> None:
    receive = disconnect_after(asyncio.Event())

    async def send(message: Message) -> None:
        return None

    events = Events([b"data: 1\n\n"], then_wait=True)
    task = asyncio.create_task(EventStreamResponse(events)({"type": "http"}, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events.closed
