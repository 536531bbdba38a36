"""OpenAI-kind providers (OpenAI, Groq, vLLM, Ollama, any OpenAI-compatible server): the
client's request goes upstream almost byte for byte, only the model replaced, and the
answer comes back untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec

from gateway_core.config import ProviderConfig
from gateway_core.errors import GatewayError, UpstreamError
from gateway_core.openai_types import ErrorBodyIn, Usage, UsageOnly
from gateway_llm.errors import AttemptFailed, redact
from gateway_llm.providers.base import (
    Call,
    Completion,
    HTTPProvider,
    empty_stream,
    sse_events,
    stream_start_failed,
)

_encode = msgspec.json.Encoder().encode
_usage_decoder = msgspec.json.Decoder(UsageOnly)
_error_decoder = msgspec.json.Decoder(ErrorBodyIn)


class OpenAIProvider(HTTPProvider):
    kind = "openai"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.url = f"{self.base_url}/chat/completions"
        headers = {"content-type": "application/json", "accept": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        headers.update(config.headers)
        self.headers = headers

    def _body(self, call: Call, stream: bool) -> bytes:
        raw = dict(call.raw)
        raw["model"] = call.model
        if stream:
            # Always ask for usage so token budgets settle; the usage chunk is dropped on
            # the way out when the client did not ask for it.
            options = raw.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            raw["stream_options"] = options
        return _encode(raw)

    async def complete(self, call: Call) -> Completion:
        body = await self.send(self._body(call, False), call)
        try:
            usage = _usage_decoder.decode(body).usage
        except msgspec.DecodeError:
            raise AttemptFailed(
                UpstreamError(f"Provider {self.name} answered with a body that is not a chat "
                              "completion."),
                reason="bad_response", retryable=True, failover=True,
            ) from None
        return Completion(body, usage)

    async def stream(self, call: Call) -> OpenAIStream:
        resp = await self.open_stream(self._body(call, True), call)
        stream = OpenAIStream(resp, self, call)
        await stream.prime()
        return stream

    def error_from(self, status: int, body: bytes) -> GatewayError:
        return error_from_openai(status, body, self.name)


def error_from_openai(status: int, body: bytes, provider: str) -> GatewayError:
    """The upstream's own OpenAI-shaped error, kept as it was sent (message, type, code)."""
    try:
        detail = _error_decoder.decode(body).error
        message = redact(detail.message) or f"Provider {provider} answered {status}."
        err = GatewayError(message, param=detail.param, status=status)
        err.type = detail.type or "upstream_error"
        err.code = None if detail.code is None else str(detail.code)
        return err
    except msgspec.DecodeError:
        err = GatewayError(f"Provider {provider} answered {status}.", status=status)
        err.type = "upstream_error"
        return err


class OpenAIStream:
    """Forwards upstream SSE events as they arrive, without re-encoding them."""

    def __init__(self, resp: aiohttp.ClientResponse, provider: OpenAIProvider, call: Call):
        self._resp = resp
        self._provider = provider
        self._call = call
        self._events = sse_events(resp, provider.config.first_byte_timeout_s)
        self._first: bytes | None = None
        self._usage: Usage | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    async def prime(self) -> None:
        """Wait for the first event: until it is here the router may still fail over."""
        try:
            async for _, data in self._events:
                self._first = data
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
            if self._first is not None:
                out = self._handle(self._first)
                if out is not None:
                    yield out
            async for _, data in self._events:
                if data == b"[DONE]":
                    break
                out = self._handle(data)
                if out is not None:
                    yield out
            else:
                raise UpstreamError(
                    f"Provider {self._provider.name} ended the stream before [DONE]."
                )
            yield b"data: [DONE]\n\n"
        finally:
            await self.aclose()

    def _handle(self, data: bytes) -> bytes | None:
        if data == b"[DONE]":
            return None
        if b'"usage":{' in data or b'"usage": {' in data:
            try:
                usage = _usage_decoder.decode(data).usage
            except msgspec.DecodeError:
                usage = None
            if usage is not None:
                self._usage = usage
                if not self._call.include_usage and b'"choices":[]' in data.replace(b" ", b""):
                    return None
        elif data.startswith(b'{"error"'):
            raise error_from_openai(500, data, self._provider.name)
        return b"data: " + data + b"\n\n"

    async def aclose(self) -> None:
        await self._events.aclose()
        # Fully read: the connection goes back to the pool; cut short: aiohttp closes it,
        # which is what cancels the upstream generation.
        self._resp.release()
