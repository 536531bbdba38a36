"""The router: resolves a model alias to its ordered deployments (primary, then fallbacks)
and walks them — retrying retryable failures with backoff, skipping deployments in cooldown,
failing over — until one answers or the request's deadline runs out."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from gateway_core.config import LLMConfig, RateLimitConfig
from gateway_core.errors import (
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from gateway_core.config.llm import ModelConfig
from gateway_llm.circuit import CircuitBreaker
from gateway_llm.errors import AttemptFailed
from gateway_llm.hub import EncodeOptions, LLMRequest, Usage
from gateway_llm.limiter import Admission, Denied, RateLimiter
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
    """Where the router reports what it did (the server turns these into metrics)."""

    def attempt(self, provider: str, model: str, outcome: str, seconds: float,
                api: str) -> None: ...

    def failover(self, from_: str, to: str, reason: str) -> None: ...

    def tokens(self, provider: str, model: str, usage: Usage) -> None: ...

    def circuit(self, provider: str, model: str, is_open: bool) -> None: ...

    def ratelimited(self, provider: str, limit: str) -> None: ...

    def remaining(self, provider: str, limit: str, value: int) -> None: ...


@dataclass(slots=True)
class Deployment:
    alias: str
    provider: Provider
    model: str
    breaker: CircuitBreaker
    options: EncodeOptions

    @property
    def key(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(slots=True)
class Routed:
    """Who answered and how many tries it took."""

    provider: str
    model: str
    attempts: int
    fallback: bool
    headers: dict[str, str]
    admission: Admission | None


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
    if configured == "adaptive" or configured == "budget" or configured == "off":
        return configured
    m = _CLAUDE_VERSION.search(model)
    if m is None:
        return "budget"
    version = (int(m.group(1)), int(m.group(2) or 0))
    if version[0] < 3:  # claude-3-7-sonnet and the like read as (3, 7)
        return "budget"
    return "adaptive" if version >= (4, 6) else "budget"


class SettlingStream:
    """The provider's stream; closing it (however it ended) settles the reservation to the
    usage it reported and reports the tokens, once."""

    def __init__(self, stream: Stream, settle: Callable[[Usage | None], Awaitable[None]]):
        self._stream = stream
        self._settle: Callable[[Usage | None], Awaitable[None]] | None = settle

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def headers(self) -> dict[str, str]:
        return self._stream.headers

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            settle, self._settle = self._settle, None
            if settle is not None:
                await settle(self._stream.usage)


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
    ) -> None:
        self.config = config
        self.providers = providers
        self.observer = observer
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.clock = clock
        self._sleep = sleep
        self._breakers: dict[str, CircuitBreaker] = {}
        self._chains: dict[str, list[Deployment]] = {}
        for alias in config.models:
            self._chains[alias] = self._resolve(alias)

    @classmethod
    def from_config(
        cls, llm: LLMConfig, rate_limit: RateLimitConfig | None = None, *,
        observer: RouterObserver | None = None,
    ) -> Router:
        providers: dict[str, Provider] = {
            name: make_provider(name, pc) for name, pc in llm.providers.items() if pc.enabled
        }
        limiter = None
        if rate_limit is not None:
            limiter = RateLimiter.from_config(rate_limit, llm.providers, llm.models)
        return cls(llm, providers, observer=observer, limiter=limiter)

    async def start(self) -> None:
        if self.limiter is not None:
            await self.limiter.start()
        for p in self.providers.values():
            await p.start()

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- resolution ------------------------------------------------------------------

    def _deployment(self, alias: str, provider: str, model: str) -> Deployment | None:
        p = self.providers.get(provider)
        if p is None:  # disabled
            return None
        key = f"{provider}/{model}"
        breaker = self._breakers.get(key)
        if breaker is None:
            cd = self.config.cooldown
            breaker = CircuitBreaker(failures=cd.failures, window_s=cd.window_s,
                                     cooldown_s=cd.cooldown_s, clock=self.clock)
            self._breakers[key] = breaker
        m = self.config.models.get(alias) or ModelConfig(provider=provider)
        options = EncodeOptions(
            default_max_tokens=self.config.default_max_tokens,
            thinking=thinking_mode(model, m.thinking),
            drop_params=tuple(m.drop_params),
            hosted_tools=m.hosted_tools,
        )
        return Deployment(alias, p, model, breaker, options)

    def _resolve(self, alias: str) -> list[Deployment]:
        m = self.config.models[alias]
        chain: list[Deployment] = []
        first = self._deployment(alias, m.provider, m.model or alias)
        if first is not None:
            chain.append(first)
        for fb in m.fallbacks:
            d: Deployment | None
            if fb in self.config.models:
                other = self.config.models[fb]
                d = self._deployment(fb, other.provider, other.model or fb)
            elif "/" in fb:
                provider, model = fb.split("/", 1)
                d = self._deployment(alias, provider, model)
            else:
                default = self.config.providers[fb].default_model
                d = self._deployment(alias, fb, default) if default else None
            if d is not None and all(d.key != c.key for c in chain):
                chain.append(d)
        return chain

    def models(self) -> list[tuple[str, str]]:
        """(alias, owning provider) for each alias whose primary provider is enabled."""
        out = []
        for alias, m in self.config.models.items():
            if m.provider in self.providers:
                out.append((alias, m.provider))
        return out

    def chain(self, model: str) -> list[Deployment]:
        chain = self._chains.get(model)
        if chain is not None:
            if not chain:
                raise ServiceUnavailable(
                    f"Model '{model}' has no enabled provider.", param="model",
                    code="model_unavailable",
                )
            return chain
        # "provider/upstream-model" addresses a configured provider directly.
        if "/" in model:
            provider, upstream = model.split("/", 1)
            d = self._deployment(model, provider, upstream)
            if d is not None and upstream:
                return [d]
        raise NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model", code="model_not_found",
        )

    def health(self) -> dict[str, object]:
        deployments = {}
        for key, b in self._breakers.items():
            deployments[key] = {"state": b.state, "retry_in_s": round(b.retry_in(), 3),
                                "last_error": b.last_reason}
        return {"providers": {n: {"kind": p.kind, "api_key_set": bool(p.config.api_key)}
                              for n, p in self.providers.items()},
                "deployments": deployments,
                "rate_limit": None if self.limiter is None else self.limiter.health()}

    # --- the request -----------------------------------------------------------------

    async def complete(
        self, request: LLMRequest, *, timeout_s: float | None = None,
    ) -> RoutedCompletion:
        routed = await self._route(request, stream=False, timeout_s=timeout_s)
        assert isinstance(routed, RoutedCompletion)
        return routed

    async def stream(
        self, request: LLMRequest, *, timeout_s: float | None = None,
    ) -> RoutedStream:
        """The stream settles its reservation itself when it is closed."""
        routed = await self._route(request, stream=True, timeout_s=timeout_s)
        assert isinstance(routed, RoutedStream)
        return routed

    def _check_output_limit(self, request: LLMRequest) -> None:
        m = self.config.models.get(request.model)
        wanted = request.max_output_tokens
        if m is not None and m.max_output_tokens is not None and wanted is not None \
                and wanted > m.max_output_tokens:
            field = {"chat": "max_tokens", "responses": "max_output_tokens",
                     "messages": "max_tokens"}[request.dialect.name]
            raise InvalidRequest(
                f"{field} = {wanted} is more than the {m.max_output_tokens} output tokens "
                f"allowed for model '{request.model}'.", param=field,
                code="max_tokens_too_large",
            )

    async def _route(
        self, request: LLMRequest, *, stream: bool, timeout_s: float | None,
    ) -> RoutedCompletion | RoutedStream:
        chain = self.chain(request.model)
        self._check_output_limit(request)
        loop = asyncio.get_running_loop()
        budget = self.config.request_timeout_s
        if timeout_s is not None:
            budget = min(budget, timeout_s)
        deadline = loop.time() + budget
        limiter = self.limiter
        estimate = limiter.estimate(request) if limiter is not None else 0
        attempts = 0
        last: AttemptFailed | None = None
        skipped: list[str] = []
        denials: list[Denied] = []
        previous: Deployment | None = None
        for d in chain:
            if not d.breaker.try_acquire():
                skipped.append(f"{d.key} cooling down")
                continue
            admission: Admission | None = None
            if limiter is not None:
                decision = await limiter.acquire(d.provider.name, d.alias, estimate)
                if isinstance(decision, Denied):
                    d.breaker.release_probe()
                    denials.append(decision)
                    skipped.append(f"{d.key} over its {decision.limit} limit")
                    if self.observer is not None:
                        self.observer.ratelimited(d.provider.name, decision.limit)
                    continue
                admission = decision
                self._report_remaining(admission)
            if previous is not None and self.observer is not None:
                reason = last.reason if last else "skipped"
                self.observer.failover(previous.key, d.key, reason)
            previous = d
            max_retries = d.provider.config.max_retries
            if max_retries is None:
                max_retries = self.config.max_retries
            call = Call(request, d.model, deadline, d.options)
            headers = limiter.headers(admission) if limiter and admission else {}
            try:
                for retry in range(max_retries + 1):
                    attempts += 1
                    started = loop.time()
                    try:
                        result: RoutedCompletion | RoutedStream
                        if stream:
                            s = await d.provider.stream(call)
                            result = RoutedStream(
                                d.provider.name, d.model, attempts, d is not chain[0],
                                {**headers, **s.headers}, admission,
                                stream=SettlingStream(s, self._settler(d, admission)),
                            )
                        else:
                            c = await d.provider.complete(call)
                            result = RoutedCompletion(
                                d.provider.name, d.model, attempts, d is not chain[0],
                                {**headers, **c.headers}, admission, completion=c,
                            )
                    except AttemptFailed as failure:
                        last = failure
                        self._failed(d, failure, attempts, loop.time() - started,
                                     request.dialect.name)
                        if not failure.failover:
                            raise failure.error from None
                        if not failure.retryable or retry == max_retries:
                            break
                        wait = self._backoff(retry, failure.retry_after_s)
                        if loop.time() + wait >= deadline:
                            break
                        await self._sleep(wait)
                        continue
                    self._succeeded(d, attempts, loop.time() - started,
                                    None if stream else result, request.dialect.name)
                    if isinstance(result, RoutedCompletion) and limiter and admission:
                        usage = result.completion.usage
                        await limiter.settle(admission, usage.total_tokens if usage else None)
                    admission = None  # handed over to the result (streams settle at the end)
                    return result
            except BaseException:
                d.breaker.release_probe()
                raise
            finally:
                if limiter is not None and admission is not None:
                    # The deployment failed: keep the request counted, give the tokens back.
                    await limiter.settle(admission, 0)
            if loop.time() >= deadline:
                raise UpstreamTimeout(
                    f"No provider answered within the request deadline of {budget:g}s "
                    f"({attempts} attempts).", code="deadline_exceeded",
                )
        if last is not None:
            raise last.error
        if denials:
            raise self._denied(request.model, denials)
        raise ServiceUnavailable(
            f"No deployment of model '{request.model}' can take the request now: "
            + "; ".join(skipped) + ".", code="no_deployment_available",
        )

    def _denied(self, model: str, denials: list[Denied]) -> InvalidRequest | RateLimited | ServiceUnavailable:
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
        for limit, left in zip(admission.limits, admission.remaining):
            if limit.key.startswith("provider:"):
                self.observer.remaining(admission.provider, limit.name, left)

    def _settler(self, d: Deployment, admission: Admission | None,
                 ) -> Callable[[Usage | None], Awaitable[None]]:
        async def settle(usage: Usage | None) -> None:
            """Settle a finished (or abandoned) stream's budget to the usage it reported."""
            if self.observer is not None and usage is not None:
                self.observer.tokens(d.provider.name, d.model, usage)
            if self.limiter is not None and admission is not None:
                await self.limiter.settle(admission,
                                          usage.total_tokens if usage is not None else None)
        return settle

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = self.config.backoff_base_s * (2 ** retry)
        # Full jitter (AWS architecture blog): spreads retries of many clients apart.
        return float(min(self.config.backoff_max_s, random.uniform(0, base) + base / 2))

    def _failed(self, d: Deployment, failure: AttemptFailed, attempt: int, took: float,
                api: str) -> None:
        log.warning("upstream_attempt", provider=d.provider.name, model=d.model,
                    attempt=attempt, outcome=failure.reason,
                    status=failure.upstream_status, ms=round(took * 1000, 1))
        opened = False
        if failure.upstream_status in (401, 403):
            d.breaker.trip(failure.reason)
            opened = True
        elif failure.failover:
            opened = d.breaker.record_failure(failure.reason)
        else:
            d.breaker.release_probe()
        if self.observer is not None:
            self.observer.attempt(d.provider.name, d.model, failure.reason, took, api)
            if opened:
                self.observer.circuit(d.provider.name, d.model, True)

    def _succeeded(self, d: Deployment, attempt: int, took: float,
                   result: RoutedCompletion | RoutedStream | None, api: str) -> None:
        was_open = d.breaker.state != "closed"
        d.breaker.record_success()
        log.debug("upstream_attempt", provider=d.provider.name, model=d.model, attempt=attempt,
                 outcome="ok", ms=round(took * 1000, 1))
        if self.observer is not None:
            self.observer.attempt(d.provider.name, d.model, "ok", took, api)
            if was_open:
                self.observer.circuit(d.provider.name, d.model, False)
            if isinstance(result, RoutedCompletion) and result.completion.usage is not None:
                self.observer.tokens(d.provider.name, d.model, result.completion.usage)
