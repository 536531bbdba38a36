"""The key and usage store's database: an async SQLAlchemy engine over SQLite (aiosqlite)
or PostgreSQL (asyncpg), its schema brought to the newest alembic revision at start."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["Database", "async_url"]

log = structlog.get_logger("gateway.storage")

_MIGRATIONS = Path(__file__).with_name("migrations")
# Taken by whoever migrates a PostgreSQL schema, so replicas starting together take turns.
_PG_LOCK = 0x61677773  # "agws"


def async_url(url: str) -> str:
    """The configured URL with the async driver named: sqlite+aiosqlite, postgresql+asyncpg."""
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported storage url scheme {scheme!r}")


class Database:
    """Owns the engine (its connection pool); ``start`` migrates, ``aclose`` disposes."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.dialect = self.url.split("+", 1)[0]
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the database was not started")
        return self._engine

    async def start(self) -> None:
        kwargs: dict[str, object] = {}
        if self.dialect == "sqlite":
            # One file shared by several workers: wait for a writer instead of failing.
            kwargs["connect_args"] = {"timeout": 15}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self._engine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            @sa.event.listens_for(self._engine.sync_engine, "connect")
            def _wal(dbapi_connection: object, _record: object) -> None:
                cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        await self.migrate()

    async def migrate(self) -> None:
        """Bring the schema to alembic's head (a no-op when it is there)."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))
            await conn.run_sync(_upgrade)

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()


def _upgrade(connection: sa.Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
