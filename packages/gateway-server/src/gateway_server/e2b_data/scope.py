"""What every data-plane handler shares: the sandbox the request addresses (set by the
data plane before the handler runs), E2B's paths mapped onto the guest's, and the gateway's
errors as E2B's (HTTP ``{"code", "message"}`` and connect-rpc codes), naming the field."""

from __future__ import annotations

import contextvars
import posixpath

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from gateway_core.errors import GatewayError, InvalidRequest
from gateway_sandbox import Sandbox
from gateway_sandbox.guest_layout import GUEST_WORKDIR

__all__ = ["E2B_HOME", "connect_error", "current_sandbox", "from_guest", "http_message",
           "sandbox_var", "to_guest"]

#: E2B's default user's home, where its SDKs and docs put files; it is our work dir.
E2B_HOME = "/home/user"

sandbox_var: contextvars.ContextVar[Sandbox] = contextvars.ContextVar("e2b_sandbox")


def current_sandbox() -> Sandbox:
    """The sandbox of the request being served (the data plane checked its access token)."""
    sb = sandbox_var.get()
    sb.touch()
    return sb


def to_guest(path: str, field: str = "path") -> str:
    """An E2B path as the guest's: ``/home/user/...`` (and ``~``) is the work dir, relative
    paths are under it; anything else is left for the sandbox to accept or refuse."""
    if not path:
        raise InvalidRequest(f"{field} must be a non-empty path.", param=field)
    if path == "~" or path.startswith("~/"):
        path = E2B_HOME + path[1:]
    if path == E2B_HOME or path.startswith(E2B_HOME + "/"):
        return GUEST_WORKDIR + path[len(E2B_HOME):]
    if not path.startswith("/"):
        return posixpath.join(GUEST_WORKDIR, path)
    return path


def from_guest(rel: str) -> str:
    """A path the agent reports (relative to the work dir) as an absolute guest path."""
    if rel.startswith("/"):
        return rel
    return GUEST_WORKDIR if rel in ("", ".") else posixpath.join(GUEST_WORKDIR, rel)


# Our parameter names -> envd's request fields, so an error names what the client sent.
_FIELD = {"body": "file"}
_RPC_FIELD = {"src": "source", "dst": "destination", "cwd": "process.cwd",
              "cmd": "process.cmd", "pid": "process.pid", "body": "path"}


def http_message(exc: GatewayError, fields: dict[str, str] = _FIELD) -> str:
    if exc.param:
        return f"{exc.message} (field: {fields.get(exc.param, exc.param)})"
    return exc.message


def _code(exc: GatewayError) -> Code:
    if exc.status == 409:
        if exc.code == "already_exists":
            return Code.ALREADY_EXISTS
        if exc.code == "sandbox_dead":
            return Code.UNAVAILABLE
        return Code.FAILED_PRECONDITION
    return _STATUS_CODES.get(exc.status, Code.INTERNAL if exc.status >= 500 else Code.UNKNOWN)


_STATUS_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    408: Code.DEADLINE_EXCEEDED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
    507: Code.RESOURCE_EXHAUSTED,
}


def connect_error(exc: GatewayError) -> ConnectError:
    """The gateway's error as the connect-rpc error the SDK maps (not_found ->
    NotFoundException / FileNotFoundException, invalid_argument, already_exists, ...)."""
    return ConnectError(_code(exc), http_message(exc, _RPC_FIELD))
