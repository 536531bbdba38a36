"""Wire types of OpenAI's legacy Completions API (POST /v1/completions) and the Embeddings
API (POST /v1/embeddings): the client requests as the gateway decodes them, and the answers
the gateway writes when it translates a completion for a provider that has no such API."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway_core.openai_types import StreamOptions

__all__ = [
    "CompletionChoice",
    "CompletionRequest",
    "CompletionUsage",
    "EmbeddingInput",
    "EmbeddingRequest",
    "Prompt",
    "prompt_kind",
    "TextCompletion",
]

# A string, strings (one completion each), token ids, or lists of token ids. msgspec takes
# one array type per union, so the list's items are a union; the routes check that they
# are all of one kind (`prompt_kind`).
Prompt = str | list[str | int | list[int]]
EmbeddingInput = Prompt


class CompletionRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/completions. Decode with ``strict=False``."""

    model: str
    prompt: Prompt | None | UnsetType = UNSET
    max_tokens: int | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    n: int | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    stream_options: StreamOptions | None | UnsetType = UNSET
    stop: str | list[str] | None | UnsetType = UNSET
    logprobs: int | None | UnsetType = UNSET
    echo: bool | None | UnsetType = UNSET
    best_of: int | None | UnsetType = UNSET
    suffix: str | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET
    presence_penalty: float | None | UnsetType = UNSET
    frequency_penalty: float | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/embeddings. Decode with ``strict=False``."""

    model: str
    input: EmbeddingInput | None | UnsetType = UNSET
    encoding_format: Literal["float", "base64"] | None | UnsetType = UNSET
    dimensions: int | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(msgspec.Struct):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class TextCompletion(msgspec.Struct, omit_defaults=False):
    """A ``text_completion`` object, whole or as one stream chunk (the same shape)."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: Literal["text_completion"] = "text_completion"
    usage: CompletionUsage | None = None


def prompt_kind(value: object) -> Literal["text", "texts", "tokens", "token_lists"] | None:
    """What a prompt or embeddings input is, or None for an empty or mixed list."""
    if isinstance(value, str):
        return "text"
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return "texts"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "tokens"
    if all(isinstance(v, list) for v in value):
        return "token_lists"
    return None
