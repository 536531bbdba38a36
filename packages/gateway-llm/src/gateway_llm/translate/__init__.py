"""Pure translation between the OpenAI Chat Completions API and other providers' APIs."""

from gateway_llm.translate.anthropic import (
    AnthropicAPIError,
    StreamTranslator,
    error_from_anthropic,
    to_anthropic_request,
    to_openai_response,
)

__all__ = [
    "AnthropicAPIError",
    "StreamTranslator",
    "error_from_anthropic",
    "to_anthropic_request",
    "to_openai_response",
]
