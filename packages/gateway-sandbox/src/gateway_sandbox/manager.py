"""SandboxManager: picks the backend, owns the warm pools (the default one and one per
template that keeps guests warm) and every sandbox, enforces max_total, reaps expired and
crashed sandboxes, and leaves nothing behind on close."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import msgspec
import structlog

from gateway_core.config.sandbox import SandboxConfig, SandboxLimits
from gateway_core.errors import GatewayError, InvalidRequest, NotFound
from gateway_core.host_patterns import HostPattern
from gateway_core.sandbox_types import OnTimeout, TemplateInfo, TemplatePool
from gateway_sandbox.backends.base import Backend
from gateway_sandbox.egress import EgressProxy, SandboxEgress
from gateway_sandbox.errors import BackendUnavailable, PoolExhausted
from gateway_sandbox.guest_layout import EGRESS_PROXY_PORT
from gateway_sandbox.image.template import TemplateImage
from gateway_sandbox.observer import SandboxObserver
from gateway_sandbox.policy import SandboxPolicy
from gateway_sandbox.pool import WarmGuest, WarmPool, start_warm
from gateway_sandbox.protocol import ConnectionLost, EgressStart, Ok
from gateway_sandbox.runtimes import RUNTIMES, Runtime, available_runtimes
from gateway_sandbox.sandbox import Sandbox
from gateway_sandbox.templates import DEFAULT_TEMPLATE, TemplateCatalog

__all__ = ["SandboxManager", "SandboxStats", "proxy_env", "select_backend"]

log = structlog.get_logger("gateway_sandbox")


def proxy_env() -> dict[str, str]:
    """What points a sandbox's HTTP clients at the agent's loopback proxy port (both
    spellings: curl reads only lower-case http_proxy, some tools only upper-case)."""
    url = f"http://127.0.0.1:{EGRESS_PROXY_PORT}"
    no_proxy = "localhost,127.0.0.1,::1"
    out: dict[str, str] = {}
    for name, value in (("HTTP_PROXY", url), ("HTTPS_PROXY", url), ("NO_PROXY", no_proxy)):
        out[name] = value
        out[name.lower()] = value
    return out


class SandboxStats(msgspec.Struct, kw_only=True):
    backend: str
    pool_ready: int
    pool_starting: int
    active: int
    dead: int
    max_total: int
    min_ready: int
    # Ready guests of each template pool (the default pool's are pool_ready).
    template_pools_ready: dict[str, int] = {}


def select_backend(cfg: SandboxConfig) -> tuple[Backend, str]:
    """The backend ``cfg.backend`` asks for, and why it was chosen (said in readiness)."""
    from gateway_sandbox.backends.process import ProcessBackend

    if cfg.backend == "process":
        return ProcessBackend(cfg), "configured: backend = \"process\""
    if cfg.backend == "firecracker":
        try:
            from gateway_sandbox.backends.firecracker import (  # type: ignore[import-not-found,unused-ignore]
                FirecrackerBackend,
            )
        except ImportError as exc:
            raise BackendUnavailable(f"the firecracker backend is not installed: {exc}") \
                from exc
        return FirecrackerBackend(cfg), "configured: backend = \"firecracker\""
    try:
        from gateway_sandbox.backends.firecracker import (  # type: ignore[import-not-found,unused-ignore]
            firecracker_status,
        )
    except ImportError:
        usable, why = False, "the firecracker backend is not installed"
    else:
        usable, why = firecracker_status(cfg)
    if usable:
        from gateway_sandbox.backends.firecracker import (  # type: ignore[import-not-found,unused-ignore]
            FirecrackerBackend,
        )

        return FirecrackerBackend(cfg), f"auto: firecracker is usable ({why})"
    return ProcessBackend(cfg), f"auto: firecracker is not usable ({why}); using process"


class SandboxManager:
    """Use as ``async with SandboxManager.from_config(cfg) as manager:`` or call
    ``start()`` / ``aclose()``. ``clock`` (wall seconds) drives lifetimes, for tests.
    ``egress``: the application's egress proxy (started and closed by it); without one,
    sandboxes have no network at all."""

    def __init__(self, cfg: SandboxConfig, backend: Backend, *, backend_reason: str = "",
                 observer: SandboxObserver | None = None,
                 clock: Callable[[], float] = time.time,
                 egress: EgressProxy | None = None) -> None:
        self.cfg = cfg
        self.limits: SandboxLimits = cfg.limits
        self.backend = backend
        self.backend_reason = backend_reason
        self.policy = SandboxPolicy(cfg, observer)
        self.observer: SandboxObserver = self.policy.observer
        self.clock = clock
        self.egress = egress
        self._sandboxes: dict[str, Sandbox] = {}
        self._reserved = 0  # slots taken by creates still starting their guest
        self._cond = asyncio.Condition()
        self._pool = WarmPool(backend, cfg.pool, cfg.start_timeout_s,
                              capacity_left=self._capacity_left, changed=self._changed)
        self.templates = TemplateCatalog(cfg)
        # Pools of templates with pool.min_ready > 0, made once the template is found built.
        self._template_pools: dict[str, WarmPool] = {}
        self._reaper: asyncio.Task[None] | None = None
        # Called with a sandbox's id once it is deleted, whoever deleted it (a client, the
        # reaper on expiry, the manager's close): what the application tied to it ends too.
        self._on_deleted: builtins.list[Callable[[str], Awaitable[None]]] = []
        self._notifiers: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @classmethod
    def from_config(cls, cfg: SandboxConfig, *, observer: SandboxObserver | None = None,
                    clock: Callable[[], float] = time.time,
                    egress: EgressProxy | None = None) -> SandboxManager:
        backend, reason = select_backend(cfg)
        return cls(cfg, backend, backend_reason=reason, observer=observer, clock=clock,
                   egress=egress)

    @property
    def idle_ttl_s(self) -> float:
        return self.policy.idle_ttl_s

    @idle_ttl_s.setter
    def idle_ttl_s(self, value: float) -> None:
        self.policy.idle_ttl_s = value

    @property
    def backend_name(self) -> str:
        return self.backend.name

    # ---- lifecycle ----

    async def start(self) -> None:
        """Start the backend (cleaning a crashed run's leftovers), the pool and the reaper.
        Raises BackendUnavailable with the reason when guests cannot run here."""
        await self.backend.start()
        self._started = True
        if self.backend.name == "process":
            self.policy.runtimes = available_runtimes(self.cfg.runtime_path,
                                                      self.cfg.process_rootfs_dir or "/")
        else:
            self.policy.runtimes = dict.fromkeys(RUNTIMES)
        self._pool.start()
        for name in self.templates.recipes:
            if self.templates.find(name) is None:
                log.warning("sandbox_template_not_built", template=name,
                            build=self.templates.build_command(name))
            else:
                self._template(name)
        self._reaper = asyncio.create_task(self._reap_loop())
        log.info("sandbox_manager_started", backend=self.backend.name,
                 reason=self.backend_reason,
                 runtimes=[n for n, why in self.policy.runtimes.items() if why is None])

    async def __aenter__(self) -> SandboxManager:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every guest and remove every file, socket and process. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(self._pool.aclose(),
                             *(p.aclose() for p in self._template_pools.values()))
        await asyncio.gather(*self._notifiers, return_exceptions=True)
        sandboxes, self._sandboxes = list(self._sandboxes.values()), {}
        await asyncio.gather(*(sb._shutdown() for sb in sandboxes), return_exceptions=True)
        if self._started:
            await self.backend.aclose()
        for sb in sandboxes:
            await self._deleted(sb.id)
        log.info("sandbox_manager_stopped", sandboxes=len(sandboxes))

    # ---- capacity ----

    def _live(self) -> int:
        return sum(1 for sb in self._sandboxes.values() if sb.status != "dead")

    def _pools(self) -> builtins.list[WarmPool]:
        return [self._pool, *self._template_pools.values()]

    def _capacity_left(self) -> int:
        used = self._live() + self._reserved + sum(len(p.ready) + p.starting
                                                   for p in self._pools())
        return self.cfg.pool.max_total - used

    def _changed(self) -> None:
        async def notify() -> None:
            async with self._cond:
                self._cond.notify_all()

        if not self._closed:
            # Called from sync code; the task is referenced until it ran.
            task = asyncio.get_running_loop().create_task(notify())
            self._notifiers.add(task)
            task.add_done_callback(self._notifiers.discard)

    async def _acquire(self, *, cold: bool = False,
                       pool: WarmPool | None = None) -> tuple[WarmGuest | None, str]:
        """A warm guest from ``pool`` (the template's; None: it keeps none warm), or
        (None, "cold") with a slot reserved for a cold start, waiting up to
        acquire_timeout_s (and for pool starts already under way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.pool.acquire_timeout_s
        async with self._cond:
            while True:
                if self._closed:
                    raise BackendUnavailable("The sandbox manager is shutting down.")
                warm = None if cold or pool is None else pool.take()
                if warm is not None:
                    self._reserved += 1
                    return warm, "warm"
                if self._capacity_left() <= 0:
                    await self._evict_for(None if cold else pool)
                if self._capacity_left() > 0:
                    self._reserved += 1
                    return None, "cold"
                remaining = deadline - loop.time()
                starting = pool.starting if pool is not None else 0
                if remaining <= 0 and starting > 0:
                    # A guest is about to become ready; worth waiting for it.
                    remaining = self.cfg.start_timeout_s
                if remaining <= 0:
                    raise PoolExhausted(
                        f"All {self.cfg.pool.max_total} sandboxes are in use "
                        "(pool.max_total); delete one or try again later.")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), remaining)
                if loop.time() >= deadline and (pool is None or (pool.starting == 0
                                                                 and not pool.ready)) \
                        and self._capacity_left() <= 0:
                    raise PoolExhausted(
                        f"All {self.cfg.pool.max_total} sandboxes are in use "
                        f"(pool.max_total); none was freed within "
                        f"{self.cfg.pool.acquire_timeout_s} s.")

    async def _evict_for(self, pool: WarmPool | None) -> None:
        """At capacity, stop a warm guest another template's pool holds, so the slot serves
        this create instead of a sandbox nobody asked for yet."""
        for other in self._pools():
            if other is not pool:
                warm = other.evict()
                if warm is not None:
                    log.info("sandbox_pool_guest_evicted", id=warm.guest.id)
                    await warm.stop()
                    return

    # ---- templates ----

    def _template(self, name: str) -> TemplateImage:
        """The built template (400 unknown, 409 not built); the first time it is found
        built, what runtimes it offers is worked out and its warm pool started."""
        image = self.templates.require(name)
        if name not in self.policy.template_runtimes:
            configured = self.templates.recipes[name].runtimes
            if self.backend.name == "process":
                found = available_runtimes(self.cfg.runtime_path, str(image.root_dir))
            else:
                found = {r: None if r in image.manifest.runtimes else "not in its image"
                         for r in RUNTIMES}
            self.policy.template_runtimes[name] = {r: found.get(r) for r in configured}
            min_ready = self.templates.configs[name].pool.min_ready
            if min_ready > 0 and self._started and not self._closed:
                pool = WarmPool(self.backend, self.cfg.pool, self.cfg.start_timeout_s,
                                capacity_left=self._capacity_left, changed=self._changed,
                                template=image, min_ready=min_ready)
                self._template_pools[name] = pool
                pool.start()
        return image

    def template_infos(self) -> builtins.list[TemplateInfo]:
        """Every template, "default" first, with its state and what its build holds."""
        default = TemplateInfo(
            name=DEFAULT_TEMPLATE, state="built",
            base=(("host" if not self.cfg.process_rootfs_dir else self.cfg.process_rootfs_dir)
                  if self.backend.name == "process" else self.cfg.rootfs_path),
            apt=[], pip=[], files=[],
            runtimes=[n for n, why in self.policy.runtimes.items() if why is None],
            pool=TemplatePool(min_ready=self.cfg.pool.min_ready, ready=len(self._pool.ready)))
        out = [default]
        for name, recipe in sorted(self.templates.recipes.items()):
            state = self.templates.state(name)
            pool = self._template_pools.get(name)
            info = TemplateInfo(
                name=name, state=state, base=recipe.base, apt=list(recipe.apt),
                pip=list(recipe.pip), files=[p for p, _ in recipe.files],
                runtimes=list(self.templates.configs[name].runtimes),
                pool=TemplatePool(min_ready=self.templates.configs[name].pool.min_ready,
                                  ready=len(pool.ready) if pool is not None else 0),
                recipe_hash=self.templates.keys[name])
            if state == "built":
                image = self._template(name)
                m = image.manifest
                info.built_at, info.root_bytes = int(m.built_at), m.root_bytes
                info.image_bytes = m.image_bytes
                offered = self.policy.template_runtimes.get(name, {})
                info.runtimes = [r for r, why in offered.items() if why is None]
            else:
                info.build_command = self.templates.build_command(name)
            out.append(info)
        return out

    # ---- validation (the policy's; kept here for callers of the manager) ----

    def resolve_runtime(self, name: str) -> Runtime:
        return self.policy.resolve_runtime(name)

    def runtimes(self) -> dict[str, str | None]:
        """Runtime name -> None when usable, else why not."""
        return dict(self.policy.runtimes)

    # ---- sandboxes ----

    async def create(self, runtime: str, *, timeout_s: float | None = None,
                     env: dict[str, str] | None = None,
                     metadata: dict[str, str] | None = None,
                     on_timeout: OnTimeout | None = None, cpus: float | None = None,
                     memory_mb: int | None = None, disk_mb: int | None = None,
                     template: str | None = None,
                     network: list[str] | None = None) -> Sandbox:
        """A sandbox for ``runtime`` rooted in ``template`` (None: "default", the backend's
        own root), warm from its pool when one is ready (a cold start when it asks for
        resources other than the defaults). ``timeout_s`` is its lifetime (default and cap:
        max_lifetime_s). ``network``: hosts it may reach through the egress proxy (None: the
        template's network_allow, else the config's default_allow; empty: none)."""
        if not self._started or self._closed:
            raise BackendUnavailable("The sandbox manager is not running.")
        pol = self.policy
        name = template or DEFAULT_TEMPLATE
        image = None if name == DEFAULT_TEMPLATE else self._template(name)
        pool = self._pool if image is None else self._template_pools.get(name)
        pol.resolve_runtime(runtime, template=name)
        lifetime = pol.check_lifetime(timeout_s)
        pol.check_env(env)
        resources = pol.check_resources(cpus, memory_mb, disk_mb)
        if network is None and image is not None:
            network = self.templates.configs[name].network_allow  # None: the global default
        allow = self._check_network(network)
        custom = resources != pol.default_resources()
        t0 = time.monotonic()
        warm, kind = await self._acquire(cold=custom, pool=pool)
        try:
            if warm is None:
                try:
                    warm = await start_warm(self.backend, self.cfg.start_timeout_s,
                                            resources if custom else None, image)
                except BackendUnavailable:
                    raise
                except (TimeoutError, OSError, ConnectionLost) as exc:
                    raise BackendUnavailable(f"The sandbox did not start: {exc}") from exc
            egress: SandboxEgress | None = None
            sb_env = dict(env or {})
            if allow:
                egress = await self._open_egress(warm, allow)
                sb_env = {**proxy_env(), **sb_env}
            sb = Sandbox(warm.guest, warm.client, policy=pol, on_close=self.delete,
                         runtime=runtime, lifetime_s=lifetime, env=sb_env,
                         metadata=dict(metadata or {}), clock=self.clock,
                         on_timeout=on_timeout or self.cfg.on_timeout, resources=resources,
                         template=name, egress=egress)
            self._sandboxes[sb.id] = sb
        finally:
            self._reserved -= 1
            self._changed()
        seconds = time.monotonic() - t0
        self.observer.on_start(self.backend.name, kind, seconds, sandbox_id=sb.id,
                               runtime=runtime)
        log.info("sandbox_created", id=sb.id, runtime=runtime, template=name, kind=kind,
                 ms=round(seconds * 1000, 1))
        return sb

    def _check_network(self, network: list[str] | None) -> tuple[HostPattern, ...]:
        if self.egress is None:
            if network:
                raise InvalidRequest("This gateway has no egress proxy ([sandbox.egress] "
                                     "enabled = false): sandboxes cannot have network.",
                                     param="network.allow", code="egress_disabled")
            return ()
        return self.egress.check_allow(network)

    async def _open_egress(self, warm: WarmGuest, allow: tuple[HostPattern, ...],
                           ) -> SandboxEgress:
        """Listen for this guest on its own socket, then have its agent forward the guest's
        loopback proxy port to it. A guest that cannot is stopped (nothing left behind)."""
        assert self.egress is not None
        route = warm.guest.egress_route()
        egress: SandboxEgress | None = None
        try:
            egress = await self.egress.attach(warm.guest.id, allow, route.host_path, route.uid)
            reply = await warm.client.call(
                EgressStart(id=warm.client.new_id(), port=EGRESS_PROXY_PORT, unix=route.unix,
                            vsock_port=route.vsock_port), self.cfg.start_timeout_s)
            if not isinstance(reply, Ok):
                raise ConnectionLost(f"the agent refused egress: {reply}")
        except (OSError, TimeoutError, ConnectionLost) as exc:
            if egress is not None:
                await egress.aclose()
            await warm.stop()
            raise BackendUnavailable(f"The sandbox's egress could not be set up: {exc}") \
                from exc
        except BaseException:
            if egress is not None:
                await egress.aclose()
            await warm.stop()
            raise
        return egress

    def get(self, sandbox_id: str) -> Sandbox:
        sb = self._sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"No sandbox with id {sandbox_id!r}.", param="id")
        return sb

    def list(self, metadata: Mapping[str, str] | None = None) -> builtins.list[Sandbox]:
        """Every sandbox, or those whose metadata has all the given key/value pairs."""
        want = dict(metadata or {})
        return [sb for sb in self._sandboxes.values()
                if all(sb.metadata.get(k) == v for k, v in want.items())]

    def on_deleted(self, hook: Callable[[str], Awaitable[None]]) -> None:
        """Have ``hook(sandbox_id)`` awaited after every delete (by a client, on expiry, at
        close); a hook that fails is logged, never raised to the deleter."""
        self._on_deleted.append(hook)

    async def delete(self, sandbox_id: str) -> None:
        sb = self._sandboxes.pop(sandbox_id, None)
        if sb is None:
            raise NotFound(f"No sandbox with id {sandbox_id!r}.", param="id")
        try:
            await sb._shutdown()
        finally:
            self._changed()
            for pool in self._pools():
                pool.kick()
            log.info("sandbox_deleted", id=sandbox_id)
            await self._deleted(sandbox_id)

    async def _deleted(self, sandbox_id: str) -> None:
        for hook in self._on_deleted:
            try:
                await hook(sandbox_id)
            except Exception as exc:  # noqa: BLE001 - the delete itself has happened
                log.error("sandbox_delete_hook_failed", id=sandbox_id,
                          error=f"{type(exc).__name__}: {exc}")

    # ---- reaping ----

    async def reap(self) -> builtins.list[str]:
        """One pass: delete expired sandboxes, free crashed ones, replace dead pool guests.
        Returns the ids deleted. The reaper task calls this every reap_interval_s."""
        now = self.clock()
        deleted: builtins.list[str] = []
        for sb in list(self._sandboxes.values()):
            if sb.expired(now):
                if sb.on_timeout == "pause" and not sb.paused and sb.status != "dead":
                    try:
                        await sb.pause()
                        log.info("sandbox_paused_on_timeout", id=sb.id)
                        continue
                    except GatewayError as exc:
                        log.warning("sandbox_pause_failed", id=sb.id, error=exc.message)
                with contextlib.suppress(NotFound):
                    await self.delete(sb.id)
                    deleted.append(sb.id)
            elif sb.status == "dead" and not sb.freed:
                # Free the guest's files and processes now; the record stays as "dead".
                await sb.mark_dead()
        if sum(pool.drop_dead() for pool in self._pools()):
            self._changed()
        if deleted:
            log.info("sandboxes_reaped", ids=deleted)
        return deleted

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reap_interval_s)
            try:
                await self.reap()
            except Exception as exc:  # noqa: BLE001 - the reaper must keep running
                log.error("sandbox_reap_failed", error=f"{type(exc).__name__}: {exc}")

    # ---- observability ----

    def stats(self) -> SandboxStats:
        live = self._live()
        return SandboxStats(backend=self.backend.name, pool_ready=len(self._pool.ready),
                            pool_starting=self._pool.starting, active=live,
                            dead=len(self._sandboxes) - live,
                            max_total=self.cfg.pool.max_total, min_ready=self.cfg.pool.min_ready,
                            template_pools_ready={n: len(p.ready)
                                                  for n, p in self._template_pools.items()})

    def describe(self) -> dict[str, object]:
        """For /health/ready: the backend, why it was chosen, its isolation and limits."""
        out: dict[str, object] = {"backend": self.backend.name,
                                  "backend_reason": self.backend_reason}
        out.update(self.backend.describe())
        out["runtimes"] = {n: ("available" if why is None else why)
                           for n, why in self.policy.runtimes.items()}
        out["pool"] = msgspec.structs.asdict(self.stats())
        out["egress"] = self.egress.describe() if self.egress is not None else \
            {"enabled": False}
        if self._pool.last_error:
            out["pool_last_error"] = self._pool.last_error
        if self.templates.recipes:
            out["templates"] = {n: self.templates.state(n) for n in self.templates.recipes}
        return out

    async def wait_pool_ready(self, count: int | None = None, timeout_s: float = 30.0,
                              template: str | None = None) -> bool:
        """Wait until ``count`` (default min_ready) guests of ``template``'s pool (default:
        the default pool) are ready; False on timeout or when it keeps no pool."""
        name = template or DEFAULT_TEMPLATE
        if name == DEFAULT_TEMPLATE:
            pool: WarmPool | None = self._pool
        else:
            self._template(name)
            pool = self._template_pools.get(name)
        if pool is None:
            return False
        want = pool.min_ready if count is None else count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._cond:
            while len(pool.ready) < want:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), remaining)
        return True
