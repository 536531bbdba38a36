"""A fake LLM upstream: OpenAI Chat Completions and Anthropic Messages on one aiohttp server in
its own thread and event loop (so blocking SDK clients and async tests can both use it).

It answers like the real services (ids, usage, SSE framing, auth checks, error bodies, request
validation), records what it received, and can be scripted per request to fail, stall, reset
the connection, cut a stream, stream slowly or reply with custom content.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "ANTHROPIC_KEY",
    "OPENAI_KEY",
    "CutStream",
    "Fail",
    "FakeUpstream",
    "Kind",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SlowStream",
    "Stall",
    "Step",
    "ToolCall",
    "anthropic_error_body",
    "openai_error_body",
]

OPENAI_KEY = "sk-openai-test"
ANTHROPIC_KEY = "sk-ant-test"

Kind = Literal["openai", "anthropic"]


# --- scripted steps: each one is consumed by exactly one chat/messages request -------------


@dataclass(frozen=True)
class Fail:
    """Answer with this status; the body defaults to the provider's own error shape."""

    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None  # message in the default body


@dataclass(frozen=True)
class Stall:
    """Sleep before sending anything (first-byte timeouts); with after_chunks, stall mid-stream
    after that many SSE events instead."""

    seconds: float
    after_chunks: int | None = None


@dataclass(frozen=True)
class Reset:
    """Abort the TCP connection without any response."""


@dataclass(frozen=True)
class CutStream:
    """Send N SSE events, then drop the connection (no [DONE] / message_stop). A non-streaming
    request gets its headers and half its body before the drop."""

    after_chunks: int


@dataclass(frozen=True)
class SlowStream:
    """Wait delay_s before every SSE event after the first."""

    delay_s: float


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A custom answer. Token counts default to the fake's word counts; stop_reason is in the
    provider's own vocabulary (OpenAI finish_reason or Anthropic stop_reason)."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    stop_reason: str | None = None


Step = Fail | Stall | Reset | CutStream | SlowStream | Reply


@dataclass(frozen=True)
class RecordedRequest:
    kind: Kind | None  # None for /v1/models and unknown paths
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, None if the body was not JSON
    at: float  # time.monotonic() when it arrived


# --- wire helpers ---------------------------------------------------------------------------

_B62 = string.ascii_letters + string.digits

_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                       403: "invalid_request_error", 404: "invalid_request_error",
                       409: "invalid_request_error", 413: "invalid_request_error"}
# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          402: "billing_error", 403: "permission_error", 404: "not_found_error",
                          413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                          504: "timeout_error", 529: "overloaded_error"}


def _rand(n: int) -> str:
    return "".join(secrets.choice(_B62) for _ in range(n))


def openai_error_body(status: int, message: str, *, code: str | None = None,
                      param: str | None = None) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
    if status == 429 and code is None:
        code = "rate_limit_exceeded"
        kind = "requests"
    return json.dumps({"error": {"message": message, "type": kind, "param": param,
                                 "code": code}}).encode()


def anthropic_error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}}."""
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message},
                       "request_id": "req_" + _rand(24)}).encode()


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None
                   ) -> web.Response:
    return web.Response(status=status, body=body, headers=headers,
                        content_type="application/json")


def _mask(key: str) -> str:
    # OpenAI echoes a masked key; never the whole secret.
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "****"


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(content: Any) -> str:
    """The plain text of a message's content (either provider's block shapes)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content", "")))
    return " ".join(parts)


def _count_images(messages: list[Any]) -> int:
    count = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            count += sum(1 for b in content if isinstance(b, dict)
                         and b.get("type") in ("image", "image_url"))
    return count


