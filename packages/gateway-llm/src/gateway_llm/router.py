"""The router: resolves a model alias to its ordered deployments (primary, then fallbacks)
and walks them — retrying retryable failures with backoff, skipping deployments in cooldown,
failing over — until one answers or the request's deadline runs out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway_core.config import LLMConfig, RateLimitConfig
from gateway_core.errors import (
    GatewayError,
    NotFound,
    ServiceUnavailable,
    UpstreamTimeout,
)
from gateway_core.openai_types import ChatCompletionRequest, Usage
from gateway_llm.circuit import CircuitBreaker
from gateway_llm.errors import AttemptFailed
from gateway_llm.providers.base import Call, Completion, Provider, Stream
from gateway_llm.providers.openai import OpenAIProvider

log = structlog.get_logger("gateway.llm")


class RouterObserver(Protocol):
    """Where the router reports what it did (the server turns these into metrics)."""

    def attempt(self, provider: str, model: str, outcome: str, seconds: float) -> None: ...

    def failover(self, from_: str, to: str, reason: str) -> None: ...

    def tokens(self, provider: str, model: str, usage: Usage) -> None: ...

    def circuit(self, provider: str, model: str, is_open: bool) -> None: ...


@dataclass(slots=True)
class Deployment:
    alias: str
    provider: Provider
    model: str
    breaker: CircuitBreaker

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


@dataclass(slots=True)
class RoutedCompletion(Routed):
    completion: Completion = field(default=None)  # type: ignore[assignment]


@dataclass(slots=True)
class RoutedStream(Routed):
    stream: Stream = field(default=None)  # type: ignore[assignment]


class Router:
    def __init__(
        self,
        config: LLMConfig,
        providers: dict[str, Provider],
        *,
        observer: RouterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.providers = providers
        self.observer = observer
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
        providers: dict[str, Provider] = {}
        for name, pc in llm.providers.items():
            if not pc.enabled:
                continue
            if pc.kind == "anthropic":
                from gateway_llm.providers.anthropic import AnthropicProvider

                providers[name] = AnthropicProvider(
                    name, pc, default_max_tokens=llm.default_max_tokens
                )
            else:
                providers[name] = OpenAIProvider(name, pc)
        return cls(llm, providers, observer=observer)

    async def start(self) -> None:
        for p in self.providers.values():
            await p.start()

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()

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
        return Deployment(alias, p, model, breaker)

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
                "deployments": deployments}

    # --- the request -----------------------------------------------------------------

    async def complete(
        self, request: ChatCompletionRequest, raw: dict[str, object], *,
        timeout_s: float | None = None,
    ) -> RoutedCompletion:
        routed = await self._route(request, raw, stream=False, include_usage=False,
                                   timeout_s=timeout_s)
        assert isinstance(routed, RoutedCompletion)
        return routed

    async def stream(
        self, request: ChatCompletionRequest, raw: dict[str, object], *,
        include_usage: bool, timeout_s: float | None = None,
    ) -> RoutedStream:
        routed = await self._route(request, raw, stream=True, include_usage=include_usage,
                                   timeout_s=timeout_s)
        assert isinstance(routed, RoutedStream)
        return routed

    async def _route(
        self, request: ChatCompletionRequest, raw: dict[str, object], *, stream: bool,
        include_usage: bool, timeout_s: float | None,
    ) -> RoutedCompletion | RoutedStream:
        chain = self.chain(request.model)
        loop = asyncio.get_running_loop()
        budget = self.config.request_timeout_s
        if timeout_s is not None:
            budget = min(budget, timeout_s)
        deadline = loop.time() + budget
        attempts = 0
        last: AttemptFailed | None = None
        skipped: list[str] = []
        previous: Deployment | None = None
        for d in chain:
            if not d.breaker.try_acquire():
                skipped.append(f"{d.key} cooling down")
                continue
            if previous is not None and self.observer is not None:
                self.observer.failover(previous.key, d.key, last.reason if last else "skipped")
            previous = d
            max_retries = d.provider.config.max_retries
            if max_retries is None:
                max_retries = self.config.max_retries
            call = Call(request, raw, d.model, deadline, include_usage)
            for retry in range(max_retries + 1):
                attempts += 1
                started = loop.time()
                try:
                    if stream:
                        s = await d.provider.stream(call)
                        result: RoutedCompletion | RoutedStream = RoutedStream(
                            d.provider.name, d.model, attempts, d is not chain[0], stream=s
                        )
                    else:
                        c = await d.provider.complete(call)
                        result = RoutedCompletion(
                            d.provider.name, d.model, attempts, d is not chain[0], completion=c
                        )
                except AttemptFailed as failure:
                    last = failure
                    self._failed(d, failure, attempts, loop.time() - started)
                    if not failure.failover:
                        raise failure.error from None
                    if not failure.retryable or retry == max_retries:
                        break
                    wait = self._backoff(retry, failure.retry_after_s)
                    if loop.time() + wait >= deadline:
                        break
                    await self._sleep(wait)
                    continue
                except BaseException:
                    d.breaker.release_probe()
                    raise
                self._succeeded(d, attempts, loop.time() - started,
                                None if stream else result)
                return result
            if loop.time() >= deadline:
                raise UpstreamTimeout(
                    f"No provider answered within the request deadline of {budget:g}s "
                    f"({attempts} attempts).", code="deadline_exceeded",
                )
        if last is not None:
            raise last.error
        raise ServiceUnavailable(
            f"No deployment of model '{request.model}' can take the request now: "
            + "; ".join(skipped) + ".", code="no_deployment_available",
        )

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = self.config.backoff_base_s * (2 ** retry)
        # Full jitter (AWS architecture blog): spreads retries of many clients apart.
        return float(min(self.config.backoff_max_s, random.uniform(0, base) + base / 2))

    def _failed(self, d: Deployment, failure: AttemptFailed, attempt: int, took: float) -> None:
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
            self.observer.attempt(d.provider.name, d.model, failure.reason, took)
            if opened:
                self.observer.circuit(d.provider.name, d.model, True)

    def _succeeded(self, d: Deployment, attempt: int, took: float,
                   result: RoutedCompletion | RoutedStream | None) -> None:
        was_open = d.breaker.state != "closed"
        d.breaker.record_success()
        log.debug("upstream_attempt", provider=d.provider.name, model=d.model, attempt=attempt,
                 outcome="ok", ms=round(took * 1000, 1))
        if self.observer is not None:
            self.observer.attempt(d.provider.name, d.model, "ok", took)
            if was_open:
                self.observer.circuit(d.provider.name, d.model, False)
            if isinstance(result, RoutedCompletion) and result.completion.usage is not None:
                self.observer.tokens(d.provider.name, d.model, result.completion.usage)
