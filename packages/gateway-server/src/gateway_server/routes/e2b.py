"""E2B's control plane (its public REST API, e2b-dev/E2B spec/openapi.yml) over the app's
SandboxManager: create, list, get, kill, timeout, pause, resume/connect, so the official
``e2b`` SDKs manage our sandboxes with ``E2B_API_URL`` pointing at ``[server.e2b] prefix``.
Errors are E2B's ``{"code": status, "message": ...}``, naming the field in E2B's spelling."""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway_core.config.server import E2BConfig
from gateway_core.errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from gateway_sandbox import Sandbox, SandboxManager
from gateway_server import sandbox_access
from gateway_server.bodies import decode_typed

__all__ = ["CLIENT_ID", "ENVD_VERSION", "E2BError", "envd_access_token", "error_renderer",
           "guarded_prefixes", "routes"]

# What the SDK reads back, and what it gates features on: 0.5.7 has closing stdin (0.5.2)
# and streamed octet-stream uploads (0.5.7), both served by gateway_server.e2b_data; file
# metadata (0.6.2) and watch event entries (0.6.3) are not.
ENVD_VERSION = "0.5.7"
# E2B ids were once spelled "<sandboxID>-<clientID>"; both spellings are accepted.
CLIENT_ID = "gateway"
# Keys each sandbox's envdAccessToken (HMAC of its id): nothing to store, checkable later.
_TOKEN_KEY = os.urandom(32)

State = Literal["running", "paused"]
Timeout = Annotated[int, msgspec.Meta(ge=0)]

# Our parameter names -> E2B's, so an error names the field the client sent.
_FIELD = {"runtime": "templateID", "template": "templateID", "timeout_s": "timeout",
          "env": "envVars", "metadata": "metadata", "id": "sandboxID"}


class E2BError(msgspec.Struct):
    code: int
    message: str


class NewSandbox(msgspec.Struct, kw_only=True, rename="camel"):
    """POST /sandboxes (v1, default timeout 15 s) and /v2/sandboxes (default 300 s)."""

    template_id: str = msgspec.field(name="templateID")
    timeout: Timeout | None = None
    auto_pause: bool = False
    auto_pause_memory: bool | None = None
    auto_resume: dict[str, object] | None = None
    secure: bool | None = None
    allow_internet_access: bool | None = msgspec.field(default=None,
                                                       name="allow_internet_access")
    network: dict[str, object] | None = None
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    mcp: dict[str, object] | None = None
    iam: dict[str, object] | None = None
    volume_mounts: list[object] | None = None


class TimeoutBody(msgspec.Struct, kw_only=True):
    timeout: Timeout


class ConnectBody(msgspec.Struct, kw_only=True):
    timeout: Timeout | None = None
    memory: bool | None = None
    auto_pause: bool | None = msgspec.field(default=None, name="autoPause")


class PauseBody(msgspec.Struct, kw_only=True):
    memory: bool | None = None
    require_healthy_guest: bool | None = msgspec.field(default=None,
                                                       name="requireHealthyGuest")


class CreatedSandbox(msgspec.Struct, kw_only=True, omit_defaults=True):
    template_id: str = msgspec.field(name="templateID")
    sandbox_id: str = msgspec.field(name="sandboxID")
    client_id: str = msgspec.field(name="clientID")
    envd_version: str = msgspec.field(name="envdVersion")
    envd_access_token: str | None = msgspec.field(default=None, name="envdAccessToken")
    domain: str | None = None
    # Sent back by the code interpreter's SDK on its calls that carry no X-Access-Token.
    traffic_access_token: str | None = msgspec.field(default=None, name="trafficAccessToken")


class ListedSandbox(msgspec.Struct, kw_only=True, omit_defaults=True):
    template_id: str = msgspec.field(name="templateID")
    sandbox_id: str = msgspec.field(name="sandboxID")
    client_id: str = msgspec.field(name="clientID")
    started_at: str = msgspec.field(name="startedAt")
    end_at: str = msgspec.field(name="endAt")
    cpu_count: int = msgspec.field(name="cpuCount")
    memory_mb: int = msgspec.field(name="memoryMB")
    disk_size_mb: int = msgspec.field(name="diskSizeMB")
    state: State
    envd_version: str = msgspec.field(name="envdVersion")
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    # Detail only (GET /sandboxes/{id}).
    envd_access_token: str | None = msgspec.field(default=None, name="envdAccessToken")
    domain: str | None = None
    allow_internet_access: bool | None = msgspec.field(default=None,
                                                       name="allowInternetAccess")


