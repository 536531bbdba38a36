"""Sandboxes belong to the key that created them: the checks the sandbox routes (ours and
E2B's) make — visible to their creator, to its team's keys when it shares, and to admin
keys (anyone else gets 404) — and the caller's sandbox quotas on create."""

from __future__ import annotations

from starlette.requests import Request

from gateway_core.errors import NotFound
from gateway_llm.limiter import LimitStore
from gateway_sandbox import Sandbox, SandboxManager
from gateway_server.access import AccessControl, Principal
from gateway_server.routes.front_door import principal_of

__all__ = ["check_quota", "check_visible", "created", "deleted", "visible"]


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


def check_quota(request: Request, manager: SandboxManager) -> None:
    access, principal = _access(request)
    if access is not None and principal is not None:
        access.check_sandbox_count(principal, {sb.id for sb in manager.list()})


async def created(request: Request, manager: SandboxManager, sb: Sandbox) -> None:
    """Record the new sandbox's owner and take its lifetime from the caller's quota; past
    the quota the sandbox is deleted again and the caller gets 429."""
    access, principal = _access(request)
    if access is None or principal is None:
        return
    seconds = max(0.0, sb.expires_at - manager.clock())
    try:
        reserved = await access.reserve_sandbox_seconds(principal, seconds, _store(request))
    except BaseException:
        await manager.delete(sb.id)
        raise
    access.created_sandbox(principal, sb.id, reserved, seconds)


async def deleted(request: Request, sandbox_id: str) -> None:
    access, _ = _access(request)
    if access is not None:
        await access.deleted_sandbox(sandbox_id, _store(request))

