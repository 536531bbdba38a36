"""Everything long-lived that the app owns — the LLM router with its HTTP sessions, the
sandbox manager with its pool, the metrics — started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from gateway_core.config import Config
from gateway_llm.object_owners import ObjectOwners, owners_from_config
from gateway_llm.prices import Prices
from gateway_llm.responses_store import ResponseStore, store_from_config
from gateway_llm.router import Router, RouterObserver
from gateway_server.access import AccessControl
from gateway_server.metrics import Metrics
from gateway_server.observers import RouterMetrics

__all__ = ["GatewayState"]

if TYPE_CHECKING:
    from gateway_sandbox import SandboxManager
    from gateway_sandbox.egress import EgressProxy
    from gateway_sandbox.observer import SandboxObserver
    from gateway_server.tracing import Tracing

log = structlog.get_logger("gateway")


class GatewayState:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.started_at = int(time.time())
        self.prices = Prices(config.llm.models)
        storage = config.key_store
        # Virtual keys, teams and usage records ([storage], or admin_keys set).
        self.access: AccessControl | None = None if storage is None else AccessControl(
            config, storage, self.prices, on_drop=lambda n: metrics.usage_dropped.inc(n),
            on_error=metrics.usage_write_errors.inc)
        self.tracing: Tracing | None = None
        observer: RouterObserver = RouterMetrics(metrics)
        if config.telemetry.enabled:
            from gateway_server.tracing import Tracing, TracingRouterObserver

            self.tracing = Tracing(config.telemetry, metrics, config.llm,
                                   secrets=_secrets(config))
            observer = TracingRouterObserver(observer)
        self.router = Router.from_config(config.llm, config.rate_limit, observer=observer,
                                         charges=self.access is not None)
        self.responses: ResponseStore = store_from_config(config.llm.responses)
        # Which provider holds an object created through the OpenAI pass-through.
        self.object_owners: ObjectOwners = owners_from_config(config.llm, config.rate_limit)
        self.sandboxes: SandboxManager | None = None
        self.egress: EgressProxy | None = None
        self.sandbox_unavailable_reason: str | None = "sandboxes are disabled in the config"
        self.ready = False

    async def start(self) -> None:
        await self.router.start()
        await self.responses.start()
        await self.object_owners.start()
        if self.access is not None:
            await self.access.start()
        if self.config.sandbox.enabled:
            await self._start_sandboxes()
        self.ready = True
        log.info("gateway_started", providers=sorted(self.router.providers),
                 models=[alias for alias, _ in self.router.models()],
                 sandbox_backend=self._sandbox_backend())

    async def _start_sandboxes(self) -> None:
        try:
            from gateway_sandbox import SandboxManager
            from gateway_sandbox.egress import EgressProxy
            from gateway_server.observers import SandboxMetrics

            observer = SandboxMetrics(self.metrics)
            if self.config.sandbox.egress.enabled:
                # Started before the sandboxes and closed after them (aclose below).
                self.egress = EgressProxy(self.config.sandbox.egress, observer)
                if self.access is not None:
                    # Sandboxes' child keys reach this gateway through the proxy.
                    self.egress.gateway = _own_address(self.config)
                await self.egress.start()
            traced: SandboxObserver = observer
            if self.tracing is not None:
                from gateway_server.tracing import TracingSandboxObserver

                traced = TracingSandboxObserver(observer, self.tracing)
            manager = SandboxManager.from_config(self.config.sandbox, observer=traced,
                                                 egress=self.egress)
            observer.backend = manager.backend_name
            access = self.access
            if access is not None:
                # However a sandbox ends (deleted, expired, at shutdown): its child key is
                # revoked and the unused part of its lifetime given back to its owner's quota.
                limiter = self.router.limiter
                store = None if limiter is None else limiter.store

                async def sandbox_gone(sandbox_id: str) -> None:
                    await access.deleted_sandbox(sandbox_id, store)

                manager.on_deleted(sandbox_gone)
            await manager.start()
        except Exception as exc:  # noqa: BLE001 - the LLM side must keep working
            self.sandbox_unavailable_reason = f"{type(exc).__name__}: {exc}"
            log.warning("sandboxes_unavailable", reason=self.sandbox_unavailable_reason)
            if self.egress is not None:
                egress, self.egress = self.egress, None
                await egress.aclose()
            return
        self.sandboxes = manager
        self.sandbox_unavailable_reason = None

    def _sandbox_backend(self) -> str | None:
        return None if self.sandboxes is None else self.sandboxes.backend_name

    async def aclose(self) -> None:
        self.ready = False
        try:
            try:
                if self.sandboxes is not None:
                    manager, self.sandboxes = self.sandboxes, None
                    await manager.aclose()
            finally:
                if self.egress is not None:
                    egress, self.egress = self.egress, None
                    await egress.aclose()
        finally:
            try:
                await self.object_owners.aclose()
                await self.responses.aclose()
            finally:
                try:
                    await self.router.aclose()
                    if self.tracing is not None:
                        # Flushes the spans still queued (within the export timeout).
                        await asyncio.to_thread(self.tracing.shutdown)
                finally:
                    # Last: the usage of every request that finished gets written.
                    if self.access is not None:
                        await self.access.aclose()
        log.info("gateway_stopped")

    def refresh_gauges(self) -> None:
        if self.sandboxes is not None:
            stats = self.sandboxes.stats()
            self.metrics.sandbox_pool_ready.set(stats.pool_ready)
            self.metrics.sandbox_active.set(stats.active)

    def readiness(self) -> dict[str, object]:
        sandbox: dict[str, object]
        if self.sandboxes is not None:
            sandbox = {"available": True, **self.sandboxes.describe()}
        else:
            sandbox = {"available": False, "reason": self.sandbox_unavailable_reason}
        return {
            "status": "ready" if self.ready else "not_ready",
            "llm": {**self.router.health(), "responses_store": self.responses.health(),
                    "object_owners": self.object_owners.health()},
            "sandbox": sandbox,
            "telemetry": {"enabled": False} if self.tracing is None
            else self.tracing.health(),
            **({} if self.access is None else {"access": self.access.health()}),
        }


def _secrets(config: Config) -> list[str]:
    """Strings never to show in captured content: the gateway's and providers' keys."""
    keys = [*config.server.api_keys, *config.server.admin_keys]
    keys.extend(pc.api_key for pc in config.llm.providers.values() if pc.api_key)
    return keys


def _own_address(config: Config) -> tuple[str, int]:
    """Where this gateway listens, as the host itself connects to it."""
    host = config.server.host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, config.server.port
