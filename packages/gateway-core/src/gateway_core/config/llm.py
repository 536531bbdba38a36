"""Configuration of LLM providers, model aliases, routing and rate limits."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "CooldownConfig",
    "DeploymentConfig",
    "LLMConfig",
    "ModelConfig",
    "PassthroughConfig",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "ResponsesConfig",
    "Routing",
]

ProviderKind = Literal["openai", "anthropic"]
# How an alias with several deployments picks one: weighted random, fewest requests in
# flight, lowest recent latency, or most rate-limit budget left.
Routing = Literal["weighted", "least-busy", "lowest-latency", "usage"]

_Budget = Annotated[int, msgspec.Meta(ge=1)]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Price = Annotated[float, msgspec.Meta(ge=0)]


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
    # OpenAI kind: let clients choose whose bill a call goes on (their OpenAI-Organization
    # and OpenAI-Project headers forwarded, over any set in ``headers``). Off: dropped.
    client_organization: bool = False

    def __repr__(self) -> str:
        # Keys never reach logs, not even through a repr of the config.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "api_key"}
        key = "'***'" if self.api_key else "''"
        return f"ProviderConfig(api_key={key}, " + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"


class DeploymentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One upstream serving an alias: a provider and its model, with its share of the
    traffic and, optionally, its own budgets, connection pool, timeouts and headers (any of
    the last three gives the deployment its own HTTP session, a copy of the provider's)."""

    provider: str
    # Upstream model name; defaults to the alias.
    model: str | None = None
    # Names the deployment in headers, metrics, health and its circuit; defaults to
    # "provider/model". The same name in two aliases is the same deployment.
    name: str | None = None
    # Share of the traffic under routing = "weighted" (relative); 0 keeps it as a standby
    # that only gets requests the others cannot take (in every strategy).
    weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    rpm: _Budget | None = None
    tpm: _Budget | None = None
    tpd: _Budget | None = None
    max_connections: _Budget | None = None
    connect_timeout_s: _Seconds | None = None
    first_byte_timeout_s: _Seconds | None = None
    total_timeout_s: _Seconds | None = None
    # Merged over the provider's headers.
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def own_session(self) -> bool:
        """Whether the deployment needs an HTTP session of its own (its own pool, timeouts
        or headers) instead of sharing its provider's."""
        return bool(self.headers) or any(
            getattr(self, f) is not None for f in _SESSION_FIELDS)


_SESSION_FIELDS = ("max_connections", "connect_timeout_s", "first_byte_timeout_s",
                   "total_timeout_s")


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # One deployment: a provider and its model (the shorthand for a one-item deployments).
    provider: str | None = None
    # Upstream model name; defaults to the alias.
    model: str | None = None
    # Several deployments behind the alias (instead of provider/model), and how to pick.
    deployments: list[DeploymentConfig] = msgspec.field(default_factory=list)
    routing: Routing = "weighted"
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
    # USD per million tokens, for spend and virtual keys' budgets; left out, the shipped
    # table of well-known upstream models (gateway_llm.prices) is used, else 0.
    input_cost_per_mtok: _Price | None = None
    output_cost_per_mtok: _Price | None = None
    cached_input_cost_per_mtok: _Price | None = None

    def resolved_deployments(self, alias: str) -> list[DeploymentConfig]:
        """The alias's deployments with model and name filled in (the shorthand as one)."""
        listed = self.deployments
        if not listed:
            if self.provider is None:
                return []
            listed = [DeploymentConfig(provider=self.provider, model=self.model)]
        out = []
        for d in listed:
            model = d.model or alias
            out.append(msgspec.structs.replace(d, model=model,
                                               name=d.name or f"{d.provider}/{model}"))
        return out


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


class PassthroughConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[llm.passthrough]: the OpenAI routes the gateway does not implement itself (files,
    batches, images, audio, vector stores, ...), passed through to an OpenAI-kind provider.
    Prefixes are relative to /v1 ("/files", "/vector_stores"); a path is served when it is
    under an ``allow`` prefix (an empty list allows all) and under no ``deny`` prefix."""

    enabled: bool = True
    # Where routes without a model go (files, batches, ...): an OpenAI-kind provider. Left
    # out: the one named "openai", else the first OpenAI-kind one.
    provider: str | None = None
    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    # The Admin API (/v1/organization/*) is passed through only when ``admin = true`` and
    # ``admin_key`` holds an admin key (never the provider's own key). Every gateway key
    # can then reach it: keep it off unless the gateway's keys are the admins'.
    admin: bool = False
    admin_key: str = ""

    def __repr__(self) -> str:
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "admin_key"}
        key = "'***'" if self.admin_key else "''"
        return f"PassthroughConfig(admin_key={key}, " + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"


class CooldownConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The circuit breaker of each deployment. It opens when, within window_s, at least
    min_requests client requests reached the deployment and failure_rate of them failed
    (and at least ``failures``); auth failures (401/403) open it at once; requests the
    upstream refused as invalid (400, 404, 413, 422) never count, and a request retried
    several times counts once. After cooldown_s, ``probes`` requests are let through."""

    window_s: _Seconds = 60.0
    min_requests: _Budget = 5
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # The fewest failed requests in the window that can open it.
    failures: _Budget = 3
    cooldown_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    probes: _Budget = 1


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
    # Refuse "provider/model" addressing: only configured aliases (so virtual keys' model
    # allow-lists cannot be gone around).
    aliases_only: bool = False
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    passthrough: PassthroughConfig = msgspec.field(default_factory=PassthroughConfig)


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
