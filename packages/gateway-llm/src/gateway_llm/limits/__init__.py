"""Rolling-window rate limits (requests/min, tokens/min, tokens/day) with reservation and
settlement, kept in process memory or in Redis; the algorithm is described in ``gcra.py``."""

from gateway_llm.limits.estimate import completion_budget, estimate_prompt_tokens
from gateway_llm.limits.gcra import (
    DAY_S,
    MINUTE_S,
    EstimateTooLarge,
    Limit,
    LimitName,
    LimitState,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    Outcome,
    Rejection,
    Reservation,
    standard_limits,
)
from gateway_llm.limits.limiter import (
    Admission,
    Denied,
    DenyReason,
    RateLimiter,
    format_reset,
    model_scope,
    provider_scope,
    ratelimit_headers,
)
from gateway_llm.limits.redis_store import RedisLimitStore

__all__ = [
    "DAY_S",
    "MINUTE_S",
    "Admission",
    "Denied",
    "DenyReason",
    "EstimateTooLarge",
    "Limit",
    "LimitName",
    "LimitState",
    "LimitStore",
    "LimitStoreUnavailable",
    "MemoryLimitStore",
    "Outcome",
    "RateLimiter",
    "RedisLimitStore",
    "Rejection",
    "Reservation",
    "completion_budget",
    "estimate_prompt_tokens",
    "format_reset",
    "model_scope",
    "provider_scope",
    "ratelimit_headers",
    "standard_limits",
]
