"""create_app(config): the Starlette app, its routes, error rendering and lifespan."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from gateway_core.config import Config
from gateway_core.errors import GatewayError, NotFound
from gateway_server.e2b_data import DataPlane
from gateway_server.e2b_data import routes as e2b_data_routes
from gateway_server.error_shapes import render_error
from gateway_server.hot_routes import HotRoutes
from gateway_server.metrics import get_metrics
from gateway_server.middleware import GatewayMiddleware
from gateway_server.routes import (
    admin,
    chat,
    completions,
    e2b,
    embeddings,
    health,
    messages,
    models,
    openai_passthrough,
    responses,
    sandboxes,
)
from gateway_server.state import GatewayState

__all__ = ["create_app"]

log = structlog.get_logger("gateway")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    status, body = render_error(request.url.path, exc)
    return Response(body, status_code=status, headers=dict(exc.headers),
                    media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged without local variables (they could hold keys); the client gets no details.
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    err = GatewayError("The gateway hit an internal error; see its logs for the request id.",
                       code="internal_error")
    status, body = render_error(request.url.path, err)
    return Response(body, status_code=status, media_type="application/json")


async def _route_error(request: Request, exc: Exception) -> Response:
    # What the app's exception handlers answer, for the routes served past Starlette's layers.
    if isinstance(exc, GatewayError):
        return await _gateway_error(request, exc)
    return await _unexpected(request, exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        err: GatewayError = GatewayError(f"Method {request.method} is not allowed on "
                                         f"{request.url.path}.", status=405)
        err.type = "invalid_request_error"
    else:
        err = NotFound(f"Unknown path {request.url.path}.", code="unknown_url")
    return await _gateway_error(request, err)


_GC_THRESHOLD = 20_000


def create_app(config: Config) -> Starlette:
    """The gateway as an ASGI app. Its lifespan starts and stops every long-lived resource."""
    metrics = get_metrics()
    state = GatewayState(config, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        # Everything made at start-up (modules, config, clients) lives as long as the
        # process: out of the collector's sight, a full collection walks only what requests
        # made (they had paused the loop ~36 ms at a time with tracing on).
        gc.freeze()
        # Requests make no reference cycles, but 16 of them in flight hold more than the
        # 700 new objects that start a collection: at 700 the collector ran every ~9
        # requests, walked what was in flight and freed nothing (~20 us a request).
        # At 20 000 what starts one is mostly garbage that does need it.
        gc.set_threshold(_GC_THRESHOLD, *gc.get_threshold()[1:])
        # The sandbox routes read these two.
        app.state.sandboxes = state.sandboxes
        app.state.sandbox_unavailable_reason = state.sandbox_unavailable_reason
        try:
            yield
        finally:
            app.state.sandboxes = None
            app.state.sandbox_unavailable_reason = "the gateway is shutting down"
            await state.aclose()

    route_list: list[BaseRoute] = [*health.routes, *models.routes, *chat.routes,
                                   *responses.routes, *messages.routes, *sandboxes.routes,
                                   *completions.routes, *embeddings.routes,
                                   *e2b.routes(config.server.e2b), *admin.routes,
                                   *openai_passthrough.routes]
    # E2B's data plane (E2B_SANDBOX_URL): chosen by header, not by path, so beside the routes.
    data_plane = e2b_data_routes() if config.server.e2b.enabled else {}
    templates: dict[object, str] = {}
    for r in [*route_list, *(r for rs in data_plane.values() for r in rs)]:
        if isinstance(r, Route):
            templates.setdefault(r.endpoint, r.path)

    def route_of(scope: Scope) -> str:
        return templates.get(scope.get("endpoint"), "<unmatched>")

    # The LLM front doors' POST routes: called straight from the middleware stack.
    hot = [r for r in [*chat.routes, *responses.routes, *messages.routes, *completions.routes,
                       *embeddings.routes]
           if isinstance(r, Route) and r.methods and "POST" in r.methods and "{" not in r.path]

    app = Starlette(
        routes=route_list,
        middleware=[Middleware(
            GatewayMiddleware,
            api_keys=config.server.api_keys,
            max_body_bytes=config.server.max_body_bytes,
            metrics=metrics,
            route_of=route_of,
            access_log=config.logging.access_log,
            guarded_prefixes=("/v1/", *e2b.guarded_prefixes(config.server.e2b)),
            render=e2b.error_renderer(config.server.e2b, render_error),
            admin_keys=config.server.admin_keys,
            authenticate=None if state.access is None else state.access.keys.lookup,
            tracing=state.tracing,
        ), Middleware(HotRoutes, routes=hot, on_error=_route_error),
           Middleware(DataPlane, cfg=config.server.e2b, port_routes=data_plane)],
        exception_handlers={
            GatewayError: _gateway_error,
            404: _not_found,
            405: _not_found,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = state
    app.state.sandboxes = None
    app.state.sandbox_unavailable_reason = "the gateway is starting"
    return app
