"""Configuration of LLM providers, model aliases, routing and rate limits."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "CooldownConfig",
    "LLMConfig",
    "ModelConfig",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "ResponsesConfig",
]

ProviderKind = Literal["openai", "anthropic"]


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # kind and base_url default by provider name (openai, groq, anthropic); any other name
    # must set both. Config validation fills them in.
    kind: ProviderKind | None = None
    base_url: str | None = None
    api_key: str = ""
    enabled: bool = True
    # Upstream model used when this provider is named bare as a fallback.
    default_model: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    connect_timeout_s: float = 10.0
    # Until the response headers (or, for streams, the first event) arrive.
    first_byte_timeout_s: float = 120.0
    total_timeout_s: float = 600.0
    max_connections: int = 256
    max_retries: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    # Anthropic only: the anthropic-version header (what the newest official SDK sends).
    anthropic_version: str = "2026-10-21"
    # OpenAI kind: serve /v1/responses natively (passthrough) or translate it to Chat
    # Completions. Defaults to native for the provider named "openai", translate otherwise.
    responses: Literal["native", "translate"] | None = None

    def __repr__(self) -> str:
        # Keys never reach logs, not even through a repr of the config.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "api_key"}
        key = "'***'" if self.api_key else "''"
        return f"ProviderConfig(api_key={key}, " + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    provider: str
    # Upstream model name; defaults to the alias.
    model: str | None = None
    # Other aliases, "provider/upstream-model", or a bare provider name (its default_model).
    fallbacks: list[str] = msgspec.field(default_factory=list)
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    # Hosted tools (web_search, file_search, ...) sent to a provider that cannot run them:
    # left out (said in the x-gateway-dropped-tools header) or refused with a 400.
    hosted_tools: Literal["drop", "reject"] = "drop"
    # Anthropic: how reasoning effort becomes extended thinking. "adaptive" for Claude
    # models that refuse budgets; None picks by model name.
    thinking: Literal["adaptive", "budget", "off"] | None = None
    # Request parameters this model refuses (e.g. ["top_p"]), removed before sending and
    # named in the x-gateway-dropped-params header.
    drop_params: list[str] = msgspec.field(default_factory=list)
    # The largest max_output_tokens / max_tokens a client may ask for on this alias.
    max_output_tokens: int | None = None


class ResponsesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Stored responses (previous_response_id, GET /v1/responses/{id})."""

    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 0.5
    # Memory store bounds; both stores expire entries after max_age_s.
    max_items: int = 10000
    max_age_s: float = 86400.0

    def __repr__(self) -> str:
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "redis_url"}
        return "ResponsesConfig(redis_url='***', " + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"


class CooldownConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0


class LLMConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    max_retries: int = 2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    # Overall deadline per request covering every retry and fallback; a client may lower it
    # with the x-gateway-timeout header (seconds).
    request_timeout_s: float = 600.0
    # Anthropic requires max_tokens; used when the client sends none.
    default_max_tokens: int = 4096
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # Defaults for providers that set no rpm/tpm/tpd of their own.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 0.25
    # When the limit store is unreachable: admit (true) or refuse with 503 (false).
    fail_open: bool = True
    # Output tokens reserved when a request sets no max_tokens.
    default_completion_tokens: int = 1024

    def __repr__(self) -> str:
        # redis_url may carry a password.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "redis_url"}
        return "RateLimitConfig(redis_url='***', " + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"
