"""How a provider tells the router that an attempt failed, and whether trying again helps."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping

from gateway_core.errors import GatewayError, UpstreamError

__all__ = [
    "PROVIDER_FAULT_STATUSES",
    "RETRYABLE_STATUSES",
    "AttemptFailed",
    "classify_status",
    "parse_retry_after",
    "redact",
]

# https://platform.openai.com/docs/guides/error-codes, Anthropic's 529 overloaded_error.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# A bad key or missing permission is the gateway's problem, not the client's: fail over.
PROVIDER_FAULT_STATUSES = frozenset({401, 403})


class AttemptFailed(Exception):
    """One upstream attempt failed. ``error`` is what the client sees if nothing else works."""

    def __init__(
        self,
        error: GatewayError,
        *,
        reason: str,
        retryable: bool,
        failover: bool,
        retry_after_s: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason
        self.retryable = retryable
        # False: answer the client at once (e.g. 400: the request itself is wrong).
        self.failover = failover
        self.retry_after_s = retry_after_s
        self.upstream_status = upstream_status


def classify_status(status: int, error: GatewayError, headers: Mapping[str, str]) -> AttemptFailed:
    """Turn an upstream HTTP error into an AttemptFailed with the retry decision."""
    retry_after = parse_retry_after(headers)
    if status in RETRYABLE_STATUSES:
        return AttemptFailed(error, reason=f"status_{status}", retryable=True, failover=True,
                             retry_after_s=retry_after, upstream_status=status)
    if status in PROVIDER_FAULT_STATUSES:
        # The upstream message is not passed on: providers echo part of the key in it.
        mapped = UpstreamError(
            f"The upstream provider refused the gateway's credentials ({status}).",
            code="upstream_auth_failed",
        )
        return AttemptFailed(mapped, reason=f"status_{status}", retryable=False, failover=True,
                             upstream_status=status)
    return AttemptFailed(error, reason=f"status_{status}", retryable=False, failover=False,
                         upstream_status=status)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI, Anthropic) or ``retry-after``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Anything shaped like a provider key (OpenAI sk-..., Anthropic sk-ant-..., Groq gsk_...),
# even partly masked, is cut from upstream messages before they reach a client or a log.
_KEYLIKE = re.compile(r"\b(?:sk|gsk|pk|rk|key)[-_][A-Za-z0-9_\-*.]{4,}")


def redact(message: str) -> str:
    return _KEYLIKE.sub("[redacted]", message)
