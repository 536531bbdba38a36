"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway_server.__about__ import __version__
from gateway_server.state import GatewayState

__all__ = ["health", "metrics", "ready", "root", "routes"]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    body = state.readiness()
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


async def metrics(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    state.refresh_gauges()
    data, content_type = state.metrics.render()
    return Response(data, media_type=content_type)


async def root(request: Request) -> Response:
    """Claude Code checks the base URL with ``HEAD /`` before its first request."""
    return Response(b"", status_code=200)


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
