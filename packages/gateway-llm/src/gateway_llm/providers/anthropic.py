"""Anthropic-kind providers: the OpenAI request is translated to the Messages API
(gateway_llm.translate.anthropic, pure) and the answer, stream events and errors back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec

from gateway_core.anthropic_types import decode_message
from gateway_core.config import ProviderConfig
from gateway_core.errors import GatewayError, UpstreamError
from gateway_core.openai_types import Usage
from gateway_llm.errors import AttemptFailed, redact
from gateway_llm.providers.base import (
    Call,
    Completion,
    HTTPProvider,
    empty_stream,
    sse_events,
    stream_start_failed,
)
from gateway_llm.translate.anthropic import (
    StreamTranslator,
    error_from_anthropic,
    to_anthropic_request,
    to_openai_response,
)

_encode = msgspec.json.Encoder().encode


class AnthropicProvider(HTTPProvider):
    kind = "anthropic"

    def __init__(self, name: str, config: ProviderConfig, *, default_max_tokens: int) -> None:
        super().__init__(name, config)
        base = self.base_url
        # The SDK's base URL has no /v1; accept either form in config.
        self.url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            # As the newest official SDK (anthropic 2.14) sends them: the key as a bearer
            # token, and its API version.
            "anthropic-version": config.anthropic_version,
        }
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        headers.update(config.headers)
        self.headers = headers
        self.default_max_tokens = default_max_tokens

    def _translate(self, call: Call, stream: bool) -> tuple[bytes, str | None]:
        request, json_tool = to_anthropic_request(
            call.request, model=call.model, default_max_tokens=self.default_max_tokens,
            stream=stream,
        )
        return _encode(request), json_tool

    async def complete(self, call: Call) -> Completion:
        body, json_tool = self._translate(call, False)
        data = await self.send(body, call)
        try:
            message = decode_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise AttemptFailed(
                UpstreamError(f"Provider {self.name} answered with a body that is not a "
                              "Messages API message."),
                reason="bad_response", retryable=True, failover=True,
            ) from None
        completion = to_openai_response(message, json_tool=json_tool, created=int(time.time()))
        return Completion(_encode(completion), completion.usage)

    async def stream(self, call: Call) -> AnthropicStream:
        body, json_tool = self._translate(call, True)
        resp = await self.open_stream(body, call)
        translator = StreamTranslator(
            include_usage=call.include_usage, json_tool=json_tool, created=int(time.time())
        )
        stream = AnthropicStream(resp, self, translator)
        await stream.prime()
        return stream

    def error_from(self, status: int, body: bytes) -> GatewayError:
        error = error_from_anthropic(status, body)
        error.message = redact(error.message)
        return error


class AnthropicStream:
    """Translates each Anthropic stream event into OpenAI chunks as it arrives."""

    def __init__(
        self, resp: aiohttp.ClientResponse, provider: AnthropicProvider,
        translator: StreamTranslator,
    ) -> None:
        self._resp = resp
        self._provider = provider
        self._translator = translator
        self._events = sse_events(resp, provider.config.first_byte_timeout_s)
        self._pending: list[bytes] = []

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage

    async def prime(self) -> None:
        """Read events until the first OpenAI chunk exists (message_start gives it), so a
        failure before any output can still fail over."""
        try:
            async for _, data in self._events:
                try:
                    chunks = self._translator.feed_bytes(data)
                except GatewayError as exc:
                    # An error event before any output: fail over like an HTTP error would.
                    raise AttemptFailed(exc, reason="stream_error", retryable=True,
                                        failover=True) from None
                if chunks:
                    self._pending = [b"data: " + _encode(c) + b"\n\n" for c in chunks]
                    return
        except BaseException as exc:
            await self.aclose()
            failed = stream_start_failed(self._provider.name, exc)
            if failed is not None:
                raise failed from None
            raise
        await self.aclose()
        raise empty_stream(self._provider.name)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for item in self._pending:
                yield item
            self._pending = []
            finished = False
            async for event, data in self._events:
                for chunk in self._translator.feed_bytes(data):
                    yield b"data: " + _encode(chunk) + b"\n\n"
                finished = finished or event == b"message_stop"
            if not finished:
                raise UpstreamError(
                    f"Provider {self._provider.name} ended the stream before message_stop."
                )
            yield b"data: [DONE]\n\n"
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()
        self._resp.release()
