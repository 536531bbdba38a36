"""The admin API, ``/admin/*`` (admin keys only; the middleware checks): virtual keys and
teams (create, list, get, update, rotate, revoke) and the usage report. Errors in OpenAI's
shape, naming the field."""

from __future__ import annotations

import datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_core.errors import InvalidRequest, ServiceUnavailable
from gateway_llm.limiter import iso_utc
from gateway_server.access import AccessControl, KeySpec, KeyUpdate, TeamSpec, TeamUpdate
from gateway_server.access.control import period_start
from gateway_server.access.records import Period
from gateway_server.access.usage import GroupBy
from gateway_server.bodies import decode_typed

__all__ = ["routes"]

_encoder = msgspec.json.Encoder()
_key_spec = msgspec.json.Decoder(KeySpec)
_key_update = msgspec.json.Decoder(KeyUpdate)
_team_spec = msgspec.json.Decoder(TeamSpec)
_team_update = msgspec.json.Decoder(TeamUpdate)
_GROUPS: tuple[GroupBy, ...] = ("day", "model", "key", "team")


def _json(obj: object, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def _access(request: Request) -> AccessControl:
    access: AccessControl | None = request.app.state.gateway.access
    if access is None or not access.started:
        raise ServiceUnavailable("The key store is off: set server.admin_keys or [storage].",
                                 code="key_store_disabled")
    return access


async def _body(request: Request) -> bytes:
    body = await request.body()
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    return body


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


# ---- keys ----

async def create_key(request: Request) -> Response:
    spec = decode_typed(_key_spec, await _body(request))
    row = await _access(request).keys.create_key(spec)
    return _json(row.view(), 201)


async def list_keys(request: Request) -> Response:
    rows = await _access(request).keys.list_keys(request.query_params.get("team"),
                                                 _flag(request, "include_revoked"))
    return _json({"object": "list", "data": [r.view() for r in rows]})


async def get_key(request: Request) -> Response:
    """The key, and what it spent in its budget period so far (from the usage records)."""
    access = _access(request)
    row = await access.keys.get_key(request.path_params["id"])
    view = row.view()
    view["spend"] = await _spend(access, row.spec.period, key=row.id)
    return _json(view)


async def _spend(access: AccessControl, period: Period, *, key: str | None = None,
                 team: str | None = None) -> dict[str, object]:
    start = period_start(period, access.wall_clock())
    await access.usage.flush()
    rows = (await access.usage.report(key=key, team=team, since=start)).data
    total = rows[0] if rows else None
    return {"period": period, "since": None if start is None else iso_utc(start),
            "requests": total.requests if total else 0,
            "tokens": total.total_tokens if total else 0,
            "cost": total.cost if total else 0.0}


async def update_key(request: Request) -> Response:
    update = decode_typed(_key_update, await _body(request))
    row = await _access(request).keys.update_key(request.path_params["id"], update)
    return _json(row.view())


async def rotate_key(request: Request) -> Response:
    return _json((await _access(request).keys.rotate_key(request.path_params["id"])).view())


async def revoke_key(request: Request) -> Response:
    return _json((await _access(request).keys.revoke_key(request.path_params["id"])).view())


# ---- teams ----

async def create_team(request: Request) -> Response:
    spec = decode_typed(_team_spec, await _body(request))
    return _json((await _access(request).keys.create_team(spec)).view(), 201)


async def list_teams(request: Request) -> Response:
    rows = await _access(request).keys.list_teams(_flag(request, "include_revoked"))
    return _json({"object": "list", "data": [r.view() for r in rows]})


async def get_team(request: Request) -> Response:
    """The team, and what its keys spent in its budget period so far."""
    access = _access(request)
    row = await access.keys.get_team(request.path_params["id"])
    view = row.view()
    view["spend"] = await _spend(access, row.spec.period, team=row.id)
    return _json(view)


async def update_team(request: Request) -> Response:
    update = decode_typed(_team_update, await _body(request))
    row = await _access(request).keys.update_team(request.path_params["id"], update)
    return _json(row.view())


async def revoke_team(request: Request) -> Response:
    return _json((await _access(request).keys.revoke_team(request.path_params["id"])).view())


# ---- usage ----

def _time(request: Request, name: str) -> float | None:
    """?from= / ?to=: unix seconds, an RFC 3339 time or a date (UTC)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        value = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} must be unix seconds, an RFC 3339 time or a date, "
                             f"got {raw!r}.", param=name) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


async def usage(request: Request) -> Response:
    q = request.query_params
    unknown = set(q) - {"key", "team", "model", "from", "to", "group_by"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown query parameter '{name}'.", param=name)
    raw_group = q.get("group_by") or None
    group: GroupBy | None = None
    for choice in _GROUPS:
        if raw_group == choice:
            group = choice
    if raw_group is not None and group is None:
        raise InvalidRequest(f"group_by must be one of {', '.join(_GROUPS)}, got {raw_group!r}.",
                             param="group_by")
    access = _access(request)
    # What is waiting to be written belongs in the report too.
    await access.usage.flush()
    report = await access.usage.report(
        key=q.get("key") or None, team=q.get("team") or None, model=q.get("model") or None,
        since=_time(request, "from"), until=_time(request, "to"),
        group_by=group)
    return _json(report)


_K = "/admin/keys/{id}"
_T = "/admin/teams/{id}"
routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route(_K, get_key, methods=["GET"]),
    Route(_K, update_key, methods=["PATCH"]),
    Route(_K, revoke_key, methods=["DELETE"]),
    Route(_K + "/rotate", rotate_key, methods=["POST"]),
    Route(_K + "/revoke", revoke_key, methods=["POST"]),
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route(_T, get_team, methods=["GET"]),
    Route(_T, update_team, methods=["PATCH"]),
    Route(_T, revoke_team, methods=["DELETE"]),
    Route(_T + "/revoke", revoke_team, methods=["POST"]),
    Route("/admin/usage", usage, methods=["GET"]),
]
