"""A fake LLM upstream for tests: OpenAI Chat Completions and Anthropic Messages on one
aiohttp server, in its own thread and event loop (so blocking SDK clients can use it too).

It answers like the real services (ids, usage, SSE framing, error bodies, auth checks),
records what it received, and can be told per request to fail, stall, reset the
connection, cut a stream, or stream slowly.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.gateway_process import free_port

OPENAI_KEY = "sk-openai-test"
ANTHROPIC_KEY = "sk-ant-test"


# --- scripted behaviours: each one is consumed by one request -----------------------


@dataclass
class Fail:
    status: int
    body: bytes | None = None  # default: the provider's own error shape for the status
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stall:
    seconds: float  # before any response header


@dataclass
class Reset:
    """Close the connection without an answer."""


@dataclass
class CutStream:
    after_events: int  # events sent before the connection is dropped


@dataclass
class SlowStream:
    delay_s: float  # between events


@dataclass
class Reply:
    text: str | None = None
    tool: tuple[str, dict[str, Any]] | None = None  # (name, arguments)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


Step = Fail | Stall | Reset | CutStream | SlowStream | Reply


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          403: "permission_error", 404: "not_found_error",
                          413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                          529: "overloaded_error"}
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                       403: "invalid_request_error", 404: "invalid_request_error",
                       429: "rate_limit_error", 500: "server_error", 502: "server_error",
                       503: "server_error", 504: "server_error"}


def _openai_error(status: int, message: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message,
                                 "type": _OPENAI_ERROR_TYPES.get(status, "server_error"),
                                 "param": None, "code": code}}).encode()


def _anthropic_error(status: int, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {
        "type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}).encode()


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    out.append(str(part.get("text", "")))
                elif part.get("type") == "tool_result":
                    out.append("tool said: " + _text_of(part.get("content", "")))
        return " ".join(out)
    return ""


def _args_for(schema: Any) -> dict[str, Any]:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    args: dict[str, Any] = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        args[name] = {"integer": 1, "number": 1.5, "boolean": True}.get(str(kind), "Paris")
    return args or {"location": "Paris"}


class FakeUpstream:
    def __init__(self, *, openai_key: str = OPENAI_KEY, anthropic_key: str = ANTHROPIC_KEY):
        self.openai_key = openai_key
        self.anthropic_key = anthropic_key
        self.port = free_port()
        self.requests: list[Received] = []
        self.disconnects = 0
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    # --- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # --- control -----------------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        with self._lock:
            self._steps.extend(steps)

    def reset(self) -> None:
        with self._lock:
            self._steps.clear()
            self.requests.clear()
            self.disconnects = 0

    def _next(self) -> Step | None:
        with self._lock:
            return self._steps.popleft() if self._steps else None

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._tracked(self._openai))
        app.router.add_post("/v1/messages", self._tracked(self._anthropic))
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client (the gateway) that goes away cancels the handler, which
        # is how tests see that the gateway cancelled an upstream request.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5,
                                     handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def cancel_all() -> None:
            for task in list(self._handlers):
                task.cancel()
            loop.stop()

        loop.call_soon_threadsafe(cancel_all)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request plumbing --------------------------------------------------------------

    def _tracked(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                return await handler(request)
            except (asyncio.CancelledError, ConnectionResetError):
                with self._lock:
                    self.disconnects += 1
                raise
            finally:
                self._handlers.discard(task)

        return wrapped

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(Received(request.method, request.path,
                                          {k.lower(): v for k, v in request.headers.items()},
                                          body, time.monotonic()))
        return body

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"}]})

    async def _pre(self, request: web.Request, step: Step | None,
                   error: Any) -> web.StreamResponse | None:
        """Apply a failing step; None means go on and answer."""
        if isinstance(step, Stall):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Reset):
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("scripted reset")
        if isinstance(step, Fail):
            body = step.body if step.body is not None else error(step.status,
                                                                 f"scripted {step.status}")
            return web.Response(status=step.status, body=body, headers=step.headers,
                                content_type="application/json")
        return None

    async def _sse(self, request: web.Request, events: list[bytes],
                   step: Step | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if isinstance(step, CutStream) and i >= step.after_events:
                assert request.transport is not None
                request.transport.abort()
                return resp
            if isinstance(step, SlowStream) and i > 0:
                await asyncio.sleep(step.delay_s)
            await resp.write(event)
        await resp.write_eof()
        return resp

    # --- OpenAI ------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        step = self._next()
        failed = await self._pre(request, step, _openai_error)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return web.Response(status=401, content_type="application/json", body=_openai_error(
                401, "Incorrect API key provided: sk-wr***ng. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_api_key"))
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return web.Response(status=400, content_type="application/json",
                                body=_openai_error(400, "you must provide a model parameter"))
        reply = self._decide_openai(body, step)
        model = body["model"]
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text,
                                       "refusal": None, "annotations": []}
            finish = "stop"
            if reply.tool is not None:
                message["content"] = None
                message["tool_calls"] = [{"id": "call_" + secrets.token_hex(8),
                                          "type": "function",
                                          "function": {"name": reply.tool[0], "arguments":
                                                       json.dumps(reply.tool[1])}}]
                finish = "tool_calls"
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish}],
                "usage": self._usage_openai(reply), "system_fingerprint": "fp_fake",
                "service_tier": "default"})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if reply.tool is not None:
            args = json.dumps(reply.tool[1])
            events.append(chunk({"tool_calls": [{"index": 0, "id": "call_" + secrets.token_hex(8),
                                                 "type": "function", "function": {
                                                     "name": reply.tool[0], "arguments": ""}}]}))
            for i in range(0, len(args), 7):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {
                    "arguments": args[i:i + 7]}}]}))
            events.append(chunk({}, "tool_calls"))
        else:
            words = (reply.text or "").split(" ")
            for i, w in enumerate(words):
                events.append(chunk({"content": w if i == 0 else " " + w}))
            events.append(chunk({}, "stop"))
        if include_usage:
            events.append(b"data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_fake", "choices": [],
                "usage": self._usage_openai(reply)}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return await self._sse(request, events, step)

    def _decide_openai(self, body: dict[str, Any], step: Step | None) -> Reply:
        if isinstance(step, Reply):
            return self._complete_reply(step, body)
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        tools = body.get("tools") or []
        if last.get("role") == "tool":
            return self._complete_reply(Reply(text="The tool said: " + _text_of(
                last.get("content"))), body)
        text = _text_of(last.get("content"))
        choice = body.get("tool_choice")
        if tools and (text.startswith("call tool") or choice == "required"
                      or isinstance(choice, dict)):
            fn = tools[0]["function"]
            if isinstance(choice, dict):
                name = choice["function"]["name"]
                fn = next((t["function"] for t in tools if t["function"]["name"] == name), fn)
            return self._complete_reply(Reply(tool=(fn["name"], _args_for(
                fn.get("parameters")))), body)
        images = sum(1 for m in messages if isinstance(m.get("content"), list)
                     for p in m["content"] if p.get("type") == "image_url")
        suffix = f" [{images} image]" if images else ""
        return self._complete_reply(Reply(text=f"echo: {text}{suffix}"), body)

    def _complete_reply(self, reply: Reply, body: dict[str, Any]) -> Reply:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = _words(json.dumps(body.get("messages", [])))
        completion = reply.completion_tokens
        if completion is None:
            completion = _words(reply.text or json.dumps(reply.tool))
        return Reply(reply.text, reply.tool, prompt, completion)

    @staticmethod
    def _usage_openai(reply: Reply) -> dict[str, Any]:
        p, c = reply.prompt_tokens or 0, reply.completion_tokens or 0
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    # --- Anthropic ---------------------------------------------------------------------

    def _invalid_anthropic(self, body: Any) -> str | None:
        """The checks the real API makes that catch translation bugs."""
        if not isinstance(body, dict):
            return "body: expected an object"
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return f"{key}: Field required"
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return "max_tokens: must be a positive integer"
        messages = body["messages"]
        if not messages or messages[0].get("role") != "user":
            return "messages: first message must use the \"user\" role"
        for i, m in enumerate(messages):
            if m.get("role") not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i and m["role"] == messages[i - 1]["role"]:
                return "messages: roles must alternate between \"user\" and \"assistant\""
            content = m.get("content")
            if isinstance(content, list):
                for j, block in enumerate(content):
                    kind = block.get("type")
                    if kind not in ("text", "image", "tool_use", "tool_result", "thinking",
                                    "redacted_thinking", "document"):
                        return f"messages.{i}.content.{j}.type: invalid"
                    if kind == "tool_use" and not isinstance(block.get("input"), dict):
                        return f"messages.{i}.content.{j}.input: expected an object"
                    if kind == "image" and block.get("source", {}).get("type") not in (
                            "base64", "url"):
                        return f"messages.{i}.content.{j}.source: invalid"
            elif not isinstance(content, str):
                return f"messages.{i}.content: expected a string or a list"
        if "temperature" in body and not 0 <= body["temperature"] <= 1:
            return "temperature: must be between 0 and 1"
        return None

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        step = self._next()
        failed = await self._pre(request, step, _anthropic_error)
        if failed is not None:
            return failed
        if request.headers.get("x-api-key") != self.anthropic_key:
            return web.Response(status=401, content_type="application/json",
                                body=_anthropic_error(401, "invalid x-api-key"))
        if not request.headers.get("anthropic-version"):
            return web.Response(status=400, content_type="application/json",
                                body=_anthropic_error(400, "anthropic-version: header is "
                                                      "required"))
        problem = self._invalid_anthropic(body)
        if problem is not None:
            return web.Response(status=400, content_type="application/json",
                                body=_anthropic_error(400, problem))
        reply = self._decide_anthropic(body, step)
        mid = "msg_" + secrets.token_hex(12)
        model = body["model"]
        usage_in = reply.prompt_tokens or 0
        usage_out = reply.completion_tokens or 0
        if reply.tool is not None:
            block: dict[str, Any] = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(8),
                                     "name": reply.tool[0], "input": reply.tool[1]}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": reply.text or ""}
            stop = "end_turn"
        if not body.get("stream"):
            return web.json_response({
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [block], "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        events = [ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})]
        if reply.tool is not None:
            start = dict(block, input={})
            events.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": start}))
            events.append(ev("ping", {"type": "ping"}))
            args = json.dumps(reply.tool[1])
            for i in range(0, len(args), 7):
                events.append(ev("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": args[i:i + 7]}}))
        else:
            events.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": {"type": "text",
                                                                       "text": ""}}))
            events.append(ev("ping", {"type": "ping"}))
            words = (reply.text or "").split(" ")
            for i, w in enumerate(words):
                events.append(ev("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}}))
        events.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(ev("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop, "stop_sequence": None},
                                           "usage": {"output_tokens": usage_out}}))
        events.append(ev("message_stop", {"type": "message_stop"}))
        return await self._sse(request, events, step)

    def _decide_anthropic(self, body: dict[str, Any], step: Step | None) -> Reply:
        if isinstance(step, Reply):
            return self._complete_reply(step, body)
        messages = body["messages"]
        last = messages[-1]
        content = last.get("content")
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return self._complete_reply(Reply(text="The tool said: " + _text_of(content)), body)
        text = _text_of(content)
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if tools and (text.startswith("call tool") or choice.get("type") in ("any", "tool")):
            tool = tools[0]
            if choice.get("type") == "tool":
                tool = next((t for t in tools if t["name"] == choice["name"]), tool)
            return self._complete_reply(Reply(tool=(tool["name"], _args_for(
                tool.get("input_schema")))), body)
        images = sum(1 for m in messages if isinstance(m.get("content"), list)
                     for b in m["content"] if b.get("type") == "image")
        suffix = f" [{images} image]" if images else ""
        return self._complete_reply(Reply(text=f"echo: {text}{suffix}"), body)
