"""Configuration of the HTTP service: listening, auth, limits and logging."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["E2BConfig", "LoggingConfig", "ServerConfig"]


def _default_templates() -> dict[str, str]:
    return {"base": "python", "code-interpreter-v1": "python"}


class E2BConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """E2B's control-plane REST API (``E2B_API_URL`` = the gateway's URL + ``prefix``),
    under the gateway's API keys (the SDK sends ``X-API-Key``)."""

    enabled: bool = False
    prefix: Annotated[str, msgspec.Meta(pattern=r"^(/[A-Za-z0-9._~-]+)+$")] = "/e2b"
    # E2B template ids -> runtime names; a runtime's own name is a template id as well.
    templates: dict[str, str] = msgspec.field(default_factory=_default_templates)
    # Returned as each sandbox's ``domain``; left out, the SDK relies on E2B_SANDBOX_URL.
    domain: str | None = None


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Bearer keys accepted on /v1/*. Empty means no auth, which is only allowed on loopback
    # unless allow_unauthenticated is set.
    api_keys: list[str] = msgspec.field(default_factory=list)
    allow_unauthenticated: bool = False
    # Keys for /admin/* (virtual keys, teams, usage); they may also use /v1/* without
    # limits. Setting any turns the key and usage store ([storage]) on.
    admin_keys: list[str] = msgspec.field(default_factory=list)
    # The gateway's URL as code inside a sandbox reaches it, for a sandbox created with
    # "llm" (OPENAI_BASE_URL = this + "/v1", ANTHROPIC_BASE_URL). Unset: the egress proxy's
    # route to this gateway, http://gateway.sandbox.internal.
    sandbox_gateway_url: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    graceful_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 75.0
    e2b: E2BConfig = msgspec.field(default_factory=E2BConfig)

    def __repr__(self) -> str:
        shown = {f: getattr(self, f) for f in self.__struct_fields__
                 if f not in ("api_keys", "admin_keys")}
        return (f"ServerConfig(api_keys=<{len(self.api_keys)} keys>, "
                f"admin_keys=<{len(self.admin_keys)} keys>, ") + ", ".join(
            f"{k}={v!r}" for k, v in shown.items()) + ")"


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    access_log: bool = True
