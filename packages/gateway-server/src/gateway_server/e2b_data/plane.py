"""E2B's data plane behind one host (the SDK's ``E2B_SANDBOX_URL``): a request carrying
``E2b-Sandbox-Id`` is for a sandbox, whatever its path, and ``E2b-Sandbox-Port`` picks envd
(49983: connect-rpc and ``/files``) or the code interpreter (49999). Each request proves
itself with the sandbox's access token (``X-Access-Token``, or the code interpreter's
``E2B-Traffic-Access-Token``), the HMAC the control plane handed out at create."""

from __future__ import annotations

import hmac

import msgspec
from starlette.requests import Request
from starlette.routing import BaseRoute, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_core.config.server import E2BConfig
from gateway_core.errors import NotFound
from gateway_sandbox import SandboxManager
from gateway_server.e2b_data import envd_http, interpreter
from gateway_server.e2b_data.envd_http import envd_error
from gateway_server.e2b_data.envd_rpc import rpc_apps
from gateway_server.e2b_data.scope import sandbox_var
from gateway_server.routes.e2b import CLIENT_ID, envd_access_token

__all__ = ["ENVD_PORT", "INTERPRETER_PORT", "DataPlane", "routes"]

ENVD_PORT = 49983
INTERPRETER_PORT = 49999
# The SDK maps a 502 whose message says "was not found" to SandboxNotRunningException and
# one that says "port is not open" to SandboxUnreachableException (e2b/exceptions.py).
_NOT_FOUND = "The sandbox {id} was not found"
_NO_PORT = "The sandbox {id} is running but port {port} is not open"
_RPC_PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")


def routes() -> dict[int, list[BaseRoute]]:
    """Each port's routes: envd's connect-rpc services and HTTP API, the interpreter's API."""
    envd: list[BaseRoute] = [Route(app.path + "/{method}", app, methods=["POST", "GET"])
                             for app in rpc_apps()]
    return {ENVD_PORT: [*envd, *envd_http.routes()], INTERPRETER_PORT: interpreter.routes()}


class DataPlane:
    """ASGI middleware: requests addressed to a sandbox go to its port's routes, the rest to
    ``app``. It sits inside the gateway's middleware (request id, metrics, body cap); the
    sandbox's token, not a gateway key, is what a data-plane request must carry."""

    def __init__(self, app: ASGIApp, *, cfg: E2BConfig,
                 port_routes: dict[int, list[BaseRoute]]) -> None:
        self.app = app
        self.enabled = cfg.enabled
        self.routers = {port: Router(routes=r, default=_unknown)
                        for port, r in port_routes.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = port = token = traffic = None
        for name, value in scope["headers"]:
            if name == b"e2b-sandbox-id":
                sid = value.decode("latin-1")
            elif name == b"e2b-sandbox-port":
                port = value.decode("latin-1")
            elif name == b"x-access-token":
                token = value
            elif name == b"e2b-traffic-access-token":
                traffic = value
        if sid is None:
            await self.app(scope, receive, send)
            return
        sid = sid.removesuffix("-" + CLIENT_ID)
        router = self.routers.get(int(port)) if port and port.isdigit() else None
        if router is None:
            await _refuse(scope, send, 502, _NO_PORT.format(id=sid, port=port))
            return
        expected = envd_access_token(sid).encode()
        # Compared in constant time; the code interpreter's SDK sends its context calls
        # with the traffic token only, envd's with X-Access-Token.
        if not any(t is not None and hmac.compare_digest(t, expected)
                   for t in (token, traffic)):
            await _refuse(scope, send, 401, "Missing or invalid access token for sandbox "
                          f"{sid} (header: X-Access-Token).")
            return
        manager: SandboxManager | None = getattr(scope["app"].state, "sandboxes", None)
        if manager is None:
            reason = getattr(scope["app"].state, "sandbox_unavailable_reason", None)
            await _refuse(scope, send, 503, f"Sandboxes are unavailable: "
                          f"{reason or 'not configured'}.")
            return
        try:
            sb = manager.get(sid)
        except NotFound:
            sb = None
        if sb is None or sb.status in ("dead", "closed"):
            await _refuse(scope, send, 502, _NOT_FOUND.format(id=sid))
            return
        if sb.paused:
            await _refuse(scope, send, 502, f"The sandbox {sid} is paused; connect to it "
                          "to resume it.")
            return
        scope["e2b_port"] = port
        reset = sandbox_var.set(sb)
        try:
            await router(scope, receive, send)
        finally:
            sandbox_var.reset(reset)


async def _unknown(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    await envd_error(404, f"{request.method} {request.url.path} is not served on port "
                     f"{scope.get('e2b_port', '')} of this gateway's sandboxes.")(
        scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """An error before any handler ran: connect-rpc's JSON for its paths, envd's else."""
    if scope["path"].startswith(_RPC_PREFIXES):
        code = {401: "unauthenticated", 502: "unavailable", 503: "unavailable"
                }.get(status, "unknown")
        body = msgspec.json.encode({"code": code, "message": message})
    else:
        body = msgspec.json.encode({"code": status, "message": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

