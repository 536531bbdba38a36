"""The floor the gateway is held to: a bare proxy on the gateway's own stack and nothing else —
hypercorn (uvloop, configured as `agentic-gateway serve` configures it) serving one Starlette
route, one aiohttp ClientSession (the gateway's connector settings), one msgspec decode of the
body. It forwards the body unchanged to the same path on the upstream and answers what the
upstream answered: whole, or as the stream it reads (when the body says ``"stream": true``).

bench/llm.py starts it beside the gateway with the same pinning and drives both with the same
load, so each front door's figures read as gateway / floor. Sending a translated front door's
body to the upstream path the gateway would call (``/v1/chat/completions`` for a Responses
request translated to chat) is the floor of that path: the same bytes in and out, no work.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_ENV = "BENCH_FLOOR_UPSTREAM"


class _Head(msgspec.Struct):
    """What a proxy must know of the body: the model (to route) and whether to stream."""

    model: str = ""
    stream: bool = False


_decode = msgspec.json.Decoder(_Head).decode
_HEADERS = {"content-type": "application/json", "authorization": "Bearer x"}


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # The gateway's provider session (gateway_llm.providers.base): same connector.
        connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)
        try:
            yield
        finally:
            await self.session.close()

    async def proxy(self, request: Request) -> Response:
        assert self.session is not None
        body = await request.body()
        head = _decode(body)
        upstream = await self.session.post(self.upstream + request.scope["path"], data=body,
                                           headers=_HEADERS)
        if not head.stream:
            data = await upstream.read()
            upstream.release()
            return Response(data, status_code=upstream.status, media_type="application/json")
        return StreamingResponse(_relay(upstream), status_code=upstream.status,
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for data in upstream.content.iter_any():
            yield data
    finally:
        upstream.release()


def create_app(upstream: str) -> Starlette:
    floor = Floor(upstream)
    return Starlette(routes=[Route("/{path:path}", floor.proxy, methods=["POST"])],
                     lifespan=floor.lifespan)


def _app_from_env() -> Starlette | None:
    upstream = os.environ.get(UPSTREAM_ENV)
    return create_app(upstream) if upstream else None


# What hypercorn imports (`floor:app`), in this process or in each worker.
app = _app_from_env()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    os.environ[UPSTREAM_ENV] = args.upstream
    # Workers (spawned) import `floor` from this directory.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])])
    if here not in sys.path:
        sys.path.insert(0, here)

    from hypercorn.config import Config
    from hypercorn.run import run

    # As gateway_server.cli configures hypercorn for `agentic-gateway serve`.
    hc = Config()
    hc.bind = [f"127.0.0.1:{args.port}"]
    hc.application_path = "floor:app"
    hc.workers = 0 if args.workers == 1 else args.workers
    hc.worker_class = "uvloop"
    hc.graceful_timeout = 10.0
    hc.keep_alive_timeout = 75.0
    hc.accesslog = None
    hc.errorlog = "-"
    return run(hc)


if __name__ == "__main__":
    sys.exit(main())
