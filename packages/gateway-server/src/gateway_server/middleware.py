"""The one ASGI middleware in front of every route: request id, bearer-key auth on /v1/*
and /admin/* (static keys, admin keys, virtual keys; the caller goes into the scope's state
as ``principal``), request body cap, and per request one metrics update and one access log
line (with what the request's record gathered: key name, alias, provider, tokens, overhead,
trace id). A client that went away before the response started is recorded as 499, not
500."""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_core.errors import (
    AuthenticationError,
    GatewayError,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailable,
)
from gateway_server.access.keys import KEY_PREFIX
from gateway_server.access.records import ADMIN, OPEN, STATIC, Principal
from gateway_server.error_shapes import ANTHROPIC_PREFIX, render_error
from gateway_server.logs import access_line
from gateway_server.metrics import Metrics
from gateway_server.request_record import RequestRecord, bind_record

if TYPE_CHECKING:
    from gateway_server.tracing import Tracing

__all__ = ["CLIENT_CLOSED", "OVERHEAD_HEADER", "GatewayMiddleware"]

OVERHEAD_HEADER = b"x-gateway-overhead-ms"
CLIENT_CLOSED = 499  # nginx's "client closed request"
_UNTRACED = ("/health", "/metrics")  # probes and scrapes: no spans

