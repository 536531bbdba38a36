"""The LLM front doors' POST routes called straight from the middleware stack, past
Starlette's exception middleware, router and per-route wrappers (a profile of the chat path
put those layers at ~8 % of the gateway's CPU per request). Every other request goes through
Starlette as before; errors are answered by the same handlers the app registers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HotRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """ASGI middleware: ``POST`` to one of ``routes``' (parameterless) paths runs its endpoint
    directly; anything else goes on to ``app`` (Starlette's router)."""

    def __init__(self, app: ASGIApp, *, routes: list[Route], on_error: ErrorHandler) -> None:
        self.app = app
        self.on_error = on_error
        self.endpoints: dict[str, Endpoint] = {}
        for route in routes:
            if "{" in route.path or not route.methods or "POST" not in route.methods:
                raise ValueError(f"not a parameterless POST route: {route.path}")
            self.endpoints[route.path] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.endpoints.get(scope["path"])
                    if scope["type"] == "http" and scope["method"] == "POST" else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        # What Starlette's router would have put in the scope (route_of reads "endpoint").
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - answered as the app's handlers answer it
            response = await self.on_error(request, exc)
        # A failure while sending (the response has started, or a stream broke) goes on to
        # Starlette's outermost error middleware, as it would from a routed endpoint.
        await response(scope, receive, send)
