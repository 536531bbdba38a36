"""The rate limiter the router calls: per-provider and per-model-alias limits from the config,
charged together before a call and settled with the real usage after it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
import structlog

from gateway_core.config.llm import ModelConfig, ProviderConfig, RateLimitConfig
from gateway_core.errors import GatewayError, RateLimited, ServiceUnavailable
from gateway_core.openai_types import ChatCompletionRequest
from gateway_llm.limits.estimate import completion_budget, estimate_prompt_tokens
from gateway_llm.limits.gcra import (
    EstimateTooLarge,
    Limit,
    LimitName,
    LimitState,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    Rejection,
    Reservation,
    standard_limits,
)

log = structlog.get_logger("gateway_llm.limits")

DenyReason = Literal["requests", "tokens", "tokens_day", "estimate_too_large", "store_unavailable"]


class Admission(msgspec.Struct, frozen=True):
    """Charged: settle it with the real usage, or release it if nothing was sent upstream.
    ``degraded`` means the store was unreachable and fail_open let the request through
    uncounted."""

    provider: str
    reservations: tuple[Reservation, ...]
    tokens: int
    degraded: bool = False

    @property
    def provider_states(self) -> tuple[LimitState, ...]:
        for r in self.reservations:
            if r.scope == provider_scope(self.provider):
                return r.states
        return ()


class Denied(msgspec.Struct, frozen=True):
    """Not admitted; nothing is left charged."""

    reason: DenyReason
    scope: str
    message: str
    # None when waiting does not help (estimate too large) or is unknown (store down).
    retry_after_s: float | None = None
    states: tuple[LimitState, ...] = ()

    def to_error(self) -> GatewayError:
        """The client-facing error: 429 with Retry-After and x-ratelimit-* headers, or 503."""
        if self.reason == "store_unavailable":
            return ServiceUnavailable(self.message, code="rate_limit_store_unavailable")
        headers = ratelimit_headers(self.states)
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000)))
        code = "request_too_large" if self.reason == "estimate_too_large" else None
        return RateLimited(self.message, code=code, headers=headers)


def provider_scope(provider: str) -> str:
    return f"provider:{provider}"


def model_scope(alias: str) -> str:
    return f"model:{alias}"


def format_reset(seconds: float) -> str:
    """OpenAI's duration style for x-ratelimit-reset-*: ``1s``, ``6m0s``, ``1h2m3s``, ``120ms``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def ratelimit_headers(states: Sequence[LimitState]) -> dict[str, str]:
    """OpenAI-style ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers (the
    per-day token limit has no OpenAI header and is left out)."""
    out: dict[str, str] = {}
    for s in states:
        if s.name == "tokens_day":
            continue
        out[f"x-ratelimit-limit-{s.name}"] = str(s.limit)
        out[f"x-ratelimit-remaining-{s.name}"] = str(s.remaining)
        out[f"x-ratelimit-reset-{s.name}"] = format_reset(s.reset_s)
    return out


def _deny_message(rej: Rejection) -> str:
    what = {"requests": "requests per minute", "tokens": "tokens per minute",
            "tokens_day": "tokens per day"}[rej.limit]
    return (f"Rate limit reached for {rej.scope} on {what}. "
            f"Please try again in {rej.retry_after_s:.3g}s.")


