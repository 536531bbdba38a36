"""Provider kinds: one module each, and one table that names them."""

from __future__ import annotations

from gateway_core.config import ProviderConfig, ProviderKind
from gateway_llm.providers.anthropic import AnthropicProvider
from gateway_llm.providers.base import Call, Completion, HTTPProvider, Provider, Stream
from gateway_llm.providers.openai import OpenAIProvider

__all__ = [
    "PROVIDER_KINDS",
    "AnthropicProvider",
    "Call",
    "Completion",
    "HTTPProvider",
    "OpenAIProvider",
    "Provider",
    "Stream",
    "make_provider",
]

PROVIDER_KINDS: dict[ProviderKind, type[HTTPProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}


def make_provider(name: str, config: ProviderConfig) -> HTTPProvider:
    assert config.kind is not None  # filled in by config validation
    return PROVIDER_KINDS[config.kind](name, config)