def _args_for(schema: Any) -> dict[str, Any]:
    """Deterministic arguments from a JSON schema's required properties (all if none)."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    names = schema.get("required") or list(props)
    args: dict[str, Any] = {}
    for name in names:
        spec = props.get(name) if isinstance(props, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("enum"):
            args[name] = spec["enum"][0]
            continue
        args[name] = {"integer": 1, "number": 1.5, "boolean": True, "array": [],
                      "object": {}}.get(str(spec.get("type")), "Paris")
    return args


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _word_pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass(frozen=True)
class _Answer:
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str | None


# --- the server -----------------------------------------------------------------------------


class FakeUpstream:
    """`with FakeUpstream() as up:` serves both APIs on a free 127.0.0.1 port until exit."""

    def __init__(self, *, openai_key: str = OPENAI_KEY, anthropic_key: str = ANTHROPIC_KEY,
                 models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")) -> None:
        self.openai_key = openai_key
        self.anthropic_key = anthropic_key
        self.models = models
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._queues: dict[Kind | None, deque[Step]] = {None: deque(), "openai": deque(),
                                                         "anthropic": deque()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._startup_error: BaseException | None = None

    # addresses

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # control (called from the test's thread)

    def script(self, *steps: Step, kind: Kind | None = None) -> None:
        """Queue steps, each consumed by one request of that kind (None: any kind). A request
        takes from its own kind's queue first, then from the shared one."""
        with self._lock:
            self._queues[kind].extend(steps)

    @property
    def pending(self) -> int:
        """Steps not yet consumed."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, kind: Kind) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == kind]

    @property
    def disconnects(self) -> int:
        """Handlers that ended because the client went away (or stop() cancelled them)."""
        with self._lock:
            return self._disconnects

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until n requests arrived (for tests whose request is in another thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests
            if len(got) >= n:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"fake upstream saw {len(self.requests)} requests, wanted {n}")

    def reset(self) -> None:
        """Forget recorded requests and unconsumed steps."""
        with self._lock:
            self._requests.clear()
            self._disconnects = 0
            for q in self._queues.values():
                q.clear()

    def _next_step(self, kind: Kind) -> Step | None:
        with self._lock:
            for q in (self._queues[kind], self._queues[None]):
                if q:
                    return q.popleft()
        return None

    # lifecycle

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,),
                                        name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._startup_error is not None:
            self.stop()
            raise RuntimeError("fake upstream did not start") from self._startup_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel open handlers (stalled ones too), close the server, join the thread."""
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        elif thread is not None:
            thread.join(timeout)
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/chat/completions", self._tracked("openai", self._openai))
            app.router.add_post("/v1/messages", self._tracked("anthropic", self._anthropic))
            app.router.add_get("/v1/models", self._models)
            # handler_cancellation: a client that goes away cancels its handler, which is how
            # tests see that the gateway gave up on an upstream request.
            runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                   shutdown_timeout=0.2, handler_cancellation=True)
            self._runner = runner
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            # Stalled or streaming handlers would otherwise keep cleanup waiting.
            for task in list(self._handlers):
                task.cancel()
            try:
                loop.run_until_complete(asyncio.wait_for(runner.cleanup(), 3))
            except TimeoutError:
                pass  # connections still open are cut below with their tasks
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1))
            loop.close()

    # request plumbing (server thread)

    def _tracked(self, kind: Kind, handler: Callable[[web.Request, Any, Step | None],
                                                     Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                body = await self._record(kind, request)
                return await handler(request, body, self._next_step(kind))
            except asyncio.CancelledError:
                self._count_disconnect()
                raise
            finally:
                self._handlers.discard(task)

        return wrapped

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    async def _record(self, kind: Kind | None, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(kind, request.method, request.path,
                              {k.lower(): v for k, v in request.headers.items()}, body,
                              time.monotonic())
        with self._lock:
            self._requests.append(rec)
        return body

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(None, request)
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in self.models]})

    async def _apply_fault(self, request: web.Request, step: Step | None,
                           error: Callable[[int, str], bytes]) -> web.StreamResponse | None:
        """Play a fault step before any answer; None means go on and answer."""
        if isinstance(step, Stall) and step.after_chunks is None:
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Reset):
            # The response returned after the abort is never written: aiohttp sees the closed
            # transport and drops it quietly.
            self._abort(request)
            return web.Response(status=500)
        elif isinstance(step, Fail):
            body = step.body
            if body is None:
                body = error(step.status, step.message or f"scripted failure {step.status}")
            return _json_response(step.status, body, step.headers)
        return None

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    async def _send_json(self, request: web.Request, payload: dict[str, Any],
                         step: Step | None) -> web.StreamResponse:
        body = json.dumps(payload).encode()
        if not isinstance(step, CutStream):
            return web.Response(body=body, content_type="application/json")
        # Headers promise the full length; half arrives; then the connection drops.
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:len(body) // 2])
        await asyncio.sleep(0.05)
        self._abort(request)
        return resp

    async def _send_sse(self, request: web.Request, events: list[bytes],
                        step: Step | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if isinstance(step, CutStream) and i >= step.after_chunks:
                await asyncio.sleep(0.05)  # let the sent events leave before the drop
                self._abort(request)
                return resp
            if isinstance(step, Stall) and step.after_chunks == i:
                await asyncio.sleep(step.seconds)
            if isinstance(step, SlowStream) and i > 0:
                await asyncio.sleep(step.delay_s)
            try:
                await resp.write(event)
            except ConnectionResetError:
                # The client went away mid-stream; returning lets aiohttp drop it quietly.
                self._count_disconnect()
                return resp
        await resp.write_eof()
        return resp

    def _answer(self, step: Step | None, default: Callable[[], Reply], prompt_tokens: int,
                max_tokens: Any, length_reason: str) -> _Answer:
        reply = step if isinstance(step, Reply) else default()
        if (not isinstance(step, Reply) and reply.text and isinstance(max_tokens, int)
                and not isinstance(max_tokens, bool) and 0 < max_tokens < _words(reply.text)):
            # One word is one token here, so a small max_tokens cuts the answer like the
            # real services do (finish_reason "length" / stop_reason "max_tokens").
            reply = Reply(text=" ".join(reply.text.split(" ")[:max_tokens]),
                          stop_reason=length_reason)
        completion = reply.completion_tokens
        if completion is None:
            completion = max(1, (_words(reply.text) if reply.text else 0) + sum(
                _words(json.dumps(t.arguments)) for t in reply.tool_calls))
        return _Answer(reply.text, reply.tool_calls,
                       reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens,
                       completion, reply.stop_reason)

    # --- OpenAI ---------------------------------------------------------------------------

    def _openai_unauthorized(self, request: web.Request) -> web.Response:
        header = request.headers.get("authorization")
        if not header:
            return _json_response(401, openai_error_body(
                401, "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys."))
        key = header.removeprefix("Bearer ").strip()
        return _json_response(401, openai_error_body(
            401, f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))

    @staticmethod
    def _invalid_openai(body: Any) -> tuple[str, str | None] | None:
        """(message, param) for the request checks the real API makes, else None."""
        if not isinstance(body, dict):
            return "We could not parse the JSON body of your request.", None
        if not body.get("model"):
            return "you must provide a model parameter", None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "[] is too short - 'messages'", "messages"
        pending: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool", "function"):
                return f"Invalid value: '{role}'. Supported values are: 'system', " \
                       "'assistant', 'user', 'function', 'tool', and 'developer'.", \
                       f"messages[{i}].role"
            if role == "tool":
                call_id = m.get("tool_call_id")
                if call_id not in pending:
                    return "Invalid parameter: messages with role 'tool' must be a response " \
                           "to a preceeding message with 'tool_calls'.", \
                           f"messages.[{i}].role"
                pending.discard(call_id)
                continue
            if pending:
                return "An assistant message with 'tool_calls' must be followed by tool " \
                       "messages responding to each 'tool_call_id'. The following " \
                       f"tool_call_ids did not have response messages: {', '.join(sorted(pending))}", \
                       "messages"
            if role == "assistant":
                pending = {c.get("id") for c in m.get("tool_calls") or []}
        if pending:
            return "An assistant message with 'tool_calls' must be followed by tool messages " \
                   "responding to each 'tool_call_id'.", "messages"
        for j, tool in enumerate(body.get("tools") or []):
            if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict) \
                    or not tool["function"].get("name"):
                return "Missing required parameter: 'tools[0].function'.", f"tools[{j}]"
        return None

    def _default_openai(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last = messages[-1]
        if last.get("role") == "tool":
            return Reply(text="The tool said: " + _text_of(last.get("content")))
        text = _text_of(last.get("content"))
        tools = [t["function"] for t in body.get("tools") or []]
        choice = body.get("tool_choice")
        if tools and choice != "none" and (text.startswith("call tool")
                                            or choice == "required" or isinstance(choice, dict)):
            fn = tools[0]
            if isinstance(choice, dict):
                name = (choice.get("function") or {}).get("name")
                fn = next((t for t in tools if t.get("name") == name), fn)
            return Reply(tool_calls=(ToolCall(fn["name"], _args_for(fn.get("parameters"))),))
        images = _count_images(messages)
        return Reply(text=f"echo: {text}" + (f" [{images} image(s)]" if images else ""))

    async def _openai(self, request: web.Request, body: Any, step: Step | None
                      ) -> web.StreamResponse:
        failed = await self._apply_fault(request, step, openai_error_body)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        problem = self._invalid_openai(body)
        if problem is not None:
            return _json_response(400, openai_error_body(400, problem[0], param=problem[1]))
        prompt_words = _words(" ".join(_text_of(m.get("content")) for m in body["messages"]))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        ans = self._answer(step, lambda: self._default_openai(body), prompt_words, limit,
                           "length")
        cid = "chatcmpl-" + _rand(29)
        created = int(time.time())
        model = body["model"]
        finish = ans.stop_reason or ("tool_calls" if ans.tool_calls else "stop")
        calls = [("call_" + _rand(24), t) for t in ans.tool_calls]
        usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
                 "total_tokens": ans.prompt_tokens + ans.completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": ans.text,
                                       "refusal": None, "annotations": []}
            if calls:
                message["tool_calls"] = [
                    {"id": cid_, "type": "function",
                     "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
                    for cid_, t in calls]
            return await self._send_json(request, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake0001"},
                step)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_fake0001",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}
            if include_usage:
                data["usage"] = None  # OpenAI sends null on every chunk but the last
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if ans.text:
            events += [chunk({"content": w}) for w in _word_pieces(ans.text)]
        for index, (call_id, t) in enumerate(calls):
            events.append(chunk({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": t.name, "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                       for p in _pieces(json.dumps(t.arguments), 8)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(b"data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_fake0001",
                "choices": [], "usage": usage}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return await self._send_sse(request, events, step)

    # --- Anthropic ------------------------------------------------------------------------

    @staticmethod
    def _invalid_anthropic(body: Any) -> str | None:
        """The checks the real API makes that catch translation bugs."""
        if not isinstance(body, dict):
            return "There was an issue with your request body: expected a JSON object"
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return f"{key}: Field required"
        if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool) \
                or body["max_tokens"] < 1:
            return "max_tokens: Input should be a valid integer greater than or equal to 1"
        system = body.get("system")
        if system is not None and not isinstance(system, str):
            if not isinstance(system, list) or any(
                    not isinstance(b, dict) or b.get("type") != "text"
                    or not isinstance(b.get("text"), str) for b in system):
                return "system: Input should be a valid string or a list of text blocks"
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return "temperature: range: 0..1"
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if not isinstance(messages[0], dict) or messages[0].get("role") != "user":
            return "messages: first message must use the \"user\" role"
        tool_ids: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i and role == messages[i - 1]["role"]:
                return "messages: roles must alternate between \"user\" and \"assistant\", " \
                       "but found multiple \"" + str(role) + "\" roles in a row"
            content = m.get("content")
            last = i == len(messages) - 1
            if isinstance(content, str):
                if not content and not (last and role == "assistant"):
                    return f"messages.{i}: all messages must have non-empty content except " \
                           "for the optional final assistant message"
                if tool_ids:
                    return f"messages.{i}: `tool_use` ids were found without `tool_result` " \
                           "blocks immediately after: " + ", ".join(sorted(tool_ids))
                continue
            if not isinstance(content, list):
                return f"messages.{i}.content: Input should be a valid string or list"
            if not content and not (last and role == "assistant"):
                return f"messages.{i}: all messages must have non-empty content except for " \
                       "the optional final assistant message"
            new_ids: set[str] = set()
            for j, b in enumerate(content):
                where = f"messages.{i}.content.{j}"
                kind = b.get("type") if isinstance(b, dict) else None
                if kind == "text":
                    if not isinstance(b.get("text"), str):
                        return f"{where}.text: Field required"
                    if not b["text"]:
                        return "messages: text content blocks must be non-empty"
                elif kind == "image":
                    src = b.get("source")
                    ok = isinstance(src, dict) and (
                        (src.get("type") == "base64" and src.get("media_type") in (
                            "image/jpeg", "image/png", "image/gif", "image/webp")
                         and isinstance(src.get("data"), str))
                        or (src.get("type") == "url" and isinstance(src.get("url"), str)))
                    if not ok:
                        return f"{where}.source: invalid image source"
                elif kind == "tool_use":
                    if role != "assistant":
                        return f"{where}: tool_use blocks are only allowed in assistant turns"
                    if not b.get("id") or not b.get("name") \
                            or not isinstance(b.get("input"), dict):
                        return f"{where}: tool_use needs id, name and an object input"
                    new_ids.add(b["id"])
                elif kind == "tool_result":
                    if role != "user":
                        return f"{where}: tool_result blocks are only allowed in user turns"
                    if b.get("tool_use_id") not in tool_ids:
                        return f"{where}: unexpected `tool_use_id` found in `tool_result` " \
                               f"blocks: {b.get('tool_use_id')}. Each `tool_result` block " \
                               "must have a corresponding `tool_use` block in the previous " \
                               "message."
                elif kind not in ("thinking", "redacted_thinking", "document"):
                    return f"{where}.type: Input tag '{kind}' found using 'type' does not " \
                           "match any of the expected tags"
            # https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
            kinds = [b.get("type") for b in content if isinstance(b, dict)]
            last_result = len(kinds) - 1 - kinds[::-1].index("tool_result") \
                if "tool_result" in kinds else 0
            if any(k != "tool_result" for k in kinds[:last_result]):
                return f"messages.{i}: tool_result blocks must come first in the content, " \
                       "before any other blocks"
            if role == "user" and tool_ids:
                answered = {b.get("tool_use_id") for b in content
                            if isinstance(b, dict) and b.get("type") == "tool_result"}
                if tool_ids - answered:
                    return f"messages.{i}: `tool_use` ids were found without `tool_result` " \
                           "blocks immediately after: " + ", ".join(sorted(tool_ids - answered))
            tool_ids = new_ids
        for j, tool in enumerate(body.get("tools") or []):
            if not isinstance(tool, dict) or not tool.get("name") \
                    or not isinstance(tool.get("input_schema"), dict):
                return f"tools.{j}: a tool needs a name and an input_schema object"
        return None

    def _default_anthropic(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        content = messages[-1].get("content")
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type")
                                             == "tool_result" for b in content):
            return Reply(text="The tool said: " + _text_of(content))
        text = _text_of(content)
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if tools and choice.get("type") != "none" and (
                text.startswith("call tool") or choice.get("type") in ("any", "tool")):
            tool = tools[0]
            if choice.get("type") == "tool":
                tool = next((t for t in tools if t.get("name") == choice.get("name")), tool)
            return Reply(tool_calls=(ToolCall(tool["name"], _args_for(tool["input_schema"])),))
        images = _count_images(messages)
        return Reply(text=f"echo: {text}" + (f" [{images} image(s)]" if images else ""))

    async def _anthropic(self, request: web.Request, body: Any, step: Step | None
                         ) -> web.StreamResponse:
        failed = await self._apply_fault(request, step, anthropic_error_body)
        if failed is not None:
            return failed
        # The API takes `x-api-key`; current SDKs (anthropic>=2) send `Authorization: Bearer`.
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if key is None and bearer.startswith("Bearer "):
            key = bearer.removeprefix("Bearer ").strip()
        if not key:
            return _json_response(401, anthropic_error_body(401, "x-api-key header is required"))
        if key != self.anthropic_key:
            return _json_response(401, anthropic_error_body(401, "invalid x-api-key"))
        if not request.headers.get("anthropic-version"):
            return _json_response(400, anthropic_error_body(
                400, "anthropic-version: header is required"))
        problem = self._invalid_anthropic(body)
        if problem is not None:
            return _json_response(400, anthropic_error_body(400, problem))
        system = body.get("system")
        prompt_words = _words(" ".join(
            [_text_of(system) if system else ""]
            + [_text_of(m.get("content")) for m in body["messages"]]))
        ans = self._answer(step, lambda: self._default_anthropic(body), prompt_words,
                           body["max_tokens"], "max_tokens")
        mid = "msg_01" + _rand(22)
        model = body["model"]
        stop = ans.stop_reason or ("tool_use" if ans.tool_calls else "end_turn")
        blocks: list[dict[str, Any]] = []
        if ans.text:
            blocks.append({"type": "text", "text": ans.text})
        blocks += [{"type": "tool_use", "id": "toolu_01" + _rand(22), "name": t.name,
                    "input": t.arguments} for t in ans.tool_calls]
        usage = {"input_tokens": ans.prompt_tokens, "output_tokens": ans.completion_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "service_tier": "standard"}
        message = {"id": mid, "type": "message", "role": "assistant", "model": model,
                   "content": blocks, "stop_reason": stop, "stop_sequence": None,
                   "usage": usage}
        if not body.get("stream"):
            return await self._send_json(request, message, step)

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        events = [ev("message_start", {"message": dict(
            message, content=[], stop_reason=None,
            usage=dict(usage, output_tokens=1))})]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                events.append(ev("content_block_start", {"index": index,
                                                         "content_block": {"type": "text",
                                                                           "text": ""}}))
                if index == 0:
                    events.append(ev("ping", {}))
                events += [ev("content_block_delta", {"index": index, "delta": {
                    "type": "text_delta", "text": w}}) for w in _word_pieces(block["text"])]
            else:
                events.append(ev("content_block_start", {"index": index,
                                                         "content_block": dict(block, input={})}))
                if index == 0:
                    events.append(ev("ping", {}))
                events += [ev("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": p}})
                    for p in _pieces(json.dumps(block["input"]), 8)]
            events.append(ev("content_block_stop", {"index": index}))
        events.append(ev("message_delta", {
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": ans.completion_tokens}}))
        events.append(ev("message_stop", {}))
        return await self._send_sse(request, events, step)
