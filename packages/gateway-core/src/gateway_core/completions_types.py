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
    prompt: Prompt | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    logprobs: int | UnsetType | None = UNSET
    echo: bool | UnsetType | None = UNSET
    best_of: int | UnsetType | None = UNSET
    suffix: str | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    """POST /v1/embeddings. Decode with ``strict=False``."""

    model: str
    input: EmbeddingInput | UnsetType | None = UNSET
    encoding_format: Literal["float", "base64"] | UnsetType | None = UNSET
    dimensions: int | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET


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
