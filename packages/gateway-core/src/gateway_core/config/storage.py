"""Configuration of the key and usage store: virtual keys, teams and one usage record per
request, in SQLite (embedded) or PostgreSQL (shared by every replica)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["StorageConfig"]


class StorageConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # "sqlite:///relative/path.db", "sqlite:////absolute/path.db" or
    # "postgresql://user:password@host:5432/db" (the schema is migrated at start).
    url: Annotated[str, msgspec.Meta(pattern=r"^(sqlite|postgresql|postgres)(\+\w+)?://")] = (
        "sqlite:///agentic-gateway.db")
    # Usage records are written in batches off the request path: at most this often...
    flush_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.25
    # ... or as soon as this many are waiting, this many per transaction (small batches
    # keep each write's pause of the event loop short: ~40 ms for 650 SQLite rows).
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    # Records kept in memory while the database is down; past it the oldest are dropped
    # (counted in gateway_usage_dropped_total).
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    # While spend cannot be recorded (database down, max_pending reached): "serve" goes on
    # (said in readiness), "refuse" answers virtual keys' LLM requests with 503.
    on_unrecorded: Literal["serve", "refuse"] = "serve"
    # How long a worker trusts its cached view of a key. Revocations reach every worker at
    # once over Redis pub/sub when [rate_limit] backend = "redis"; without it (or while
    # Redis is unreachable) a worker re-reads a key after at most 1 s.
    key_cache_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __repr__(self) -> str:
        # The URL may carry a password.
        scheme = self.url.split("://", 1)[0]
        return (f"StorageConfig(url='{scheme}://***', flush_interval_s={self.flush_interval_s},"
                f" batch_size={self.batch_size}, max_pending={self.max_pending}, "
                f"on_unrecorded={self.on_unrecorded!r}, "
                f"key_cache_ttl_s={self.key_cache_ttl_s})")
