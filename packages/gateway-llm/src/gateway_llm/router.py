"""The router: resolves a model alias to its deployments (the alias's own, ordered by its
routing strategy, then its fallbacks) and walks them — a retryable failure moves to another
deployment of the same alias before the same one is retried with backoff, deployments with
an open circuit or no budget are skipped — until one answers or the deadline runs out.
When every door is shut, the deployment whose circuit opened first still gets the request
as a probe instead of the client getting a 503."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec
import structlog

from gateway_core.config import (
    DeploymentConfig,
    LLMConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    Routing,
)
from gateway_core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from gateway_llm.balancer import DeploymentStats, order
from gateway_llm.circuit import CircuitBreaker, Permit
from gateway_llm.errors import PROVIDER_FAULT_STATUSES, AttemptFailed
from gateway_llm.hub import EncodeOptions, LLMRequest, Usage
from gateway_llm.limiter import Admission, Charge, Denied, RateLimiter, iso_utc
from gateway_llm.providers import make_provider
from gateway_llm.providers.base import Call, Completion, Provider, Stream

__all__ = [
    "Deployment",
    "Routed",
    "RoutedCompletion",
    "RoutedStream",
    "Router",
    "RouterObserver",
    "thinking_mode",
]

log = structlog.get_logger("gateway.llm")


class RouterObserver(Protocol):
    """Where the router reports what it did (the server turns these into metrics).
    ``deployment`` is the deployment's configured name (bounded by the config)."""

    def attempt_start(self, provider: str, model: str, api: str, deployment: str,
                      attempt: int) -> Mapping[str, str]:
        """An attempt is about to go upstream (``attempt`` counts from 1 per request). The
        headers returned go with it (W3C trace context); most observers return none."""
        ...

    def attempt(self, provider: str, model: str, outcome: str, seconds: float,
                api: str, deployment: str) -> None:
        """An attempt ended: ``outcome`` is "ok", a failure reason, or "cancelled" (the
        client went away). ``seconds`` run to the whole answer, for a stream to its first
        output."""
        ...

    def failover(self, from_: str, to: str, reason: str) -> None: ...

    def tokens(self, provider: str, model: str, usage: Usage) -> None: ...

    def circuit(self, provider: str, model: str, deployment: str, is_open: bool) -> None: ...

    def open_circuit(self, alias: str, is_open: bool) -> None:
        """Every deployment of the alias and of its fallbacks has an open circuit: it is
        served through the last door (True), or one closed again (False)."""
        ...

    def ratelimited(self, provider: str, limit: str) -> None: ...

    def remaining(self, provider: str, limit: str, value: int) -> None: ...


@dataclass(slots=True, eq=False)
class Deployment:
    """One upstream of an alias. Its breaker and stats belong to its name and are shared
    by every alias that lists it."""

    alias: str
    provider: Provider
    model: str
    breaker: CircuitBreaker
    options: EncodeOptions
    name: str = ""  # defaults to "provider/model"
    weight: float = 1.0
    stats: DeploymentStats = field(default_factory=DeploymentStats)
    # The metrics label: the name for configured deployments; a client's direct
    # "provider/any-model" shows as "provider/*" so labels stay bounded by the config.
    label: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.provider.name}/{self.model}"
        if not self.label:
            self.label = self.name

    @property
    def key(self) -> str:
        return self.name


@dataclass(slots=True)
class _Group:
    """One alias's deployments in a chain, picked among by its routing strategy."""

    alias: str
    routing: Routing
    deployments: list[Deployment]


@dataclass(slots=True)
class Routed:
    """Who answered and how many tries it took."""

    provider: str
    model: str
    attempts: int
    fallback: bool
    headers: dict[str, str]
    admission: Admission | None
    deployment: str


@dataclass(slots=True)
class RoutedCompletion(Routed):
    completion: Completion


@dataclass(slots=True)
class RoutedStream(Routed):
    stream: Stream  # settles its token reservation itself when closed


# Claude models from 4.6 on refuse thinking budgets and take {"type": "adaptive"}.
_CLAUDE_VERSION = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d))?(?!\d)")


