"""OpenAI-kind providers (OpenAI, Groq, vLLM, Ollama, any OpenAI-compatible server): Chat
Completions natively, the Responses API natively where the provider serves it
(``responses = "native"``), and every other front door translated to Chat Completions."""

from __future__ import annotations

from gateway_core.config import ProviderConfig
from gateway_llm.dialects.chat import CHAT
from gateway_llm.hub import DialectName
from gateway_llm.providers.base import HTTPProvider

__all__ = ["OpenAIProvider"]


class OpenAIProvider(HTTPProvider):
    kind = "openai"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        native: set[DialectName] = {"chat", "completions", "embeddings"}
        if config.responses == "native":
            native.add("responses")
        self.native = frozenset(native)
        self.upstream = CHAT
        self.urls = {"chat": f"{self.base_url}/chat/completions",
                     "responses": f"{self.base_url}/responses",
                     "completions": f"{self.base_url}/completions",
                     "embeddings": f"{self.base_url}/embeddings"}
        headers = {"content-type": "application/json", "accept": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        headers.update(config.headers)
        self.headers = headers
