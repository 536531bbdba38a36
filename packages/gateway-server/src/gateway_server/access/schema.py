"""The tables of the key and usage store (SQLAlchemy Core). Alembic's migrations under
``migrations/`` create them; this module is the code's view of the same schema."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["keys", "metadata", "teams", "usage"]

metadata = sa.MetaData()

teams = sa.Table(
    "teams", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # TeamSpec as JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

keys = sa.Table(
    "keys", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # SHA-256 of the secret, hex: the secret itself is never stored.
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # shown to tell keys apart
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("team_id", sa.String(64), nullable=True, index=True),
    sa.Column("spec", sa.Text, nullable=False),  # KeySpec as JSON
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

usage = sa.Table(
    "usage", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("day", sa.String(10), nullable=False),  # UTC YYYY-MM-DD, for group_by=day
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=True, index=True),
    sa.Column("team_id", sa.String(64), nullable=True, index=True),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("provider", sa.String(128), nullable=True),
    sa.Column("model", sa.String(256), nullable=True),  # the upstream model
    sa.Column("api", sa.String(32), nullable=False),  # front door: chat, responses, ...
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_nano", sa.BigInteger, nullable=False),  # nano-USD
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
)
