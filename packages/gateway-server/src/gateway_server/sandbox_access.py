"""Sandboxes belong to the key that created them: the checks the sandbox routes (ours and
E2B's) make — visible to their creator, to its team's keys when it shares, and to admin
keys (anyone else gets 404) — and the caller's sandbox quotas on create."""

from __future__ import annotations

from starlette.requests import Request

from gateway_core.errors import InvalidRequest, NotFound
from gateway_core.sandbox_types import SandboxLLM
from gateway_llm.limiter import LimitStore
from gateway_sandbox import Sandbox, SandboxManager
from gateway_sandbox.egress import GATEWAY_HOST
from gateway_server.access import AccessControl, Principal
from gateway_server.access.records import OPEN
from gateway_server.routes.front_door import principal_of

__all__ = ["check_visible", "child_key", "created", "hold_quota", "llm_usage",
           "network_with_gateway", "not_created", "routes_gateway", "visible"]


def _access(request: Request) -> tuple[AccessControl | None, Principal | None]:
    return request.app.state.gateway.access, principal_of(request)


def _store(request: Request) -> LimitStore | None:
    limiter = request.app.state.gateway.router.limiter
    return None if limiter is None else limiter.store


def check_visible(request: Request, sandbox_id: str) -> None:
    """404 (as for an unknown id) when the caller may not see the sandbox."""
    access, principal = _access(request)
    if access is not None and not access.owns(principal, sandbox_id):
        raise NotFound(f"No sandbox with id {sandbox_id!r}.", param="id")


def visible(request: Request, sandboxes: list[Sandbox]) -> list[Sandbox]:
    access, principal = _access(request)
    if access is None or principal is None:
        return sandboxes
    return [sb for sb in sandboxes if access.owns(principal, sb.id)]


async def hold_quota(request: Request) -> list[str]:
    """One of the caller's max_sandboxes (key and team; 429 when it has them all): the
    slots to hand to ``created``, or to ``not_created`` if the create fails."""
    access, principal = _access(request)
    if access is None or principal is None:
        return []
    return await access.hold_sandbox(principal, _store(request))


async def child_key(request: Request, manager: SandboxManager, llm: SandboxLLM | None,
                    ) -> tuple[str | None, dict[str, str]]:
    """For a create asking for ``llm``: a child key of the caller's (its id) and what goes
    into the sandbox's environment: the keys, and the base URLs (``sandbox_gateway_url``,
    else the egress proxy's route to this gateway)."""
    if llm is None:
        return None, {}
    access, principal = _access(request)
    if access is None:
        raise InvalidRequest("llm needs the key store ([storage] or server.admin_keys).",
                             param="llm", code="key_store_disabled")
    row = await access.mint_child(principal or OPEN, llm, manager.cfg.max_lifetime_s)
    assert row.secret is not None
    env = {"OPENAI_API_KEY": row.secret, "ANTHROPIC_API_KEY": row.secret}
    base = request.app.state.gateway.config.server.sandbox_gateway_url
    if not base and routes_gateway(manager):
        base = f"http://{GATEWAY_HOST}"
    if base:
        env["OPENAI_BASE_URL"] = base.rstrip("/") + "/v1"
        env["ANTHROPIC_BASE_URL"] = base.rstrip("/")
    return row.id, env


def routes_gateway(manager: SandboxManager) -> bool:
    """Whether sandboxes reach this gateway through the egress proxy."""
    return manager.egress is not None and manager.egress.gateway is not None


def network_with_gateway(manager: SandboxManager, asked: list[str] | None) -> list[str]:
    """A child-key sandbox's allow-list: what it asked for (or the default) and the
    gateway's own name, which the proxy routes to this gateway."""
    assert manager.egress is not None
    base = asked if asked is not None else [str(p) for p in manager.egress.default_allow]
    return [*base, GATEWAY_HOST] if GATEWAY_HOST not in base else base


async def created(request: Request, manager: SandboxManager, sb: Sandbox,
                  child: str | None = None, slots: list[str] | None = None) -> None:
    """Record the new sandbox's owner (and child key, and the max_sandboxes slots it
    holds) and take its lifetime from the caller's quota; past the quota the sandbox is
    deleted again and the caller gets 429."""
    access, principal = _access(request)
    if access is None:
        return
    access.holds(sb.id, slots or [])  # given back however the sandbox ends
    if child is not None:
        access.child_minted(sb.id, child)
    if principal is None:
        return
    seconds = max(0.0, sb.expires_at - manager.clock())
    try:
        reserved = await access.reserve_sandbox_seconds(principal, seconds, _store(request))
    except BaseException:
        await manager.delete(sb.id)  # its on_deleted hook drops the owner and child key
        raise
    access.created_sandbox(principal, sb.id, reserved, seconds)


async def set_timeout(request: Request, sb: Sandbox, timeout_s: float) -> None:
    """Give the sandbox ``timeout_s`` more seconds to live from now, after taking what
    that adds to its life from the caller's max_sandbox_seconds (429 past it)."""
    access, _ = _access(request)
    if access is not None:
        await access.extend_sandbox(sb.id, timeout_s, _store(request))
    sb.set_timeout(timeout_s)


async def llm_usage(request: Request, sandbox_id: str) -> dict[str, object] | None:
    """The spend of the sandbox's child key so far (None: it has none)."""
    access, _ = _access(request)
    key = None if access is None else access.child_of(sandbox_id)
    if access is None or key is None:
        return None
    await access.usage.flush()
    rows = (await access.usage.report(key=key)).data
    total = rows[0] if rows else None
    return {"key_id": key, "requests": total.requests if total else 0,
            "input_tokens": total.input_tokens if total else 0,
            "output_tokens": total.output_tokens if total else 0,
            "cost": total.cost if total else 0.0}


async def not_created(request: Request, child: str | None, slots: list[str]) -> None:
    """The create failed: give back its max_sandboxes slots, revoke the child key minted
    for it."""
    access, _ = _access(request)
    if access is None:
        return
    await access.let_go_sandbox(slots, _store(request))
    if child is not None:
        await access.keys.revoke_key(child)