_new_decoder = msgspec.json.Decoder(NewSandbox)
_timeout_decoder = msgspec.json.Decoder(TimeoutBody)
_connect_decoder = msgspec.json.Decoder(ConnectBody)
_pause_decoder = msgspec.json.Decoder(PauseBody)
_encoder = msgspec.json.Encoder()

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> Response:
    return Response(_encoder.encode(E2BError(code=status, message=message)),
                    status_code=status, media_type="application/json")


def guarded_prefixes(cfg: E2BConfig) -> tuple[str, ...]:
    """The paths the gateway's API keys guard for this API."""
    return (cfg.prefix + "/",) if cfg.enabled else ()


def error_renderer(cfg: E2BConfig, fallback: Callable[[str, GatewayError], tuple[int, bytes]]
                   ) -> Callable[[str, GatewayError], tuple[int, bytes]]:
    """The middleware's error renderer: E2B's shape under the prefix (the SDK parses a 401's
    body as E2B's Error), ``fallback`` elsewhere."""
    prefix = cfg.prefix + "/"

    def render(path: str, error: GatewayError) -> tuple[int, bytes]:
        if cfg.enabled and path.startswith(prefix):
            return error.status, _encoder.encode(E2BError(code=error.status,
                                                          message=error.message))
        return fallback(path, error)
    return render


