"""Virtual keys and teams in the database, and each worker's cache of them.

A key's secret is shown once, at creation (or rotation); the database keeps its SHA-256
only. A lookup hashes the presented secret and compares the stored hash in constant time.
Each worker caches what it looked up; a change made anywhere is published on Redis
(``agw:keys:changed``) and every worker drops its copy at once. Without Redis, or while it
is unreachable, a cached key is re-read after at most a second."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway_core.errors import InvalidRequest, NotFound
from gateway_server.access.database import Database
from gateway_server.access.records import (
    KeySpec,
    KeyUpdate,
    Principal,
    TeamSpec,
    TeamUpdate,
)
from gateway_server.access.schema import keys, teams

__all__ = ["CHANNEL", "KEY_PREFIX", "KeyRow", "KeyStore", "TeamRow", "hash_secret"]

log = structlog.get_logger("gateway.keys")

KEY_PREFIX = "sk-agw-"
CHANNEL = "agw:keys:changed"
_UNSAFE_TTL_S = 1.0  # the cache's lifetime when no invalidation can reach this worker
_MAX_CACHED = 100_000

_encoder = msgspec.json.Encoder()
_key_spec = msgspec.json.Decoder(KeySpec)
_team_spec = msgspec.json.Decoder(TeamSpec)


def hash_secret(secret: bytes) -> str:
    # A fast hash is right for 256-bit random secrets (no dictionary to try); a slow one
    # would only cost every request.
    return hashlib.sha256(secret).hexdigest()


@dataclass(slots=True)
class KeyRow:
    id: str
    prefix: str
    spec: KeySpec
    created_at: float
    updated_at: float
    revoked_at: float | None
    secret: str | None = None  # only right after create or rotate

    def view(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "object": "key", "key_prefix": self.prefix}
        out.update(msgspec.structs.asdict(self.spec))
        out["expires_at"] = (None if self.spec.expires_at is None
                             else _iso(self.spec.expires_at.timestamp()))
        out.update(created_at=_iso(self.created_at), updated_at=_iso(self.updated_at),
                   revoked_at=None if self.revoked_at is None else _iso(self.revoked_at))
        if self.secret is not None:
            out["key"] = self.secret
        return out


@dataclass(slots=True)
class TeamRow:
    id: str
    spec: TeamSpec
    created_at: float
    updated_at: float
    revoked_at: float | None

    def view(self) -> dict[str, object]:
        out: dict[str, object] = {"object": "team", **msgspec.structs.asdict(self.spec)}
        out["id"] = self.id
        out.update(created_at=_iso(self.created_at), updated_at=_iso(self.updated_at),
                   revoked_at=None if self.revoked_at is None else _iso(self.revoked_at))
        return out


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def _check_expiry(value: datetime.datetime | None, now: float) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise InvalidRequest("expires_at needs a time zone (e.g. '2030-01-01T00:00:00Z').",
                             param="expires_at")
    if value.timestamp() <= now:
        raise InvalidRequest("expires_at is in the past.", param="expires_at")


def _apply(spec: msgspec.Struct, update: msgspec.Struct) -> None:
    for name in update.__struct_fields__:
        value = getattr(update, name)
        if value is not msgspec.UNSET:
            setattr(spec, name, value)


@dataclass(slots=True)
class _Cached:
    principal: Principal | None  # None: no such key (or revoked, or expired)
    loaded_at: float
    team_id: str | None


class KeyStore:
    """Keys and teams: the admin operations (database), and ``lookup`` for each request
    (cached). ``redis_url`` enables instant invalidation across workers and replicas."""

    def __init__(self, db: Database, *, cache_ttl_s: float = 60.0,
                 redis_url: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.cache_ttl_s = cache_ttl_s
        self.redis_url = redis_url
        self.clock = clock
        self.wall_clock = wall_clock
        self._cache: dict[str, _Cached] = {}
        self._redis: object | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._listening = False
        self.last_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.redis_url is None:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0,
                                              socket_timeout=2.0)
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        # Serve at once either way; readiness says whether invalidations arrive.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._subscribed.wait()

    async def aclose(self) -> None:
        if self._listener is not None:
            task, self._listener = self._listener, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()  # type: ignore[attr-defined]

    async def _listen(self) -> None:
        """Drop cached keys as changes are announced; on a lost connection forget the whole
        cache (changes may have been missed) and reconnect."""
        while True:
            try:
                pubsub = self._redis.pubsub()  # type: ignore[union-attr]
                async with pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._cache.clear()
                    self._listening = True
                    self.last_error = None
                    self._subscribed.set()
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=30.0)
                        if message is not None and message.get("type") == "message":
                            self._drop(bytes(message["data"]).decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - redis-py's errors; retried
                if self._listening or self.last_error is None:
                    log.warning("key_invalidation_lost", error=f"{type(exc).__name__}: {exc}")
                self._listening = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._cache.clear()
                await asyncio.sleep(0.5)

    def health(self) -> dict[str, object]:
        return {"cached_keys": len(self._cache),
                "invalidation": "redis" if self._listening else "ttl",
                "cache_ttl_s": self._ttl(), "last_error": self.last_error}

    # --- the request path --------------------------------------------------------------

    def _ttl(self) -> float:
        return self.cache_ttl_s if self._listening else min(self.cache_ttl_s, _UNSAFE_TTL_S)

    async def lookup(self, secret: bytes) -> Principal | None:
        """The principal of a presented virtual key, or None when it is unknown, revoked or
        expired. Raises the database's error when it cannot be asked."""
        digest = hash_secret(secret)
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is None:
            hit = await self._load(digest, now)
        elif now - hit.loaded_at > self._ttl():
            try:
                hit = await self._load(digest, now)
            except Exception as exc:  # noqa: BLE001 - any driver's error
                # The database is down: nothing can be revoked meanwhile either, so the
                # last known state stands (a key never seen gets 503 instead).
                if self.last_error is None:
                    log.warning("key_store_unreachable_serving_cached",
                                error=type(exc).__name__)
                self.last_error = f"{type(exc).__name__}: {exc}"
                hit.loaded_at = now
        p = hit.principal
        if p is not None and p.expires_at is not None and p.expires_at <= self.wall_clock():
            return None
        return p

    async def _load(self, digest: str, now: float) -> _Cached:
        parent: KeySpec | None = None
        alive = True
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(keys.c.id, keys.c.hash, keys.c.spec, keys.c.revoked_at,
                          keys.c.team_id).where(keys.c.hash == digest))).first()
            spec = None if row is None else _key_spec.decode(row.spec)
            if spec is not None and spec.parent is not None:
                p = (await conn.execute(sa.select(keys.c.spec, keys.c.revoked_at)
                                        .where(keys.c.id == spec.parent))).first()
                alive = p is not None and p.revoked_at is None
                parent = None if p is None else _key_spec.decode(p.spec)
                if parent is not None and parent.expires_at is not None \
                        and parent.expires_at.timestamp() <= self.wall_clock():
                    alive = False
            team: TeamSpec | None = None
            if row is not None and row.team_id is not None:
                t = (await conn.execute(sa.select(teams.c.spec, teams.c.revoked_at)
                                        .where(teams.c.id == row.team_id))).first()
                if t is not None:
                    team = _team_spec.decode(t.spec)
                    alive = alive and t.revoked_at is None
        principal: Principal | None = None
        team_id: str | None = None
        # compare_digest: the lookup went by hash; confirm it without an early exit.
        if row is not None and spec is not None and hmac.compare_digest(row.hash, digest) \
                and row.revoked_at is None and alive:
            team_id = spec.team
            principal = Principal(
                "virtual", row.id, spec.name, team_id=spec.team, key=spec, team=team,
                share_with_team=spec.share_sandboxes_with_team,
                expires_at=None if spec.expires_at is None else spec.expires_at.timestamp(),
                parent_id=spec.parent, parent=parent)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        entry = _Cached(principal, now, team_id)
        self._cache[digest] = entry
        return entry

    def _drop(self, what: str) -> None:
        """Forget cached keys: 'key:<id>', 'team:<id>', 'new:' (a key was created: only the
        secrets cached as unknown), or anything else: all."""
        kind, _, ident = what.partition(":")
        if kind == "new":
            gone: list[str] = []
        elif kind == "key":
            gone = [d for d, c in self._cache.items() if c.principal is not None
                    and ident in (c.principal.key_id, c.principal.parent_id)]
        elif kind == "team":
            gone = [d for d, c in self._cache.items() if c.team_id == ident]
        else:
            self._cache.clear()
            return
        for d in gone:
            self._cache.pop(d, None)
        # Unknown keys cached as such may have just been created.
        for d in [d for d, c in self._cache.items() if c.principal is None]:
            self._cache.pop(d, None)

    async def changed(self, what: str) -> None:
        """Tell this worker and (over Redis) every other one that a key or team changed."""
        self._drop(what)
        if self._redis is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._redis.publish(CHANNEL, what)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - the others fall back to their TTL
                log.warning("key_invalidation_not_published", error=f"{type(exc).__name__}",
                            what=what)

    # --- keys --------------------------------------------------------------------------

    async def create_key(self, spec: KeySpec) -> KeyRow:
        now = self.wall_clock()
        _check_expiry(spec.expires_at, now)
        async with self.db.engine.begin() as conn:
            if spec.team is not None:
                await self._team_exists(conn, spec.team)
            if spec.parent is not None:
                found = (await conn.execute(sa.select(keys.c.revoked_at)
                                            .where(keys.c.id == spec.parent))).first()
                if found is None or found.revoked_at is not None:
                    raise InvalidRequest(f"There is no key '{spec.parent}' to be a parent.",
                                         param="parent", code="key_not_found")
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            row = KeyRow("key_" + secrets.token_hex(8), secret[:12], spec, now, now, None,
                         secret=secret)
            await conn.execute(keys.insert().values(
                id=row.id, hash=hash_secret(secret.encode()), prefix=row.prefix,
                name=spec.name, team_id=spec.team, spec=_encoder.encode(spec).decode(),
                expires_at=None if spec.expires_at is None else spec.expires_at.timestamp(),
                created_at=now, updated_at=now, revoked_at=None))
        await self.changed("new:")
        log.info("key_created", key_id=row.id, team=spec.team)
        return row

    async def _team_exists(self, conn: AsyncConnection, team: str) -> None:
        found = (await conn.execute(sa.select(teams.c.revoked_at)
                                    .where(teams.c.id == team))).first()
        if found is None or found.revoked_at is not None:
            raise InvalidRequest(f"There is no team '{team}'.", param="team",
                                 code="team_not_found")

    async def list_keys(self, team: str | None = None,
                        include_revoked: bool = False) -> list[KeyRow]:
        q = sa.select(keys).order_by(keys.c.created_at, keys.c.id)
        if team is not None:
            q = q.where(keys.c.team_id == team)
        if not include_revoked:
            q = q.where(keys.c.revoked_at.is_(None))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [self._key_row(r) for r in rows]

    @staticmethod
    def _key_row(r: sa.Row[object]) -> KeyRow:
        m = r._mapping
        return KeyRow(m["id"], m["prefix"], _key_spec.decode(m["spec"]), m["created_at"],
                      m["updated_at"], m["revoked_at"])

    async def get_key(self, key_id: str) -> KeyRow:
        async with self.db.engine.connect() as conn:
            r = (await conn.execute(sa.select(keys).where(keys.c.id == key_id))).first()
        if r is None:
            raise NotFound(f"There is no key '{key_id}'.", param="id", code="key_not_found")
        return self._key_row(r)

    async def update_key(self, key_id: str, update: KeyUpdate) -> KeyRow:
        now = self.wall_clock()
        if update.expires_at is not msgspec.UNSET:
            _check_expiry(update.expires_at, now)
        row = await self.get_key(key_id)
        _apply(row.spec, update)
        async with self.db.engine.begin() as conn:
            if update.team is not msgspec.UNSET and update.team is not None:
                await self._team_exists(conn, update.team)
            spec = row.spec
            await conn.execute(keys.update().where(keys.c.id == key_id).values(
                name=spec.name, team_id=spec.team, spec=_encoder.encode(spec).decode(),
                expires_at=None if spec.expires_at is None else spec.expires_at.timestamp(),
                updated_at=now))
        row.updated_at = now
        await self.changed(f"key:{key_id}")
        return row

    async def rotate_key(self, key_id: str) -> KeyRow:
        """A new secret for the key (same id, limits and spend); the old one stops now."""
        row = await self.get_key(key_id)
        if row.revoked_at is not None:
            raise InvalidRequest(f"Key '{key_id}' is revoked.", param="id",
                                 code="key_revoked")
        now = self.wall_clock()
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.db.engine.begin() as conn:
            await conn.execute(keys.update().where(keys.c.id == key_id).values(
                hash=hash_secret(secret.encode()), prefix=secret[:12], updated_at=now))
        row.secret, row.prefix, row.updated_at = secret, secret[:12], now
        await self.changed(f"key:{key_id}")
        log.info("key_rotated", key_id=key_id)
        return row

    async def revoke_key(self, key_id: str) -> KeyRow:
        row = await self.get_key(key_id)
        if row.revoked_at is None:
            now = self.wall_clock()
            async with self.db.engine.begin() as conn:
                await conn.execute(keys.update().where(keys.c.id == key_id)
                                   .values(revoked_at=now, updated_at=now))
            row.revoked_at = row.updated_at = now
        await self.changed(f"key:{key_id}")
        log.info("key_revoked", key_id=key_id)
        return row

    # --- teams -------------------------------------------------------------------------

    async def create_team(self, spec: TeamSpec) -> TeamRow:
        now = self.wall_clock()
        team_id = spec.id or "team_" + secrets.token_hex(6)
        spec.id = team_id
        async with self.db.engine.begin() as conn:
            found = (await conn.execute(sa.select(teams.c.id)
                                        .where(teams.c.id == team_id))).first()
            if found is not None:
                raise InvalidRequest(f"Team '{team_id}' exists already.", param="id",
                                     code="team_exists")
            await conn.execute(teams.insert().values(
                id=team_id, name=spec.name, spec=_encoder.encode(spec).decode(),
                created_at=now, updated_at=now, revoked_at=None))
        return TeamRow(team_id, spec, now, now, None)

    async def list_teams(self, include_revoked: bool = False) -> list[TeamRow]:
        q = sa.select(teams).order_by(teams.c.created_at, teams.c.id)
        if not include_revoked:
            q = q.where(teams.c.revoked_at.is_(None))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [self._team_row(r) for r in rows]

    @staticmethod
    def _team_row(r: sa.Row[object]) -> TeamRow:
        m = r._mapping
        return TeamRow(m["id"], _team_spec.decode(m["spec"]), m["created_at"],
                       m["updated_at"], m["revoked_at"])

    async def get_team(self, team_id: str) -> TeamRow:
        async with self.db.engine.connect() as conn:
            r = (await conn.execute(sa.select(teams).where(teams.c.id == team_id))).first()
        if r is None:
            raise NotFound(f"There is no team '{team_id}'.", param="id",
                           code="team_not_found")
        return self._team_row(r)

    async def update_team(self, team_id: str, update: TeamUpdate) -> TeamRow:
        row = await self.get_team(team_id)
        _apply(row.spec, update)
        now = self.wall_clock()
        async with self.db.engine.begin() as conn:
            await conn.execute(teams.update().where(teams.c.id == team_id).values(
                name=row.spec.name, spec=_encoder.encode(row.spec).decode(), updated_at=now))
        row.updated_at = now
        await self.changed(f"team:{team_id}")
        return row

    async def revoke_team(self, team_id: str) -> TeamRow:
        """Revoking a team stops every key of it."""
        row = await self.get_team(team_id)
        if row.revoked_at is None:
            now = self.wall_clock()
            async with self.db.engine.begin() as conn:
                await conn.execute(teams.update().where(teams.c.id == team_id)
                                   .values(revoked_at=now, updated_at=now))
            row.revoked_at = row.updated_at = now
        await self.changed(f"team:{team_id}")
        return row