class RateLimiter:
    """Checks and charges provider and model-alias limits together in one ``LimitStore``."""

    def __init__(
        self,
        store: LimitStore,
        *,
        provider_limits: Mapping[str, tuple[Limit, ...]],
        model_limits: Mapping[str, tuple[Limit, ...]] | None = None,
        fail_open: bool = True,
        default_completion_tokens: int = 1024,
    ) -> None:
        self.store = store
        self.provider_limits = dict(provider_limits)
        self.model_limits = dict(model_limits or {})
        self.fail_open = fail_open
        self.default_completion_tokens = default_completion_tokens

    @classmethod
    def from_config(
        cls,
        rate_limit: RateLimitConfig,
        providers: Mapping[str, ProviderConfig],
        models: Mapping[str, ModelConfig],
        *,
        store: LimitStore | None = None,
    ) -> RateLimiter:
        """Each provider's own rpm/tpm/tpd, else the ``[rate_limit]`` defaults when enabled;
        each alias's own rpm/tpm/tpd. ``store`` overrides the configured backend."""
        plimits: dict[str, tuple[Limit, ...]] = {}
        for name, p in providers.items():
            if p.rpm is None and p.tpm is None and p.tpd is None and rate_limit.enabled:
                plimits[name] = standard_limits(rate_limit.requests_per_minute,
                                                rate_limit.tokens_per_minute,
                                                rate_limit.tokens_per_day)
            else:
                plimits[name] = standard_limits(p.rpm, p.tpm, p.tpd)
        mlimits = {alias: standard_limits(m.rpm, m.tpm, m.tpd) for alias, m in models.items()}
        if store is None:
            if rate_limit.backend == "redis":
                from gateway_llm.limits.redis_store import RedisLimitStore

                store = RedisLimitStore(rate_limit.redis_url, timeout_s=rate_limit.redis_timeout_s)
            else:
                store = MemoryLimitStore()
        return cls(store, provider_limits=plimits, model_limits=mlimits,
                   fail_open=rate_limit.fail_open,
                   default_completion_tokens=rate_limit.default_completion_tokens)

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    @property
    def healthy(self) -> bool:
        return self.store.healthy

    def estimate_tokens(self, request: ChatCompletionRequest) -> int:
        """Prompt estimate plus the output tokens the request may produce."""
        return estimate_prompt_tokens(request) + completion_budget(
            request, self.default_completion_tokens)

    def _scopes(self, provider: str, model_alias: str | None) -> list[tuple[str, tuple[Limit, ...]]]:
        scopes = []
        plim = self.provider_limits.get(provider, ())
        if plim:
            scopes.append((provider_scope(provider), plim))
        if model_alias is not None:
            mlim = self.model_limits.get(model_alias, ())
            if mlim:
                scopes.append((model_scope(model_alias), mlim))
        return scopes

    async def acquire(
        self, provider: str, model_alias: str | None, tokens_estimate: int,
    ) -> Admission | Denied:
        """Charge one request and ``tokens_estimate`` tokens to the provider and the alias, or
        to neither."""
        held: list[Reservation] = []
        try:
            for scope, limits in self._scopes(provider, model_alias):
                out = await self.store.reserve(scope, limits, tokens_estimate)
                if isinstance(out, Reservation):
                    held.append(out)
                    continue
                await self._release_all(held)
                if isinstance(out, EstimateTooLarge):
                    return Denied(
                        "estimate_too_large", scope,
                        f"Request too large for {scope}: about {out.tokens} tokens against a "
                        f"limit of {out.capacity} ({out.limit}). Send a shorter prompt or a "
                        "lower max_tokens.")
                return Denied(out.limit, scope, _deny_message(out), out.retry_after_s, out.states)
        except LimitStoreUnavailable as exc:
            await self._release_all(held)
            log.warning("ratelimit_store_unavailable", provider=provider, error=str(exc),
                        fail_open=self.fail_open)
            if self.fail_open:
                return Admission(provider, (), tokens_estimate, degraded=True)
            return Denied("store_unavailable", provider_scope(provider),
                          "The rate limit store is unavailable; try again shortly.")
        return Admission(provider, tuple(held), tokens_estimate)

    async def _release_all(self, held: Sequence[Reservation]) -> None:
        for r in held:
            try:
                await self.store.release(r)
            except LimitStoreUnavailable as exc:
                log.warning("ratelimit_release_failed", scope=r.scope, error=str(exc))

    async def settle(self, admission: Admission, actual_tokens: int) -> None:
        """Correct the charge to the real usage. A store failure is logged, not raised: the
        response has already been served."""
        for r in admission.reservations:
            try:
                await self.store.settle(r, actual_tokens)
            except LimitStoreUnavailable as exc:
                log.warning("ratelimit_settle_failed", scope=r.scope, error=str(exc))

    async def release(self, admission: Admission) -> None:
        """Refund everything: the request never reached the upstream."""
        await self._release_all(admission.reservations)

    async def snapshot(self, provider: str) -> tuple[LimitState, ...]:
        """The provider's limits now (for headers and the remaining gauge); raises
        ``LimitStoreUnavailable``."""
        limits = self.provider_limits.get(provider, ())
        if not limits:
            return ()
        return await self.store.snapshot(provider_scope(provider), limits)


