"""LLM providers, OpenAI<->Anthropic translation and the router with failover and limits."""

from gateway_llm.__about__ import __version__
from gateway_llm.errors import AttemptFailed
from gateway_llm.providers.base import Call, Completion, Provider, Stream
from gateway_llm.router import (
    Deployment,
    Routed,
    RoutedCompletion,
    RoutedStream,
    Router,
    RouterObserver,
)

__all__ = [
    "__version__",
    "AttemptFailed",
    "Call",
    "Completion",
    "Deployment",
    "Provider",
    "Routed",
    "RoutedCompletion",
    "RoutedStream",
    "Router",
    "RouterObserver",
    "Stream",
]