log = structlog.get_logger("gateway.keys")
_JSON = [(b"content-type", b"application/json")]
ADMIN_PREFIX = "/admin/"
_VIRTUAL = KEY_PREFIX.encode()


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and all(33 <= c <= 126 for c in value)


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        max_body_bytes: int,
        metrics: Metrics,
        route_of: Callable[[Scope], str],
        access_log: bool,
        guarded_prefixes: tuple[str, ...] = ("/v1/",),
        render: Callable[[str, GatewayError], tuple[int, bytes]] = render_error,
        tracing: Tracing | None = None,
        admin_keys: list[str] | None = None,
        authenticate: Callable[[bytes], Awaitable[Principal | None]] | None = None,
    ) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.admin_keys = [k.encode() for k in admin_keys or ()]
        # Virtual keys: the key store's cached lookup (None without [storage]).
        self.authenticate = authenticate
        # Keys are required once any static or admin key is configured; a gateway without
        # either (loopback only) still resolves a virtual key when one is presented.
        self.auth_on = bool(self.api_keys or self.admin_keys)
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.route_of = route_of
        self.access_log = access_log
        # Paths that need a key: /v1/* and any other API served (E2B's under its prefix).
        self.guarded_prefixes = guarded_prefixes
        self.render = render  # (path, error) -> (status, body): each API's own error shape
        # Metric children by (method, route, status): labels() costs a lock and a dict
        # lookup per call; the key space is bounded by the route templates.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._overhead: dict[tuple[str | None, str | None], Histogram] = {}
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = b""
        authorization = b""
        content_length = -1
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"authorization" or (name == b"x-api-key" and not authorization):
                authorization = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"transfer-encoding":
                chunked = True
        if not _valid_request_id(request_id):
            request_id = os.urandom(16).hex().encode()
        rid = request_id.decode()
        scope.setdefault("state", {})["request_id"] = rid
        # Only the request id is ever bound, and each request binds its own: no clearing.
        structlog.contextvars.bind_contextvars(request_id=rid)
        record = RequestRecord(start)
        bind_record(record)
        span = None
        if self.tracing is not None and not scope["path"].startswith(_UNTRACED):
            span = self.tracing.begin(scope, record, rid)
        status = 500
        started = False
        anthropic = scope["path"].startswith(ANTHROPIC_PREFIX)

        # A body nobody read yet (an error answered before the route read it): drained
        # before the error goes out, or the client still uploading sees a reset instead of
        # the answer. The JSON routes read their body first, so this never runs for them.
        body = _BodyState(receive, content_length > 0 or chunked, self.max_body_bytes)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = CLIENT_CLOSED if body.client_closed else message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
                overhead = record.overhead_s(time.perf_counter())
                if overhead is not None:
                    self._observe_overhead(record, overhead)
                    message["headers"].append(
                        (OVERHEAD_HEADER, str(record.overhead_ms).encode()))
                if status >= 400 and body.unread and not await body.drain(self.max_body_bytes):
                    message["headers"].append((b"connection", b"close"))
                if anthropic:
                    message["headers"].append((b"request-id", request_id))
            await send(message)

        try:
            error: GatewayError | None = None
            path = scope["path"]
            principal = OPEN
            if path.startswith(ADMIN_PREFIX):
                principal, error = await self._check_key(authorization, record)
                if error is None and not principal.admin:
                    error = PermissionDenied("The admin API needs one of server.admin_keys.",
                                             code="admin_key_required")
            elif (self.auth_on or (self.authenticate is not None and authorization)) \
                    and path.startswith(self.guarded_prefixes):
                principal, error = await self._check_key(authorization, record)
            scope["state"]["principal"] = principal
            if error is None and content_length > self.max_body_bytes:
                error = PayloadTooLarge(
                    f"Request body of {content_length} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes."
                )
            if error is not None:
                await _send_error(send_wrapper, error, scope["path"], request_id, self.render)
            else:
                await self.app(scope, body.receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            if not started and body.client_closed:
                status = CLIENT_CLOSED
            route = self.route_of(scope)
            method = scope["method"]
            children = self._children.get((method, route, status))
            if children is None:
                children = (self.metrics.http_requests.labels(method, route, str(status)),
                            self.metrics.http_duration.labels(method, route))
                self._children[(method, route, status)] = children
            children[0].inc()
            children[1].observe(elapsed)
            if span is not None:
                span.finish(record, method, route, status)
            if self.access_log:
                fields: dict[str, object] = {"method": method, "route": route,
                                             "path": scope["path"], "status": status,
                                             "ms": round(elapsed * 1000, 3)}
                fields.update(record.log_fields())
                if span is not None:
                    fields["trace_id"] = span.trace_id
                access_line(fields)

    def _observe_overhead(self, record: RequestRecord, seconds: float) -> None:
        record.overhead_ms = round(seconds * 1000, 3)
        key = (record.api, record.provider)
        child = self._overhead.get(key)
        if child is None:
            child = self.metrics.llm_overhead.labels(record.api or "-", record.provider or "-")
            self._overhead[key] = child
        child.observe(seconds)

    async def _check_key(self, header: bytes, record: RequestRecord,
                         ) -> tuple[Principal, GatewayError | None]:
        if not header:
            return OPEN, AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, key = header.partition(b" ")
        if not key:  # x-api-key style: the whole value is the key
            key = scheme
        elif scheme.lower() != b"bearer":
            return OPEN, AuthenticationError(
                "The Authorization header must use the Bearer scheme.")
        key = key.strip()
        matched = -1
        admin = False
        # Compare against every key so the time taken does not tell which one matched.
        for i, candidate in enumerate(self.api_keys):
            if hmac.compare_digest(key, candidate):
                matched = i
        for candidate in self.admin_keys:
            admin |= hmac.compare_digest(key, candidate)
        if admin:
            record.key_name = "admin"
            return ADMIN, None
        if matched >= 0:
            record.key_name = f"key-{matched}"  # its index in server.api_keys, never the key
            return STATIC, None
        if self.authenticate is not None and key.startswith(_VIRTUAL):
            try:
                principal = await self.authenticate(key)
            except Exception as exc:  # noqa: BLE001 - the database's errors, whatever driver
                log.error("key_store_unavailable", error=type(exc).__name__)
                return OPEN, ServiceUnavailable(
                    "The key store is unavailable; try again shortly.",
                    code="key_store_unavailable", headers={"retry-after": "1"})
            if principal is not None:
                record.key_name = principal.key_id  # the virtual key's id, never its secret
                return principal, None
        return OPEN, AuthenticationError("Incorrect API key provided.")



class _BodyState:
    """The app's receive: the request body capped at ``limit`` bytes (a chunked body has no
    Content-Length to check first), whether it was read to its end, a bounded drain of what
    is left, and whether the client disconnected."""

    __slots__ = ("_receive", "client_closed", "limit", "seen", "unread")

    def __init__(self, receive: Receive, has_body: bool, limit: int) -> None:
        self._receive = receive
        self.unread = has_body
        self.seen = 0
        self.limit = limit
        self.client_closed = False

    async def _next(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.unread = False
        else:
            self.unread = False
            if message["type"] == "http.disconnect":
                self.client_closed = True
        return message

    async def receive(self) -> Message:
        message = await self._next()
        if self.seen > self.limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {self.limit} bytes.")
        return message

    async def drain(self, limit: int) -> bool:
        """Read and drop the rest of the body; False if it runs past ``limit`` bytes (the
        connection is then closed after the answer instead)."""
        while self.unread:
            if self.seen > limit:
                return False
            await self._next()
        return True


async def _send_error(send: Send, error: GatewayError, path: str, request_id: bytes,
                      render: Callable[[str, GatewayError], tuple[int, bytes]]) -> None:
    status, body = render(path, error)
    headers = list(_JSON)
    if path.startswith(ANTHROPIC_PREFIX):
        headers.append((b"request-id", request_id))
    headers.extend((k.encode(), v.encode()) for k, v in error.headers.items())
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
