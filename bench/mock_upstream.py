"""A fast mock LLM upstream for the benchmarks: a raw asyncio HTTP/1.1 server with keep-alive
answering canned OpenAI chat completions, OpenAI Responses and Anthropic Messages, each as
JSON or as SSE when the body asks to stream.

It parses only what it must (request line, Content-Length, whether the body asks to stream),
so one core serves several times what the gateway can; bench/llm.py measures and prints that.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import cast

OPENAI_JSON = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello from the mock upstream."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}'
)
ANTHROPIC_JSON = (
    b'{"id":"msg_bench","type":"message","role":"assistant","model":"bench-model",'
    b'"content":[{"type":"text","text":"Hello from the mock upstream."}],'
    b'"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":12,"output_tokens":7}}'
)

_RESPONSE_HEAD = (
    b'"id":"resp_bench","object":"response","created_at":1700000000,"model":"bench-model",'
    b'"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,'
    b'"parallel_tool_calls":true,"previous_response_id":null,"temperature":1.0,'
    b'"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled",'
    b'"text":{"format":{"type":"text"}},"metadata":{}'
)
_RESPONSE_USAGE = (
    b'"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},'
    b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}'
)


def _response_message(text: bytes, status: bytes = b"completed") -> bytes:
    return (b'{"type":"message","id":"msg_bench","status":"' + status + b'","role":"assistant",'
            b'"content":[{"type":"output_text","text":"' + text + b'","annotations":[]}]}')


RESPONSES_JSON = (
    b"{" + _RESPONSE_HEAD + b',"status":"completed","output":['
    + _response_message(b"Hello from the mock upstream.") + b"],"
    + _RESPONSE_USAGE % (7, 19) + b"}"
)


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _openai_events(n: int) -> list[bytes]:
    head = (b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
            b'"model":"bench-model","choices":[{"index":0,"delta":')
    events = [b"data: " + head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n']
    for i in range(n):
        events.append(b"data: " + head + b'{"content":"tok%d "},"finish_reason":null}]}\n\n' % i)
    events.append(b"data: " + head + b'{},"finish_reason":"stop"}]}\n\n')
    events.append(b"data: [DONE]\n\n")
    return events


def _anthropic_events(n: int) -> list[bytes]:
    def ev(name: bytes, data: bytes) -> bytes:
        return b"event: " + name + b"\ndata: " + data + b"\n\n"

    events = [
        ev(b"message_start", b'{"type":"message_start","message":{"id":"msg_bench",'
           b'"type":"message","role":"assistant","model":"bench-model","content":[],'
           b'"stop_reason":null,"stop_sequence":null,'
           b'"usage":{"input_tokens":12,"output_tokens":1}}}'),
        ev(b"content_block_start", b'{"type":"content_block_start","index":0,'
           b'"content_block":{"type":"text","text":""}}'),
    ]
    for i in range(n):
        events.append(ev(b"content_block_delta", b'{"type":"content_block_delta","index":0,'
                         b'"delta":{"type":"text_delta","text":"tok%d "}}' % i))
    events += [
        ev(b"content_block_stop", b'{"type":"content_block_stop","index":0}'),
        ev(b"message_delta", b'{"type":"message_delta","delta":{"stop_reason":"end_turn",'
           b'"stop_sequence":null},"usage":{"output_tokens":%d}}' % n),
        ev(b"message_stop", b'{"type":"message_stop"}'),
    ]
    return events


def _responses_events(n: int) -> list[bytes]:
    """The event sequence of a streamed Response with one text message (OpenAI's
    "Streaming events" reference), each with its sequence_number."""
    seq = iter(range(1 << 30))

    def ev(name: bytes, fields: bytes) -> bytes:
        return (b"event: " + name + b'\ndata: {"type":"' + name + b'","sequence_number":%d,'
                % next(seq) + fields + b"}\n\n")

    text = b"".join(b"tok%d " % i for i in range(n))
    item = b'"item_id":"msg_bench","output_index":0,"content_index":0'
    events = [
        ev(b"response.created", b'"response":{' + _RESPONSE_HEAD
           + b',"status":"in_progress","output":[],"usage":null}'),
        ev(b"response.in_progress", b'"response":{' + _RESPONSE_HEAD
           + b',"status":"in_progress","output":[],"usage":null}'),
        ev(b"response.output_item.added", b'"output_index":0,"item":{"type":"message",'
           b'"id":"msg_bench","status":"in_progress","role":"assistant","content":[]}'),
        ev(b"response.content_part.added", item + b',"part":{"type":"output_text",'
           b'"text":"","annotations":[]}'),
    ]
    for i in range(n):
        events.append(ev(b"response.output_text.delta",
                         item + b',"delta":"tok%d ","logprobs":[]' % i))
    events += [
        ev(b"response.output_text.done", item + b',"text":"' + text + b'","logprobs":[]'),
        ev(b"response.content_part.done", item + b',"part":{"type":"output_text","text":"'
           + text + b'","annotations":[]}'),
        ev(b"response.output_item.done", b'"output_index":0,"item":' + _response_message(text)),
        ev(b"response.completed", b'"response":{' + _RESPONSE_HEAD
           + b',"status":"completed","output":[' + _response_message(text) + b"],"
           + _RESPONSE_USAGE % (n, 12 + n) + b"}"),
    ]
    return events


def _json_response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
# An OTLP/HTTP trace sink for the traced gateway: an empty ExportTraceServiceResponse.
OTLP_OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
           b"Content-Length: 0\r\n\r\n")
NOT_FOUND = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
             b"\r\n{}")


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection. Requests are answered in order; while a stream is being
    sent, further input waits in the buffer (clients do not pipeline behind a stream)."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._drain()

    def _drain(self) -> None:
        while not self.streaming and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17: j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4:total])
            del self.buf[:total]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.server.requests += 1
        path = head[: head.find(b"\r\n")].split(b" ")[1] if b" " in head else b""
        stream = b'"stream":true' in body or b'"stream": true' in body
        if path.endswith(b"/chat/completions"):
            if stream:
                self._stream(self.server.openai_events)
            else:
                self.transport.write(self.server.openai_json)
        elif path.endswith(b"/messages"):
            if stream:
                self._stream(self.server.anthropic_events)
            else:
                self.transport.write(self.server.anthropic_json)
        elif path.endswith(b"/responses"):
            if stream:
                self._stream(self.server.responses_events)
            else:
                self.transport.write(self.server.responses_json)
        elif path.endswith(b"/v1/traces"):
            self.server.spans_batches += 1
            self.transport.write(OTLP_OK)
        else:
            self.transport.write(NOT_FOUND)

    def _stream(self, events: list[bytes]) -> None:
        assert self.transport is not None
        self.streaming = True
        self.transport.write(SSE_HEAD + _chunk(events[0]))
        loop = asyncio.get_running_loop()
        delay = self.server.chunk_delay_s

        def send(i: int) -> None:
            if self.transport is None:
                return
            if i == len(events):
                self.transport.write(b"0\r\n\r\n")
                self.streaming = False
                self._drain()
                return
            self.transport.write(_chunk(events[i]))
            loop.call_later(delay, send, i + 1)

        loop.call_later(delay, send, 1)


class MockServer:
    def __init__(self, chunks: int, chunk_delay_s: float) -> None:
        self.requests = 0
        self.spans_batches = 0
        self.chunk_delay_s = chunk_delay_s
        self.openai_json = _json_response(OPENAI_JSON)
        self.anthropic_json = _json_response(ANTHROPIC_JSON)
        self.responses_json = _json_response(RESPONSES_JSON)
        self.responses_events = _responses_events(chunks)
        self.openai_events = _openai_events(chunks)
        self.anthropic_events = _anthropic_events(chunks)


async def serve(host: str, port: int, chunks: int, chunk_delay_s: float) -> None:
    server = MockServer(chunks, chunk_delay_s)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: MockProtocol(server), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream listening on http://{host}:{port}", flush=True)
    started = time.monotonic()
    await stop.wait()
    srv.close()
    print(f"mock upstream: {server.requests} requests ({server.spans_batches} span batches) "
          f"in {time.monotonic() - started:.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    p.add_argument("--chunk-delay-ms", type=float, default=5.0,
                   help="pause between streamed chunks")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(args.host, args.port, args.chunks, args.chunk_delay_ms / 1000))


if __name__ == "__main__":
    main()
