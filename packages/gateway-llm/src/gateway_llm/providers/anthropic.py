"""Anthropic-kind providers: the Messages API natively (byte-faithful, the client's
``anthropic-beta`` header forwarded), every other front door translated to Messages."""

from __future__ import annotations

import asyncio
import math

from gateway_core.config import ProviderConfig
from gateway_llm.dialects.messages import MESSAGES
from gateway_llm.errors import AttemptFailed
from gateway_llm.hub import DialectName, LLMRequest
from gateway_llm.providers.base import Call, HTTPProvider

__all__ = ["AnthropicProvider"]

# Client headers a native Messages passthrough forwards (Claude Code's betas and the like).
FORWARDED_HEADERS = ("anthropic-beta",)


class AnthropicProvider(HTTPProvider):
    kind = "anthropic"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.native = frozenset({"messages"})
        self.upstream = MESSAGES
        base = self.base_url
        # The SDK's base URL has no /v1; accept either form in config.
        root = base if base.endswith("/v1") else f"{base}/v1"
        self.urls = {"messages": f"{root}/messages"}
        self.count_tokens_url = f"{root}/messages/count_tokens"
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            # As the newest official SDK (anthropic 2.14+) sends them: the key as a bearer
            # token, and its API version.
            "anthropic-version": config.anthropic_version,
        }
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        headers.update(config.headers)
        self.headers = headers

    async def count_tokens(self, raw: dict[str, object], *, model: str,
                           headers: dict[str, str], timeout_s: float | None) -> bytes:
        """POST /v1/messages/count_tokens upstream with only the model replaced."""
        loop = asyncio.get_running_loop()
        budget = min(self.config.first_byte_timeout_s, timeout_s or math.inf)
        call = Call(LLMRequest(MESSAGES, model, None, raw, headers=headers), model,
                    loop.time() + budget)
        body = MESSAGES.native_body(raw, model=model, stream=False)
        try:
            return await self.send(MESSAGES, self.count_tokens_url, body,
                                   {**self.headers, **headers}, call)
        except AttemptFailed as failed:
            raise failed.error from None

    def request_headers(self, call: Call, dialect: DialectName, stream: bool) -> dict[str, str]:
        headers = super().request_headers(call, dialect, stream)
        if call.request.dialect.name == "messages":
            extra = {k: v for k in FORWARDED_HEADERS
                     if (v := call.request.headers.get(k)) is not None}
            if extra:
                headers = {**headers, **extra}
        return headers