def _json(obj: object, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def _e2b(handler: Handler) -> Handler:
    """Render the gateway's errors in E2B's shape, the field in E2B's spelling."""
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            message = exc.message
            if exc.param:
                field = _FIELD.get(exc.param, exc.param)
                message = f"{message} (field: {field})"
            return _error(exc.status, message)
    return wrapped


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def _token(sandbox_id: str) -> str:
    return hmac.new(_TOKEN_KEY, sandbox_id.encode(), hashlib.sha256).hexdigest()


def envd_access_token(sandbox_id: str) -> str:
    """The token the data plane expects from the sandbox's clients (X-Access-Token)."""
    return _token(sandbox_id)


class _Api:
    """The routes' shared view of the config and the app's manager."""

    def __init__(self, cfg: E2BConfig) -> None:
        self.cfg = cfg

    def manager(self, request: Request) -> SandboxManager:
        manager: SandboxManager | None = getattr(request.app.state, "sandboxes", None)
        if manager is None:
            reason = getattr(request.app.state, "sandbox_unavailable_reason", None)
            raise ServiceUnavailable(f"Sandboxes are unavailable: {reason or 'not configured'}.")
        return manager

    def sandbox(self, request: Request) -> Sandbox:
        manager = self.manager(request)
        sid = self.sandbox_id(request)
        sandbox_access.check_visible(request, sid)
        sb = manager.get(sid)
        if sb.status in ("dead", "closed"):
            # E2B has no such state: for its clients the sandbox is gone.
            raise NotFound(f"Sandbox {sid} is dead (its guest exited); kill it and create "
                           "another.", param="id")
        sb.touch()
        return sb

    @staticmethod
    def sandbox_id(request: Request) -> str:
        sid: str = request.path_params["id"]
        return sid.removesuffix("-" + CLIENT_ID)

    def runtime(self, template_id: str) -> str:
        return self.cfg.templates.get(template_id, template_id)

    def resolve(self, manager: SandboxManager, template_id: str) -> tuple[str, str | None]:
        """(runtime, sandbox template): an alias or runtime name as before, else the name of
        a configured [sandbox.templates.NAME] (its first runtime)."""
        if template_id not in self.cfg.templates:
            t = manager.templates.configs.get(template_id)
            if t is not None:
                return t.runtimes[0], template_id
        return self.runtime(template_id), None

    @staticmethod
    def template_of(sb: Sandbox) -> str:
        return sb.template if sb.template != "default" else sb.runtime

    def created(self, sb: Sandbox) -> CreatedSandbox:
        return CreatedSandbox(template_id=self.template_of(sb), sandbox_id=sb.id,
                              client_id=CLIENT_ID,
                              envd_version=ENVD_VERSION, envd_access_token=_token(sb.id),
                              domain=self.cfg.domain, traffic_access_token=_token(sb.id))

    def listed(self, manager: SandboxManager, sb: Sandbox, detail: bool = False
               ) -> ListedSandbox:
        res = sb.resources or manager.policy.default_resources()
        return ListedSandbox(
            template_id=self.template_of(sb), sandbox_id=sb.id, client_id=CLIENT_ID,
            started_at=_iso(sb.created_at), end_at=_iso(sb.expires_at),
            cpu_count=max(1, round(res.cpus)), memory_mb=res.memory_mb,
            disk_size_mb=res.disk_mb, state="paused" if sb.paused else "running",
            envd_version=ENVD_VERSION, metadata=dict(sb.metadata),
            envd_access_token=_token(sb.id) if detail else None,
            domain=self.cfg.domain if detail else None,
            allow_internet_access=manager.cfg.network if detail else None)


async def _body(request: Request) -> bytes:
    return await request.body() or b"{}"


def _metadata_filter(request: Request) -> dict[str, str]:
    # The SDK sends metadata=urlencode({quote(k): quote(v)}): "k1=v1&k2=v2", quoted twice.
    raw = request.query_params.get("metadata")
    if not raw:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidRequest(f"metadata must be 'key=value&...', got {raw!r} "
                             "(field: metadata)") from None
    return {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in pairs}


def _states(request: Request) -> set[str]:
    raw = request.query_params.get("state")
    if not raw:
        return {"running", "paused"}
    states = {s.strip() for s in raw.split(",") if s.strip()}
    bad = states - {"running", "paused"}
    if bad:
        raise InvalidRequest(f"Unknown state {sorted(bad)[0]!r}; expected running or paused.",
                             param="state")
    return states


def _int_query(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise InvalidRequest(f"{name} must be an integer >= {minimum}, got {raw!r}.",
                             param=name)
    return int(raw)


# E2B's own spelling of "everything" in denyOut (e2b.ALL_TRAFFIC).
_ALL_TRAFFIC = "0.0.0.0/0"


def _network_allow(manager: SandboxManager, network: dict[str, object] | None,
                   ) -> list[str] | None:
    """E2B's ``network`` as an egress allow-list: ``allowOut`` host names (or ``*.``
    wildcards) are what the sandbox may reach through the gateway's proxy; ``denyOut`` may
    only say "everything else" (``0.0.0.0/0``), which is what this gateway does anyway.
    CIDRs, IPs and E2B's other network options are refused naming the field. None: the
    network was not given (the config's default)."""
    if not network:
        return None
    for key in network:
        if key not in ("allowOut", "denyOut", "allowPublicTraffic"):
            raise InvalidRequest(f"network.{key} is not supported by this gateway (it "
                                 "supports network.allowOut host names and "
                                 f"network.denyOut = [{_ALL_TRAFFIC!r}]).",
                                 param=f"network.{key}")
    # Inbound traffic: no sandbox port is exposed publicly here, so only false fits.
    if network.get("allowPublicTraffic", False) is not False:
        raise InvalidRequest("network.allowPublicTraffic=true is not supported by this "
                             "gateway (no sandbox port is exposed).",
                             param="network.allowPublicTraffic")
    deny = network.get("denyOut", [])
    if not isinstance(deny, list) or any(d != _ALL_TRAFFIC for d in deny):
        raise InvalidRequest(f"network.denyOut must be [{_ALL_TRAFFIC!r}] or left out: this "
                             "gateway denies everything that allowOut does not name.",
                             param="network.denyOut")
    allow = network.get("allowOut", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise InvalidRequest("network.allowOut must be a list of host names.",
                             param="network.allowOut")
    entries = [a for a in allow if isinstance(a, str)]
    if not entries:
        return []
    if manager.egress is None:
        raise InvalidRequest("This gateway has no egress proxy: its sandboxes cannot have "
                             "network.allowOut.", param="network.allowOut")
    # Checked here so that an error names E2B's field (allowOut[i]), not ours.
    manager.egress.check_allow(entries, param="network.allowOut")
    return entries


def routes(cfg: E2BConfig) -> list[BaseRoute]:
    """The E2B routes under ``cfg.prefix``; none when disabled."""
    if not cfg.enabled:
        return []
    api = _Api(cfg)

    def create(default_timeout: int) -> Handler:
        async def create_sandbox(request: Request) -> Response:
            manager = api.manager(request)
            req = decode_typed(_new_decoder, await _body(request))
            for name, value in (("mcp", req.mcp),
                                ("iam", req.iam), ("volumeMounts", req.volume_mounts)):
                if value:
                    raise InvalidRequest(f"{name} is not supported by this gateway.",
                                         param=name)
            if req.auto_resume and req.auto_resume.get("enabled"):
                raise InvalidRequest("autoResume is not supported by this gateway.",
                                     param="autoResume")
            if req.allow_internet_access and not manager.cfg.network:
                raise InvalidRequest("This gateway's sandboxes have no internet access; "
                                     "send allow_internet_access=false or leave it out.",
                                     param="allow_internet_access")
            allow = _network_allow(manager, req.network)
            timeout = default_timeout if req.timeout is None else req.timeout
            slots = await sandbox_access.hold_quota(request)
            try:
                runtime, template = api.resolve(manager, req.template_id)
                sb = await manager.create(runtime, timeout_s=timeout,
                                          env=req.env_vars, metadata=req.metadata,
                                          on_timeout="pause" if req.auto_pause else "delete",
                                          template=template, network=allow)
            except BaseException:
                await sandbox_access.not_created(request, None, slots)
                raise
            await sandbox_access.created(request, manager, sb, slots=slots)
            return _json(api.created(sb), 201)
        return create_sandbox

    async def list_v1(request: Request) -> Response:
        manager = api.manager(request)
        found = [api.listed(manager, sb) for sb in
                 sandbox_access.visible(request, manager.list(_metadata_filter(request)))
                 if sb.status not in ("dead", "closed") and not sb.paused]
        return _json(found)

    async def list_v2(request: Request) -> Response:
        manager = api.manager(request)
        states = _states(request)
        limit = _int_query(request, "limit", 100, 1)
        start = _int_query(request, "nextToken", 0, 0)
        template = request.query_params.get("template")
        found = [sb for sb in
                 sandbox_access.visible(request, manager.list(_metadata_filter(request)))
                 if sb.status not in ("dead", "closed")
                 and ("paused" if sb.paused else "running") in states
                 and (not template or api.template_of(sb) in (template,
                                                               api.runtime(template)))]
        found.sort(key=lambda sb: (sb.created_at, sb.id),
                   reverse=request.query_params.get("order", "desc") != "asc")
        page = found[start:start + limit]
        headers = {"x-next-token": str(start + limit)} if start + limit < len(found) else {}
        return Response(_encoder.encode([api.listed(manager, sb) for sb in page]),
                        media_type="application/json", headers=headers)

    async def get(request: Request) -> Response:
        return _json(api.listed(api.manager(request), api.sandbox(request), detail=True))

    async def kill(request: Request) -> Response:
        manager = api.manager(request)
        sid = api.sandbox_id(request)
        sandbox_access.check_visible(request, sid)
        await manager.delete(sid)
        return Response(status_code=204)

    async def set_timeout(request: Request) -> Response:
        sb = api.sandbox(request)
        req = decode_typed(_timeout_decoder, await _body(request))
        await sandbox_access.set_timeout(request, sb, req.timeout)
        return Response(status_code=204)

    async def pause(request: Request) -> Response:
        sb = api.sandbox(request)
        decode_typed(_pause_decoder, await _body(request))
        await sb.pause()
        return Response(status_code=204)

    async def resume(request: Request) -> Response:
        # Deprecated in E2B for /connect; 409 when the sandbox is not paused.
        sb = api.sandbox(request)
        req = decode_typed(_connect_decoder, await _body(request))
        await sb.resume()
        await sandbox_access.set_timeout(request, sb, 15 if req.timeout is None else req.timeout)
        return _json(api.created(sb), 201)

    def connect(default_timeout: int) -> Handler:
        async def connect_sandbox(request: Request) -> Response:
            # Resumes a paused sandbox (201); a running one answers 200. The timeout only
            # ever extends the sandbox's life.
            manager = api.manager(request)
            sb = api.sandbox(request)
            req = decode_typed(_connect_decoder, await _body(request))
            timeout = default_timeout if req.timeout is None else req.timeout
            status = 200
            if sb.paused:
                await sb.resume()
                status = 201
            if sb.expires_at < manager.clock() + timeout:
                await sandbox_access.set_timeout(request, sb, timeout)
            return _json(api.created(sb), status)
        return connect_sandbox

    p = cfg.prefix
    s = p + "/sandboxes/{id}"
    handlers: list[tuple[str, Handler, str]] = [
        (p + "/sandboxes", create(15), "POST"),
        (p + "/v2/sandboxes", create(300), "POST"),
        (p + "/sandboxes", list_v1, "GET"),
        (p + "/v2/sandboxes", list_v2, "GET"),
        (s, get, "GET"),
        (s, kill, "DELETE"),
        (s + "/timeout", set_timeout, "POST"),
        (s + "/pause", pause, "POST"),
        (s + "/resume", resume, "POST"),
        (s + "/connect", connect(15), "POST"),
        (p + "/v2/sandboxes/{id}/connect", connect(300), "POST"),
    ]
    async def unknown(request: Request) -> Response:
        # E2B endpoints not served here (metrics, logs, templates, snapshots...): a 404 the
        # SDK can parse, rather than the OpenAI-shaped one.
        raise NotFound(f"{request.method} {request.url.path} is not served by this gateway.")

    found = [Route(path, _e2b(h), methods=[method]) for path, h, method in handlers]
    return [*found, Route(p + "/{rest:path}", _e2b(unknown),
                          methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
