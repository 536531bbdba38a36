"""The warm pool: started guests whose agent already answered, kept at ``min_ready`` by a
background refill with bounded concurrency; dead ones are dropped and replaced. One pool per
template that keeps guests warm."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from collections.abc import Callable

import structlog

from gateway_core.config.sandbox import PoolConfig
from gateway_core.sandbox_types import Resources
from gateway_sandbox.backends.base import Backend, Guest
from gateway_sandbox.image.template import TemplateImage
from gateway_sandbox.protocol import AgentClient

__all__ = ["WarmGuest", "WarmPool", "new_sandbox_id", "start_warm"]

log = structlog.get_logger("gateway_sandbox")


def new_sandbox_id() -> str:
    return "sbx_" + secrets.token_hex(12)


class WarmGuest:
    def __init__(self, guest: Guest, client: AgentClient, seconds: float) -> None:
        self.guest = guest
        self.client = client
        self.start_seconds = seconds

    def alive(self) -> bool:
        return self.guest.alive() and not self.client.closed

    async def stop(self) -> None:
        await self.client.aclose()
        await self.guest.stop()


async def start_warm(backend: Backend, start_timeout_s: float,
                     resources: Resources | None = None,
                     template: TemplateImage | None = None) -> WarmGuest:
    """Start a guest (rooted in ``template`` when given) and wait until its agent has said
    hello and answered a ping."""
    t0 = time.monotonic()
    guest = await backend.start_guest(new_sandbox_id(), resources, template)
    try:
        reader, writer = await asyncio.wait_for(guest.open_stream(), start_timeout_s)
        client = await AgentClient.connect(reader, writer, start_timeout_s)
        try:
            await client.ping(start_timeout_s)
        except BaseException:
            await client.aclose()
            raise
    except BaseException:
        await guest.stop()
        raise
    return WarmGuest(guest, client, time.monotonic() - t0)


class WarmPool:
    """Owns the ready guests. ``capacity_left`` (from the manager) says how many more guests
    may exist in all; ``changed`` is called whenever a guest becomes ready or a start ends."""

    def __init__(self, backend: Backend, cfg: PoolConfig, start_timeout_s: float,
                 capacity_left: Callable[[], int], changed: Callable[[], None], *,
                 template: TemplateImage | None = None, min_ready: int | None = None) -> None:
        self.backend = backend
        self.cfg = cfg
        self.template = template
        self.min_ready = cfg.min_ready if min_ready is None else min_ready
        self.start_timeout_s = start_timeout_s
        self.capacity_left = capacity_left
        self.changed = changed
        self.ready: collections.deque[WarmGuest] = collections.deque()
        self.starting = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())
        self.kick()

    def kick(self) -> None:
        self._wake.set()

    def take(self) -> WarmGuest | None:
        """A live ready guest, or None; dead ones found on the way are stopped."""
        while self.ready:
            warm = self.ready.popleft()
            if warm.alive():
                self.kick()
                return warm
            self._spawn(warm.stop())
        self.kick()
        return None

    def evict(self) -> WarmGuest | None:
        """A ready guest taken out to free its slot for another template (not refilled
        while there is no capacity); the caller stops it."""
        return self.ready.pop() if self.ready else None

    def drop_dead(self) -> int:
        dead = [w for w in self.ready if not w.alive()]
        for w in dead:
            self.ready.remove(w)
            log.warning("sandbox_pool_guest_died", id=w.guest.id)
            self._spawn(w.stop())
        if dead:
            self.kick()
        return len(dead)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if backoff:
                # A backend that fails to start guests is not hammered.
                await asyncio.sleep(backoff)
            while (len(self.ready) + self.starting < self.min_ready
                   and self.starting < max(1, self.cfg.refill_concurrency)
                   and self.capacity_left() > 0 and not self._closing):
                self.starting += 1
                self._spawn(self._fill_one())
            backoff = min(5.0, 0.5 * 2 ** min(self.failures, 4)) if self.failures else 0.0

    async def _fill_one(self) -> None:
        try:
            warm = await start_warm(self.backend, self.start_timeout_s, None, self.template)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported, retried with backoff
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sandbox_pool_start_failed", error=self.last_error)
            return
        finally:
            self.starting -= 1
            self.kick()
            self.changed()
        self.failures = 0
        if self._closing:
            await warm.stop()
            return
        self.ready.append(warm)
        self.changed()

    async def aclose(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ready, self.ready = list(self.ready), collections.deque()
        await asyncio.gather(*(w.stop() for w in ready), return_exceptions=True)
