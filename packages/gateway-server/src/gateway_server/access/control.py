"""The gateway's access control in one object: who a key is (the key store and its
cache), what a caller may do (model allow-lists, its limits and budgets as a limiter
``Charge``, sandbox quotas and ownership), and what it spent (the usage recorder)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway_core.config import Config, StorageConfig
from gateway_core.errors import (
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from gateway_core.sandbox_types import SandboxLLM
from gateway_llm.hub import Usage
from gateway_llm.limiter import (
    Charge,
    Limit,
    LimitStore,
    LimitStoreUnavailable,
    Slot,
    iso_utc,
)
from gateway_llm.prices import NANO_PER_USD, Prices
from gateway_server.access.database import Database
from gateway_server.access.keys import KeyRow, KeyStore
from gateway_server.access.records import KeySpec, LimitFields, Period, Principal
from gateway_server.access.usage import UsageRecord, UsageRecorder

__all__ = ["AccessControl", "caller_limits", "period_of", "period_start"]

log = structlog.get_logger("gateway.access")


def period_of(period: Period, wall: float) -> tuple[str, float]:
    """(period id, wall-clock end; 0 for "total") of the budget period holding ``wall``."""
    if period == "total":
        return "total", 0.0
    now = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return "d" + start.strftime("%Y%m%d"), (start + datetime.timedelta(days=1)).timestamp()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 \
        else start.replace(month=start.month + 1)
    return "m" + start.strftime("%Y%m"), end.timestamp()


def period_start(period: Period, wall: float) -> float | None:
    """Where the budget period holding ``wall`` began (None for "total")."""
    if period == "total":
        return None
    now = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.timestamp()


def caller_limits(kind: str, ident: str, name: str, spec: LimitFields,
                  wall: float) -> list[Limit]:
    """A key's or team's rpm/tpm (GCRA) and budgets (counters for their period)."""
    owner = f"{kind} '{name}' ({ident})"
    scope = f"{kind}:{ident}"
    out = []
    if spec.rpm is not None:
        out.append(Limit(f"{scope}:requests", "requests", spec.rpm, 60.0, owner=owner))
    if spec.tpm is not None:
        out.append(Limit(f"{scope}:tokens", "tokens", spec.tpm, 60.0, owner=owner))
    pid, resets_at = period_of(spec.period, wall)
    if spec.max_tokens is not None:
        out.append(Limit(f"{scope}:budget_tokens:{pid}", "budget_tokens", spec.max_tokens,
                         1.0, resets_at=resets_at, owner=owner, label=spec.period))
    if spec.max_cost is not None:
        out.append(Limit(f"{scope}:budget_cost:{pid}", "budget_cost",
                         round(spec.max_cost * NANO_PER_USD), 1.0, resets_at=resets_at,
                         owner=owner, label=spec.period))
    return out


@dataclass(slots=True)
class _CachedCharge:
    principal: Principal
    charge: Charge
    valid_until: float  # wall clock: the first period end among its budgets


class AccessControl:
    """Owns the database, the key store and the usage recorder (started and stopped by the
    app's lifespan)."""

    def __init__(self, config: Config, storage: StorageConfig, prices: Prices, *,
                 on_drop: Callable[[int], None] | None = None,
                 on_error: Callable[[], None] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.prices = prices
        self.wall_clock = wall_clock
        self.db = Database(storage.url)
        rl = config.rate_limit
        self.keys = KeyStore(self.db, cache_ttl_s=storage.key_cache_ttl_s,
                             redis_url=rl.redis_url if rl.backend == "redis" else None,
                             wall_clock=wall_clock)
        self.usage = UsageRecorder(self.db, flush_interval_s=storage.flush_interval_s,
                                   batch_size=storage.batch_size,
                                   max_pending=storage.max_pending, on_drop=on_drop,
                                   on_error=on_error)
        self._charges: dict[str, _CachedCharge] = {}
        self.fail_open = rl.fail_open
        # Sandbox id -> the max_sandboxes slots it holds (given back when it ends).
        self._slots: dict[str, list[str]] = {}
        # Sandbox id -> the caller that created it (sandboxes live in this process).
        self.owners: dict[str, Principal] = {}
        # Sandbox id -> its reserved lifetime: (limits, seconds, created at, monotonic).
        self._lifetimes: dict[str, tuple[list[Limit], int, float]] = {}
        # Sandbox id -> the child key minted for the code inside it.
        self._children: dict[str, str] = {}
        self.started = False

    async def start(self) -> None:
        await self.db.start()
        await self.keys.start()
        await self.usage.start()
        self.started = True

    async def aclose(self) -> None:
        self.started = False
        try:
            await self.usage.aclose()
            await self.keys.aclose()
        finally:
            await self.db.aclose()

    def health(self) -> dict[str, object]:
        usage = self.usage.health()
        warning = None
        if not usage["healthy"]:
            warning = ("usage records cannot be written: "
                       + ("requests of virtual keys are refused"
                          if self.storage.on_unrecorded == "refuse" else "kept in memory"))
        return {"database": self.db.dialect, "keys": self.keys.health(), "usage": usage,
                "on_unrecorded": self.storage.on_unrecorded, "warning": warning}

    # --- a request ---------------------------------------------------------------------

    def check_model(self, principal: Principal, model: str) -> None:
        if not principal.allows(model):
            raise PermissionDenied(
                f"This key may not use the model '{model}'.", param="model",
                code="model_not_allowed")

    def check_recording(self, principal: Principal) -> None:
        if principal.limited and self.storage.on_unrecorded == "refuse" \
                and not self.usage.can_record():
            raise ServiceUnavailable(
                "Spend cannot be recorded now (the usage database is unavailable); "
                "try again shortly.", code="usage_store_unavailable",
                headers={"retry-after": "1"})

    def charge(self, principal: Principal) -> Charge | None:
        """The caller's limits for the limiter; None when it has none."""
        if not principal.limited:
            return None
        wall = self.wall_clock()
        cached = self._charges.get(principal.key_id)
        if cached is not None and cached.principal is principal and \
                (not cached.valid_until or wall < cached.valid_until):
            return cached.charge
        limits: list[Limit] = []
        if principal.key is not None:
            limits += caller_limits("key", principal.key_id, principal.name, principal.key,
                                    wall)
        if principal.parent is not None and principal.parent_id is not None:
            # A child key's spend counts against its parent's limits too.
            limits += caller_limits("key", principal.parent_id, principal.parent_id,
                                    principal.parent, wall)
        if principal.team is not None and principal.team_id is not None:
            limits += caller_limits("team", principal.team_id, principal.team_id,
                                    principal.team, wall)
        ends = [lim.resets_at for lim in limits if lim.resets_at]
        charge = Charge(limits, self.prices)
        if len(self._charges) > 100_000:
            self._charges.clear()
        self._charges[principal.key_id] = _CachedCharge(principal, charge,
                                                        min(ends) if ends else 0.0)
        return charge

    def record(self, principal: Principal | None, *, request_id: str, alias: str, api: str,
               provider: str | None, model: str | None, usage: Usage | None, status: int,
               latency_s: float) -> None:
        u = usage or Usage()
        cost = self.prices(alias, model).cost_nano(u) if usage is not None and model else 0
        self.usage.record(UsageRecord(
            ts=self.wall_clock(), request_id=request_id,
            key_id=None if principal is None else principal.key_id,
            team_id=None if principal is None else principal.team_id, alias=alias,
            provider=provider, model=model, api=api, input_tokens=u.input_tokens,
            output_tokens=u.output_tokens, cached_tokens=u.cached_input_tokens or 0,
            reasoning_tokens=u.reasoning_tokens or 0, cost_nano=cost,
            latency_ms=latency_s * 1000, status=status))

    # --- sandboxes ---------------------------------------------------------------------

    def owns(self, principal: Principal | None, sandbox_id: str) -> bool:
        if principal is None:
            return True
        return principal.sees(self.owners.get(sandbox_id))

    async def hold_sandbox(self, principal: Principal, store: LimitStore | None) -> list[str]:
        """One of the caller's ``max_sandboxes`` (the key's and its team's), counted in the
        limit store across every worker and replica; 429 past it. The slots to give back
        (``let_go_sandbox``) when the sandbox ends or its create fails."""
        if not principal.limited or store is None:  # no store: no keys, nothing limited
            return []
        slots = [Slot(f"{kind}:{ident}:sandboxes", spec.max_sandboxes, f"{kind} '{ident}'")
                 for kind, ident, spec in (("key", principal.key_id, principal.key),
                                           ("team", principal.team_id, principal.team))
                 if spec is not None and ident is not None and spec.max_sandboxes is not None]
        if not slots:
            return []
        keys = [slot.key for slot in slots]
        try:
            full = await store.hold(slots)
        except LimitStoreUnavailable as exc:
            _store_down(exc, self.fail_open, "max_sandboxes")
            if not self.fail_open:
                await store.let_go(keys)
                raise _unavailable() from None
            return keys  # counted by this process, and told to Redis once it answers
        if full is not None:
            index, have = full
            raise RateLimited(
                f"The {slots[index].owner} has {have} sandboxes, its max_sandboxes; delete "
                "one first.", param="max_sandboxes", code="sandbox_quota_exceeded")
        return keys

    async def let_go_sandbox(self, keys: list[str], store: LimitStore | None) -> None:
        if keys and store is not None:
            await store.let_go(keys)

    async def reserve_sandbox_seconds(self, principal: Principal, seconds: float,
                                      store: LimitStore | None) -> list[Limit]:
        """Take a new sandbox's lifetime (its timeout) from ``max_sandbox_seconds`` per
        period of the key and its team; the unused part comes back on DELETE."""
        if not principal.limited or store is None:
            return []
        wall = self.wall_clock()
        limits: list[Limit] = []
        for kind, ident, spec in (("key", principal.key_id, principal.key),
                                  ("team", principal.team_id, principal.team)):
            if spec is None or ident is None or spec.max_sandbox_seconds is None:
                continue
            pid, resets_at = period_of(spec.period, wall)
            limits.append(Limit(f"{kind}:{ident}:budget_sandbox_s:{pid}", "budget_tokens",
                                spec.max_sandbox_seconds, 1.0, resets_at=resets_at,
                                owner=f"{kind} '{ident}'", label=spec.period))
        if not limits:
            return []
        cost = max(1, round(seconds))
        if not await _take_seconds(store, limits, cost, f"A sandbox of {cost} s",
                                   "max_sandbox_seconds", self.fail_open):
            return []
        return limits

    async def extend_sandbox(self, sandbox_id: str, timeout_s: float,
                             store: LimitStore | None) -> None:
        """A sandbox's life set to end ``timeout_s`` from now: what that adds past its
        reserved lifetime is taken from the same quotas (429 naming ``timeout`` past
        them, and the timeout stays as it was); a shorter life keeps its reservation,
        whose unused part comes back on DELETE."""
        found = self._lifetimes.get(sandbox_id)
        if found is None or store is None:
            return
        limits, reserved, started = found
        extra = round(time.monotonic() - started + timeout_s) - reserved
        if extra <= 0:
            return
        if await _take_seconds(store, limits, extra, f"{extra} s more of sandbox life",
                               "timeout", self.fail_open):
            self._lifetimes[sandbox_id] = (limits, reserved + extra, started)

    def holds(self, sandbox_id: str, slots: list[str]) -> None:
        """The sandbox holds these max_sandboxes slots until it ends."""
        if slots:
            self._slots[sandbox_id] = slots

    def created_sandbox(self, principal: Principal | None, sandbox_id: str,
                        reserved: list[Limit], timeout_s: float) -> None:
        if principal is not None:
            self.owners[sandbox_id] = principal
        if reserved:
            self._lifetimes[sandbox_id] = (reserved, max(1, round(timeout_s)),
                                           time.monotonic())

    async def mint_child(self, principal: Principal, llm: SandboxLLM,
                         lifetime_s: float) -> KeyRow:
        """A key for the code inside a new sandbox: within the caller's models and budgets
        (a request for more is a 400 naming the field), its spend counted against the
        caller's key and team too, expiring with the sandbox's longest life."""
        if principal.parent_id is not None:
            raise PermissionDenied("A sandbox's own key cannot give keys to sandboxes.",
                                   param="llm", code="child_of_child")
        models = llm.models
        if models is None:
            models = list(principal.key.models) if principal.key is not None else ["*"]
        for i, model in enumerate(models):
            if model == "*" and principal.limited and not all(
                    "*" in spec.models for spec in (principal.key, principal.team)
                    if spec is not None):
                raise InvalidRequest("llm.models may not be '*': the caller's key is "
                                     "limited to some models.", param=f"llm.models[{i}]")
            if model != "*" and not principal.allows(model):
                raise InvalidRequest(f"llm.models[{i}] = {model!r} is not allowed for the "
                                     "caller's key.", param=f"llm.models[{i}]")
        for name in ("max_tokens", "max_cost"):
            wanted = getattr(llm, name)
            for spec in (principal.key, principal.team):
                bound = None if spec is None else getattr(spec, name)
                if wanted is not None and bound is not None and wanted > bound:
                    raise InvalidRequest(f"llm.{name} = {wanted} is more than the caller's "
                                         f"{name} of {bound}.", param=f"llm.{name}")
        expires = datetime.datetime.fromtimestamp(self.wall_clock() + lifetime_s + 60,
                                                  datetime.UTC)
        spec = KeySpec(
            name=f"sandbox key of {principal.name}"[:200], models=models,
            max_tokens=llm.max_tokens, max_cost=llm.max_cost, period="total",
            team=principal.team_id if principal.limited else None,
            parent=principal.key_id if principal.limited else None,
            owner=principal.key_id, expires_at=expires, metadata={"kind": "sandbox"})
        return await self.keys.create_key(spec)

    def child_minted(self, sandbox_id: str, key_id: str) -> None:
        self._children[sandbox_id] = key_id

    def child_of(self, sandbox_id: str) -> str | None:
        return self._children.get(sandbox_id)

    async def deleted_sandbox(self, sandbox_id: str, store: LimitStore | None) -> None:
        """Revoke the sandbox's child key; give back the unused part of its reserved
        lifetime."""
        self.owners.pop(sandbox_id, None)
        await self.let_go_sandbox(self._slots.pop(sandbox_id, []), store)
        child = self._children.pop(sandbox_id, None)
        if child is not None:
            await self.keys.revoke_key(child)
        found = self._lifetimes.pop(sandbox_id, None)
        if found is None or store is None:
            return
        limits, reserved, started = found
        unused = reserved - max(1, round(time.monotonic() - started))
        if unused > 0:
            await store.adjust(limits, [-unused] * len(limits))


def _store_down(exc: LimitStoreUnavailable, fail_open: bool, quota: str) -> None:
    log.warning("sandbox_quota_unchecked" if fail_open else "sandbox_quota_refused",
                quota=quota, error=str(exc), fail_open=fail_open)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The rate-limit store is unavailable; try again shortly.",
                              code="ratelimit_store_unavailable", headers={"retry-after": "1"})


async def _take_seconds(store: LimitStore, limits: list[Limit], seconds: int, what: str,
                        param: str, fail_open: bool) -> bool:
    """Take ``seconds`` from the quotas (429 past them). False: the store is down and
    ``fail_open`` lets the sandbox go on without them (503 otherwise)."""
    try:
        decision = await store.reserve(limits, [seconds] * len(limits))
    except LimitStoreUnavailable as exc:
        _store_down(exc, fail_open, "max_sandbox_seconds")
        if fail_open:
            return False
        raise _unavailable() from None
    if not decision.admitted:
        limit = limits[decision.denied_index]
        when = f"; it resets at {iso_utc(limit.resets_at)}" if limit.resets_at else ""
        raise RateLimited(
            f"{what} would pass the max_sandbox_seconds of {limit.owner} "
            f"({limit.amount} s per {limit.label}){when}.", param=param,
            code="sandbox_quota_exceeded")
    return True
