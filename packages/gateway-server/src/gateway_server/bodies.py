"""Request body decoding: once, with msgspec, into gateway_core types; any problem becomes
a 400 in OpenAI's error shape that names the field."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from gateway_core.errors import InvalidRequest

__all__ = ["decode_raw", "decode_typed", "field_of"]

T = TypeVar("T")

_raw_decoder = msgspec.json.Decoder(dict[str, object])
_PATH = re.compile(r" - at `\$\.?(.*)`$")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def field_of(error: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's message into (message, param): '... - at `$.messages[0].role`'.
    An unknown or missing key is reported at its parent object, so param names the key."""
    text = str(error)
    m = _PATH.search(text)
    where = m.group(1) if m is not None else ""
    message = text[: m.start()] if m is not None else text
    named = _NAMED_FIELD.search(message)
    if named is not None:
        return f"{message} at '{where or '<body>'}'", (
            f"{where}.{named.group(1)}" if where else named.group(1))
    if not where:
        return message, None
    return f"{message} at '{where}'", where


def decode_raw(body: bytes) -> dict[str, object]:
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return _raw_decoder.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("The request body must be a JSON object.") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None


def decode_typed(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = field_of(exc)
        raise InvalidRequest(f"Invalid request: {message}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None