def thinking_mode(model: str, configured: str | None) -> Literal["adaptive", "budget", "off"]:
    """How reasoning effort becomes Anthropic thinking for this upstream model."""
    if configured == "adaptive":
        return "adaptive"
    if configured == "budget":
        return "budget"
    if configured == "off":
        return "off"
    m = _CLAUDE_VERSION.search(model)
    if m is None:
        return "budget"
    version = (int(m.group(1)), int(m.group(2) or 0))
    if version[0] < 3:  # claude-3-7-sonnet and the like read as (3, 7)
        return "budget"
    return "adaptive" if version >= (4, 6) else "budget"


class SettlingStream:
    """The provider's stream; closing it (however it ended) settles the reservation to the
    usage it reported and reports the tokens, once. ``done`` (synchronous: it also runs if
    the stream is dropped unclosed) ends the deployment's in-flight count."""

    def __init__(self, stream: Stream, settle: Callable[[Usage | None], Awaitable[None]],
                 done: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._settle: Callable[[Usage | None], Awaitable[None]] | None = settle
        self._done = done

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def headers(self) -> dict[str, str]:
        return self._stream.headers

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._finish()
            settle, self._settle = self._settle, None
            if settle is not None:
                await settle(self._stream.usage)

    def __del__(self) -> None:
        self._finish()


ProviderFactory = Callable[[str, ProviderConfig], Provider]
_NO_HEADERS: Mapping[str, str] = {}


class _Walk:
    """One client request's way through the chain."""

    __slots__ = ("attempts", "charge", "counted", "deadline", "denials", "estimate", "last",
                 "previous", "primary", "request", "shut", "skipped", "stream", "tried")

    def __init__(self, request: LLMRequest, stream: bool, deadline: float, estimate: int,
                 primary: _Group, charge: Charge | None = None) -> None:
        self.request = request
        self.charge = charge
        self.stream = stream
        self.deadline = deadline
        self.estimate = estimate
        self.primary = primary
        self.attempts = 0
        self.last: AttemptFailed | None = None
        self.skipped: list[str] = []
        self.denials: list[Denied] = []
        self.previous: Deployment | None = None
        # Deployments this request already counted in their breaker (once per request).
        self.counted: set[str] = set()
        self.tried: set[str] = set()
        self.shut: list[Deployment] = []  # skipped for an open circuit


class Router:
    def __init__(
        self,
        config: LLMConfig,
        providers: dict[str, Provider],
        *,
        observer: RouterObserver | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        provider_factory: ProviderFactory = make_provider,
    ) -> None:
        self.config = config
        self.providers = providers
        self.observer = observer
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._factory = provider_factory
        self._breakers: dict[str, CircuitBreaker] = {}
        self._stats: dict[str, DeploymentStats] = {}
        # Deployments with their own pool, timeouts or headers: a provider instance each.
        self._sessions: dict[str, Provider] = {}
        self._configured: dict[str, DeploymentConfig] = {}
        for alias, m in config.models.items():
            for dc in m.resolved_deployments(alias):
                assert dc.name is not None
                self._configured.setdefault(dc.name, dc)
        self._chains: dict[str, list[_Group]] = {}
        self._aliases_of: dict[str, set[str]] = {}
        for alias in config.models:
            self._chains[alias] = groups = self._resolve(alias)
            for g in groups:
                for d in g.deployments:
                    self._aliases_of.setdefault(d.name, set()).add(alias)
        self._open_aliases: set[str] = set()

    @classmethod
    def from_config(
        cls, llm: LLMConfig, rate_limit: RateLimitConfig | None = None, *,
        observer: RouterObserver | None = None, charges: bool = False,
    ) -> Router:
        providers: dict[str, Provider] = {
            name: make_provider(name, pc) for name, pc in llm.providers.items() if pc.enabled
        }
        limiter = None
        if rate_limit is not None:
            limiter = RateLimiter.from_config(rate_limit, llm.providers, llm.models,
                                              charges=charges)
        return cls(llm, providers, observer=observer, limiter=limiter)

    async def start(self) -> None:
        if self.limiter is not None:
            await self.limiter.start()
        for p in [*self.providers.values(), *self._sessions.values()]:
            await p.start()

    async def aclose(self) -> None:
        for p in [*self.providers.values(), *self._sessions.values()]:
            await p.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- resolution ------------------------------------------------------------------

    def _deployment(self, alias: str, provider: str, model: str,
                    dc: DeploymentConfig | None = None, *, direct: bool = False,
                    ) -> Deployment | None:
        name = dc.name if dc is not None and dc.name else f"{provider}/{model}"
        weight = dc.weight if dc is not None else 1.0
        # "provider/model" written as a fallback (or asked for directly) is the configured
        # deployment of that name when there is one, with its own session and budget.
        dc = self._configured.get(name, dc)
        p = self._provider_for(name, provider, dc)
        if p is None:  # disabled
            return None
        breaker = self._breakers.get(name)
        if breaker is None:
            cd = self.config.cooldown
            breaker = CircuitBreaker(
                window_s=cd.window_s, min_requests=cd.min_requests,
                failure_rate=cd.failure_rate, min_failures=cd.failures,
                cooldown_s=cd.cooldown_s, probes=cd.probes, clock=self.clock)
            self._breakers[name] = breaker
        stats = self._stats.setdefault(name, DeploymentStats())
        m = self.config.models.get(alias) or ModelConfig(provider=provider)
        options = EncodeOptions(
            default_max_tokens=self.config.default_max_tokens,
            thinking=thinking_mode(model, m.thinking),
            drop_params=tuple(m.drop_params),
            hosted_tools=m.hosted_tools,
        )
        label = name if not direct or name in self._configured else f"{provider}/*"
        return Deployment(alias, p, model, breaker, options, name=name, weight=weight,
                          stats=stats, label=label)

    def _provider_for(self, name: str, provider: str,
                      dc: DeploymentConfig | None) -> Provider | None:
        shared = self.providers.get(provider)
        if shared is None or dc is None or not dc.own_session:
            return shared
        own = self._sessions.get(name)
        if own is None:
            pc = shared.config
            overrides: dict[str, object] = {
                key: getattr(dc, key) for key in
                ("max_connections", "connect_timeout_s", "first_byte_timeout_s",
                 "total_timeout_s") if getattr(dc, key) is not None}
            own = self._factory(provider, msgspec.structs.replace(
                pc, headers={**pc.headers, **dc.headers}, **overrides))
            self._sessions[name] = own
        return own

    def _group(self, alias: str) -> _Group:
        m = self.config.models[alias]
        deployments = []
        for dc in m.resolved_deployments(alias):
            assert dc.model is not None
            d = self._deployment(alias, dc.provider, dc.model, dc)
            if d is not None:
                deployments.append(d)
        return _Group(alias, m.routing, deployments)

    def _resolve(self, alias: str) -> list[_Group]:
        m = self.config.models[alias]
        chain = [self._group(alias)]
        for fb in m.fallbacks:
            if fb in self.config.models:
                chain.append(self._group(fb))
                continue
            d: Deployment | None
            if "/" in fb:
                provider, model = fb.split("/", 1)
                d = self._deployment(alias, provider, model)
            else:
                default = self.config.providers[fb].default_model
                d = self._deployment(alias, fb, default) if default else None
            chain.append(_Group(alias, "weighted", [d] if d is not None else []))
        # Each deployment once, where it first appears.
        seen: set[str] = set()
        out = []
        for g in chain:
            g.deployments = [d for d in g.deployments if d.name not in seen]
            seen.update(d.name for d in g.deployments)
            if g.deployments:
                out.append(g)
        return out

    def models(self) -> list[tuple[str, str]]:
        """(alias, owning provider) for each alias with an enabled deployment of its own."""
        out = []
        for alias, m in self.config.models.items():
            for dc in m.resolved_deployments(alias):
                if dc.provider in self.providers:
                    out.append((alias, dc.provider))
                    break
        return out

    def groups(self, model: str) -> list[_Group]:
        groups = self._chains.get(model)
        if groups is not None:
            if not groups:
                raise ServiceUnavailable(
                    f"Model '{model}' has no enabled provider.", param="model",
                    code="model_unavailable",
                )
            return groups
        # "provider/upstream-model" addresses a configured provider directly.
        if "/" in model and self.config.aliases_only:
            raise PermissionDenied(
                f"The model '{model}' addresses a provider directly, which this gateway "
                "refuses (llm.aliases_only); use one of its model aliases.", param="model",
                code="aliases_only")
        if "/" in model:
            provider, upstream = model.split("/", 1)
            d = self._deployment(model, provider, upstream, direct=True)
            if d is not None and upstream:
                return [_Group(model, "weighted", [d])]
        raise NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model", code="model_not_found",
        )

    def chain(self, model: str) -> list[Deployment]:
        """Every deployment a request for the model may reach, the alias's own first."""
        return [d for g in self.groups(model) for d in g.deployments]

    def health(self) -> dict[str, object]:
        deployments = {}
        for name, b in self._breakers.items():
            requests, failures = b.counts()
            stats = self._stats[name]
            deployments[name] = {
                "state": b.state, "retry_in_s": round(b.retry_in(), 3),
                "last_error": b.last_reason, "window_requests": requests,
                "window_failures": failures, "in_flight": stats.in_flight,
                "latency_ms": None if stats.latency_s is None
                else round(stats.latency_s * 1000, 1),
            }
        models = {}
        for alias, groups in self._chains.items():
            models[alias] = {
                "routing": self.config.models[alias].routing,
                "deployments": [d.name for d in groups[0].deployments] if groups else [],
                # Every door is shut: requests go to the one that opened first, as probes.
                "open_circuit": self._all_open(alias),
            }
        return {"providers": {n: {"kind": p.kind, "api_key_set": bool(p.config.api_key)}
                              for n, p in self.providers.items()},
                "deployments": deployments,
                "models": models,
                "rate_limit": None if self.limiter is None else self.limiter.health()}

    def _all_open(self, alias: str) -> bool:
        groups = self._chains.get(alias) or []
        return bool(groups) and all(d.breaker.state != "closed"
                                    for g in groups for d in g.deployments)

    # --- the request -----------------------------------------------------------------

    async def complete(
        self, request: LLMRequest, *, timeout_s: float | None = None,
        charge: Charge | None = None,
    ) -> RoutedCompletion:
        """``charge``: the caller's own limits, reserved with the deployments'."""
        routed = await self._route(request, stream=False, timeout_s=timeout_s, charge=charge)
        assert isinstance(routed, RoutedCompletion)
        return routed

    async def stream(
        self, request: LLMRequest, *, timeout_s: float | None = None,
        charge: Charge | None = None,
    ) -> RoutedStream:
        """The stream settles its reservation itself when it is closed."""
        routed = await self._route(request, stream=True, timeout_s=timeout_s, charge=charge)
        assert isinstance(routed, RoutedStream)
        return routed

    def _check_output_limit(self, request: LLMRequest) -> None:
        m = self.config.models.get(request.model)
        wanted = request.max_output_tokens
        if m is not None and m.max_output_tokens is not None and wanted is not None \
                and wanted > m.max_output_tokens:
            field = {"chat": "max_tokens", "responses": "max_output_tokens",
                     "messages": "max_tokens"}.get(request.dialect.name, "max_tokens")
            raise InvalidRequest(
                f"{field} = {wanted} is more than the {m.max_output_tokens} output tokens "
                f"allowed for model '{request.model}'.", param=field,
                code="max_tokens_too_large",
            )

    async def _route(
        self, request: LLMRequest, *, stream: bool, timeout_s: float | None,
        charge: Charge | None = None,
    ) -> RoutedCompletion | RoutedStream:
        groups = self.groups(request.model)
        self._check_output_limit(request)
        loop = asyncio.get_running_loop()
        budget = self.config.request_timeout_s
        if timeout_s is not None:
            budget = min(budget, timeout_s)
        deadline = loop.time() + budget
        estimate = self.limiter.estimate(request) if self.limiter is not None else 0
        walk = _Walk(request, stream, deadline, estimate, groups[0], charge)
        for g in groups:
            ordered = order(g.routing, g.deployments, rng=self._rng, now=self.clock())
            result = await self._walk(walk, ordered, budget)
            if result is not None:
                return result
        # Never shut the last door: rather than refuse, send the request (as a probe) to the
        # deployment whose circuit opened first, if this request has not tried it yet.
        shut = [d for d in walk.shut if d.name not in walk.tried]
        if shut:
            d = min(shut, key=lambda d: d.breaker.opened_at or -math.inf)
            log.warning("circuit_last_door", model=request.model, deployment=d.name)
            result = await self._walk(walk, [d], budget, forced=True)
            if result is not None:
                return result
        if walk.last is not None:
            raise walk.last.error
        if walk.denials:
            raise self._denied(request.model, walk.denials)
        raise ServiceUnavailable(
            f"No deployment of model '{request.model}' can take the request now: "
            + "; ".join(walk.skipped) + ".", code="no_deployment_available",
        )

    async def _walk(self, walk: _Walk, ordered: list[Deployment], budget: float, *,
                    forced: bool = False) -> RoutedCompletion | RoutedStream | None:
        """Try the deployments in order, each once, then again (after its backoff) those
        whose failure may pass on a retry, until each has had its retries."""
        loop = asyncio.get_running_loop()
        limiter = self.limiter
        tries: dict[str, int] = {}
        not_before: dict[str, float] = {}
        active = list(ordered)
        while active:
            for d in list(active):
                n = tries.get(d.name, 0)
                if n:
                    wait = not_before[d.name] - loop.time()
                    if wait > 0:
                        if loop.time() + wait >= walk.deadline:
                            active.remove(d)
                            continue
                        await self._sleep(wait)
                permit = d.breaker.force() if forced else d.breaker.admit()
                if permit is None:
                    walk.skipped.append(f"{d.name} cooling down")
                    if d not in walk.shut:
                        walk.shut.append(d)
                    active.remove(d)
                    continue
                admission: Admission | None = None
                if limiter is not None:
                    try:
                        decision = await limiter.acquire(
                            d.provider.name, d.alias, walk.estimate, deployment=d.name,
                            model=d.model, charge=walk.charge)
                    except BaseException:
                        d.breaker.release(permit)  # cancelled: a probe slot must not leak
                        raise
                    if isinstance(decision, Denied):
                        d.breaker.release(permit)
                        if decision.caller:  # the caller's own limit: no other door helps
                            raise _caller_denied(decision)
                        walk.denials.append(decision)
                        walk.skipped.append(f"{d.name} over its {decision.limit} limit")
                        if not decision.too_large and not decision.store_unavailable:
                            d.stats.observe_exhausted(self.clock(), decision.retry_after_s)
                        if self.observer is not None:
                            self.observer.ratelimited(d.provider.name, decision.limit)
                        active.remove(d)
                        continue
                    admission = decision
                    self._report_remaining(admission)
                    self._note_budget(d, admission)
                if walk.previous is not None and walk.previous is not d \
                        and self.observer is not None:
                    reason = walk.last.reason if walk.last else "skipped"
                    self.observer.failover(walk.previous.key, d.key, reason)
                walk.previous = d
                tries[d.name] = n + 1
                outcome = await self._attempt(walk, d, permit, admission)
                if not isinstance(outcome, AttemptFailed):
                    return outcome
                if not outcome.retryable or tries[d.name] > self._max_retries(d):
                    active.remove(d)
                else:
                    not_before[d.name] = loop.time() + self._backoff(n, outcome.retry_after_s)
                if loop.time() >= walk.deadline:
                    raise UpstreamTimeout(
                        f"No provider answered within the request deadline of {budget:g}s "
                        f"({walk.attempts} attempts).", code="deadline_exceeded",
                    )
        return None

    async def _attempt(self, walk: _Walk, d: Deployment, permit: Permit,
                       admission: Admission | None,
                       ) -> RoutedCompletion | RoutedStream | AttemptFailed:
        """One upstream attempt; its outcome reported to the breaker, stats and observer."""
        limiter = self.limiter
        request = walk.request
        api = request.dialect.name
        walk.attempts += 1
        walk.tried.add(d.name)
        count = d.name not in walk.counted
        trace_headers = _NO_HEADERS
        if self.observer is not None:
            trace_headers = self.observer.attempt_start(d.provider.name, d.model, api,
                                                        d.label, walk.attempts)
        call = Call(request, d.model, walk.deadline, d.options, trace_headers)
        headers = limiter.headers(admission) if limiter and admission else {}
        fallback = d not in walk.primary.deployments
        reported = False
        handed_over = False
        d.stats.in_flight += 1
        started = self.clock()
        try:
            result: RoutedCompletion | RoutedStream
            try:
                if walk.stream:
                    s = await d.provider.stream(call)
                    result = RoutedStream(
                        d.provider.name, d.model, walk.attempts, fallback,
                        {**headers, **s.headers}, admission, d.name,
                        stream=SettlingStream(s, self._settler(d, admission),
                                              self._done(d)),
                    )
                    handed_over = True
                else:
                    c = await d.provider.complete(call)
                    result = RoutedCompletion(
                        d.provider.name, d.model, walk.attempts, fallback,
                        {**headers, **c.headers}, admission, d.name, completion=c,
                    )
            except AttemptFailed as failure:
                walk.last = failure
                reported = True
                self._failed(d, permit, failure, count, walk.attempts,
                             self.clock() - started, api)
                if failure.failover:
                    walk.counted.add(d.name)
                    return failure
                raise failure.error from None
            took = self.clock() - started
            reported = True
            d.stats.observe_latency(took, self.clock())
            self._succeeded(d, permit, count, walk.attempts, took,
                            None if walk.stream else result, api)
            if isinstance(result, RoutedCompletion) and limiter and admission:
                limiter.settle_later(admission, usage=result.completion.usage)
            admission = None  # handed over to the result (streams settle at the end)
            return result
        except BaseException as exc:
            if not reported:
                d.breaker.release(permit)
                if isinstance(exc, asyncio.CancelledError) and self.observer is not None:
                    # The client went away: says nothing of the deployment's health, but
                    # the attempt is counted with its own outcome.
                    self.observer.attempt(d.provider.name, d.model, "cancelled",
                                          self.clock() - started, api, d.label)
            raise
        finally:
            if not handed_over:
                d.stats.in_flight -= 1
            if limiter is not None and admission is not None:
                # The deployment failed: keep the request counted, give the tokens back.
                limiter.settle_later(admission, 0)

    # --- raw attempts (the OpenAI pass-through) ------------------------------------------
    # The pass-through relays bytes instead of a Call, so it walks the deployments itself;
    # these keep its attempts in the same breakers, stats and metrics as the router's own.

    def raw_admit(self, d: Deployment) -> Permit | None:
        """A breaker permit for one raw attempt at ``d`` (None: its circuit is open)."""
        return d.breaker.admit()

    def raw_failed(self, d: Deployment, permit: Permit, failure: AttemptFailed, took: float,
                   *, count: bool, api: str) -> None:
        self._failed(d, permit, failure, count, 1, took, api)

    def raw_succeeded(self, d: Deployment, permit: Permit, took: float, *, count: bool,
                      api: str) -> None:
        d.stats.observe_latency(took, self.clock())
        self._succeeded(d, permit, count, 1, took, None, api)

    def max_retries(self, d: Deployment) -> int:
        """How many times one request may retry ``d`` after its first attempt."""
        return self._max_retries(d)

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Seconds before retry number ``retry`` (0-based): the upstream's Retry-After, else
        exponential with full jitter."""
        return self._backoff(retry, retry_after)

    def _max_retries(self, d: Deployment) -> int:
        n = d.provider.config.max_retries
        return self.config.max_retries if n is None else n

    def _denied(self, model: str, denials: list[Denied],
                ) -> InvalidRequest | RateLimited | ServiceUnavailable:
        waits = [d for d in denials if not d.too_large and not d.store_unavailable]
        if not waits:
            first = denials[0]
            if first.store_unavailable:
                return ServiceUnavailable(first.message, code="ratelimit_store_unavailable",
                                          headers={"retry-after": "1"})
            return InvalidRequest(first.message, param="max_tokens",
                                  code="request_too_large_for_limit")
        soonest = min(waits, key=lambda d: d.retry_after_s)
        headers = dict(waits[0].headers)
        headers["retry-after"] = str(max(1, math.ceil(soonest.retry_after_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(soonest.retry_after_s * 1000)))
        return RateLimited(soonest.message if len(waits) == 1 else
                           f"Every deployment of model '{model}' is at its rate limit. "
                           + soonest.message, headers=headers)

    def _report_remaining(self, admission: Admission) -> None:
        if self.observer is None:
            return
        for limit, left in zip(admission.limits, admission.remaining, strict=False):
            if limit.key.startswith("provider:"):
                self.observer.remaining(admission.provider, limit.name, left)

    def _note_budget(self, d: Deployment, admission: Admission) -> None:
        """What the limiter said is left of this deployment's own and its provider's
        budgets (the alias's budget is the same whichever deployment serves)."""
        if admission.degraded or not admission.remaining:
            return
        d.stats.observe_budget(self.clock(), [
            (left, limit.amount, limit.window_s)
            for limit, left in zip(admission.limits, admission.remaining, strict=False)
            if not limit.key.startswith("model:")])

    def _done(self, d: Deployment) -> Callable[[], None]:
        def done() -> None:
            d.stats.in_flight -= 1
        return done

    def _settler(self, d: Deployment, admission: Admission | None,
                 ) -> Callable[[Usage | None], Awaitable[None]]:
        async def settle(usage: Usage | None) -> None:
            """Settle a finished (or abandoned) stream's budget to the usage it reported."""
            if self.observer is not None and usage is not None:
                self.observer.tokens(d.provider.name, d.model, usage)
            if self.limiter is not None and admission is not None:
                self.limiter.settle_later(admission, usage=usage)
        return settle

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = self.config.backoff_base_s * (2 ** retry)
        # Full jitter (AWS architecture blog): spreads retries of many clients apart.
        return float(min(self.config.backoff_max_s, random.uniform(0, base) + base / 2))

    # --- outcomes --------------------------------------------------------------------

    def _failed(self, d: Deployment, permit: Permit, failure: AttemptFailed, count: bool,
                attempt: int, took: float, api: str) -> None:
        log.warning("upstream_attempt", provider=d.provider.name, model=d.model,
                    deployment=d.name, attempt=attempt, outcome=failure.reason,
                    status=failure.upstream_status, ms=round(took * 1000, 1))
        opened = False
        if failure.upstream_status in PROVIDER_FAULT_STATUSES:
            opened = d.breaker.trip(failure.reason)
        elif failure.failover:
            opened = d.breaker.failure(failure.reason, permit, count=count)
        else:
            # The request itself was refused (400, 404, 413, 422, ...): says nothing of
            # the deployment's health.
            d.breaker.release(permit)
        if self.observer is not None:
            self.observer.attempt(d.provider.name, d.model, failure.reason, took, api, d.label)
        if opened:
            log.warning("circuit_opened", deployment=d.name, reason=failure.reason)
            if self.observer is not None:
                self.observer.circuit(d.provider.name, d.model, d.label, True)
            self._circuit_changed(d)

    def _succeeded(self, d: Deployment, permit: Permit, count: bool, attempt: int,
                   took: float, result: RoutedCompletion | RoutedStream | None,
                   api: str) -> None:
        closed = d.breaker.success(permit, count=count)
        log.debug("upstream_attempt", provider=d.provider.name, model=d.model,
                  deployment=d.name, attempt=attempt, outcome="ok", ms=round(took * 1000, 1))
        if self.observer is not None:
            self.observer.attempt(d.provider.name, d.model, "ok", took, api, d.label)
            if closed:
                self.observer.circuit(d.provider.name, d.model, d.label, False)
            if isinstance(result, RoutedCompletion) and result.completion.usage is not None:
                self.observer.tokens(d.provider.name, d.model, result.completion.usage)
        if closed:
            log.info("circuit_closed", deployment=d.name)
            self._circuit_changed(d)

    def _circuit_changed(self, d: Deployment) -> None:
        """Tell whether the aliases that reach this deployment now run on open circuits."""
        for alias in self._aliases_of.get(d.name, ()):
            shut = self._all_open(alias)
            if shut == (alias in self._open_aliases):
                continue
            if shut:
                self._open_aliases.add(alias)
                log.error("alias_on_open_circuit", model=alias)
            else:
                self._open_aliases.discard(alias)
                log.info("alias_circuit_closed", model=alias)
            if self.observer is not None:
                self.observer.open_circuit(alias, shut)


def _caller_denied(denied: Denied) -> GatewayError:
    """A caller's own limit refused the request: 429 saying which one and when it resets
    (a budget), or 400 when the request could never fit its tokens per minute."""
    if denied.too_large:
        return InvalidRequest(denied.message, param="max_tokens",
                              code="request_too_large_for_limit")
    headers = dict(denied.headers)
    if math.isfinite(denied.retry_after_s):
        headers["retry-after"] = str(max(1, math.ceil(denied.retry_after_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(denied.retry_after_s * 1000)))
    if denied.limit in ("budget_tokens", "budget_cost"):
        if denied.resets_at:
            headers["x-gateway-budget-reset"] = iso_utc(denied.resets_at)
        return RateLimited(denied.message, code="budget_exceeded", headers=headers)
    return RateLimited(denied.message, headers=headers)
