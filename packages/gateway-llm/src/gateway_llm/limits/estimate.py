"""Offline token estimate of a chat request, charged before the call and settled with the
real usage after it. No tokenizer: a rough count that is cheap and never downloads anything.

- Text: ~4 characters per token (OpenAI's rule of thumb for English; code and other
  scripts run denser, and settlement corrects the difference).
- Each message: 4 tokens of framing (role and separators), plus 3 to prime the reply, as in
  OpenAI's cookbook count for chat formats.
- Tool definitions and a JSON response schema: their JSON text at ~4 characters per token.
- Images: 765 tokens (a 1024x1024 high-detail image), 85 with ``detail: "low"``.
- Audio and files: a fixed 1000 tokens each plus their inline payload at 1 token per
  16 base64 characters, bounded so a big upload cannot alone block a budget by accident.
"""

from __future__ import annotations

import msgspec

from gateway_core.openai_types import (
    AudioPart,
    ChatCompletionRequest,
    FilePart,
    ImagePart,
    RefusalPart,
    TextPart,
)

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
IMAGE_TOKENS = 765
IMAGE_LOW_TOKENS = 85
ATTACHMENT_TOKENS = 1000
ATTACHMENT_MAX_TOKENS = 32_000

_json = msgspec.json.Encoder()


def _chars(n: int) -> int:
    return (n + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _content_tokens(content: object) -> int:
    if content is None or not isinstance(content, (str, list)):
        return 0
    if isinstance(content, str):
        return _chars(len(content))
    total = 0
    for part in content:
        if isinstance(part, TextPart):
            total += _chars(len(part.text))
        elif isinstance(part, RefusalPart):
            total += _chars(len(part.refusal))
        elif isinstance(part, ImagePart):
            total += IMAGE_LOW_TOKENS if part.image_url.detail == "low" else IMAGE_TOKENS
        elif isinstance(part, AudioPart):
            total += ATTACHMENT_TOKENS + min(ATTACHMENT_MAX_TOKENS, len(part.input_audio.data) // 16)
        elif isinstance(part, FilePart):
            data = part.file.file_data if isinstance(part.file.file_data, str) else ""
            total += ATTACHMENT_TOKENS + min(ATTACHMENT_MAX_TOKENS, len(data) // 16)
    return total


def estimate_prompt_tokens(request: ChatCompletionRequest) -> int:
    """Rough prompt size in tokens (see the module docstring for the rules)."""
    total = REPLY_PRIMING_TOKENS
    for msg in request.messages:
        total += TOKENS_PER_MESSAGE
        total += _content_tokens(getattr(msg, "content", None))
        name = getattr(msg, "name", None)
        if isinstance(name, str):
            total += _chars(len(name))
        calls = getattr(msg, "tool_calls", None)
        if isinstance(calls, list):
            for call in calls:
                total += _chars(len(call.function.name) + len(call.function.arguments))
    if isinstance(request.tools, list) and request.tools:
        total += _chars(len(_json.encode(request.tools)))
    if isinstance(request.response_format, msgspec.Struct):
        total += _chars(len(_json.encode(request.response_format)))
    return total


def completion_budget(request: ChatCompletionRequest, default: int) -> int:
    """Output tokens to reserve: the request's cap, else ``default``, times ``n`` choices."""
    cap = request.max_completion_tokens
    if not isinstance(cap, int):
        cap = request.max_tokens
    tokens = cap if isinstance(cap, int) and cap > 0 else default
    n = request.n if isinstance(request.n, int) and request.n > 0 else 1
    return tokens * n
