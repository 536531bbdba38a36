"""Which client headers go to an upstream and which upstream headers come back to the
client: one policy for the pass-through and every front door."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BILLING_HEADERS", "FORWARDED_REQUEST_HEADERS", "UPSTREAM_REQUEST_ID",
           "forwarded_headers", "returned_headers", "upstream_headers"]

# Client headers an OpenAI-kind upstream may see (lower-case). Never the client's
# Authorization or x-api-key: the provider's own key goes in their place.
# OpenAI-Organization / OpenAI-Project select whose bill a call goes on: only a provider
# configured with ``client_organization = true`` lets the client choose (upstream_headers).
# Accept goes as the client sent it: the API decides on the body's "stream", and the
# official SDKs send application/json for streams too (a spec mock answers what Accept asks).
BILLING_HEADERS = ("openai-organization", "openai-project")
FORWARDED_REQUEST_HEADERS = ("openai-beta", "idempotency-key", "accept", *BILLING_HEADERS)
# Upstream response headers a client may see besides the content headers.
_RETURNED = frozenset({"openai-processing-ms", "openai-version", "retry-after",
                       "retry-after-ms"})
_RATELIMIT_PREFIX = "x-ratelimit-"
UPSTREAM_REQUEST_ID = "x-upstream-request-id"
# What describes the body itself. content-length only where the body is relayed unchanged.
_CONTENT = frozenset({"content-type", "content-disposition", "content-language",
                      "cache-control", "last-modified", "etag"})


def forwarded_headers(client: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed client headers, by their lower-case names (``client`` looked up
    case-insensitively, as Starlette's headers are), before the provider's say on them."""
    return {k: v for k in FORWARDED_REQUEST_HEADERS if (v := client.get(k)) is not None}


def upstream_headers(provider_headers: Mapping[str, str], forwarded: Mapping[str, str], *,
                     client_organization: bool) -> dict[str, str]:
    """The headers one upstream request carries: the provider's configured ones, then the
    forwarded client headers (``forwarded_headers``) without the billing ones unless the
    provider lets the client choose them, in which case the client's win."""
    out = dict(provider_headers)
    for k, v in forwarded.items():
        if k in BILLING_HEADERS:
            if not client_organization:
                continue
            for name in [n for n in out if n.lower() == k]:
                del out[name]
        out[k] = v
    return out


def returned_headers(upstream: Mapping[str, str], *, gateway_limits: bool,
                     content: bool = False) -> dict[str, str]:
    """The upstream headers a client gets back: its request id as x-upstream-request-id,
    its processing time, its x-ratelimit-* unless the gateway's own limits answer for them
    (``gateway_limits``) and, for a relayed body (``content``), the headers that describe it."""
    out: dict[str, str] = {}
    for name, value in upstream.items():
        low = name.lower()
        if low == "x-request-id":
            out[UPSTREAM_REQUEST_ID] = value
        elif (low in _RETURNED or (content and low in _CONTENT)
              or (low.startswith(_RATELIMIT_PREFIX) and not gateway_limits)):
            out[low] = value
    if content and "content-encoding" not in upstream and \
            (length := upstream.get("content-length")) is not None:
        # Relayed as it came, so the length still holds (aiohttp undoes a content-encoding,
        # which changes it).
        out["content-length"] = length
    return out
