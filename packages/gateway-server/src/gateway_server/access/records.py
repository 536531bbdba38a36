"""The shapes of virtual keys and teams: what the admin API and the CLI take (create and
update bodies, validated on the type) and answer, and the caller a request runs as."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "ADMIN",
    "OPEN",
    "STATIC",
    "KeySpec",
    "KeyUpdate",
    "LimitFields",
    "Period",
    "Principal",
    "TeamSpec",
    "TeamUpdate",
]

Period = Literal["day", "month", "total"]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
_PerMinute = Annotated[int, msgspec.Meta(ge=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Usd = Annotated[float, msgspec.Meta(ge=0, le=1e7)]
_Model = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Models = Annotated[list[_Model], msgspec.Meta(max_length=1000)]
_Meta = Annotated[dict[str, str], msgspec.Meta(max_length=64)]


class LimitFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What keys and teams both carry. Budgets count per ``period`` (UTC days, calendar
    months, or in total); a left-out limit is no limit."""

    models: _Models = msgspec.field(default_factory=lambda: ["*"])
    rpm: _PerMinute | None = None
    tpm: _PerMinute | None = None
    max_cost: _Usd | None = None  # USD
    max_tokens: _Count | None = None
    period: Period = "month"
    max_sandboxes: _Count | None = None  # at once
    max_sandbox_seconds: _Count | None = None  # of sandbox lifetime per period
    metadata: _Meta = msgspec.field(default_factory=dict)


class TeamSpec(LimitFields, kw_only=True, forbid_unknown_fields=True):
    name: _Name
    id: _Id | None = None  # chosen by the caller, or made up


class KeySpec(LimitFields, kw_only=True, forbid_unknown_fields=True):
    name: _Name
    team: _Id | None = None
    owner: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    # RFC 3339 with a zone, in the future.
    expires_at: datetime.datetime | None = None
    # The team's other keys may see and use this key's sandboxes.
    share_sandboxes_with_team: bool = False
    # A child key (one minted for a sandbox): it may do no more than this key, whose
    # limits and budgets its spend also counts against; revoking the parent stops it.
    parent: _Id | None = None


class _LimitUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields left out stay as they are; null clears a limit."""

    models: _Models | UnsetType = UNSET
    rpm: _PerMinute | UnsetType | None = UNSET
    tpm: _PerMinute | UnsetType | None = UNSET
    max_cost: _Usd | UnsetType | None = UNSET
    max_tokens: _Count | UnsetType | None = UNSET
    period: Period | UnsetType = UNSET
    max_sandboxes: _Count | UnsetType | None = UNSET
    max_sandbox_seconds: _Count | UnsetType | None = UNSET
    metadata: _Meta | UnsetType = UNSET


class TeamUpdate(_LimitUpdate, kw_only=True, forbid_unknown_fields=True):
    name: _Name | UnsetType = UNSET


class KeyUpdate(_LimitUpdate, kw_only=True, forbid_unknown_fields=True):
    name: _Name | UnsetType = UNSET
    team: _Id | UnsetType | None = UNSET
    owner: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType | None = UNSET
    expires_at: datetime.datetime | UnsetType | None = UNSET
    share_sandboxes_with_team: bool | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request runs as. ``kind``: an admin key, a static ``api_keys`` key (no limits),
    a virtual key, or nobody (a gateway without keys)."""

    kind: Literal["admin", "static", "virtual", "open"]
    key_id: str
    name: str = ""
    team_id: str | None = None
    key: LimitFields | None = None
    team: LimitFields | None = None
    share_with_team: bool = False
    expires_at: float | None = None  # wall clock
    parent_id: str | None = None  # a child key's parent
    parent: LimitFields | None = None

    @property
    def admin(self) -> bool:
        return self.kind == "admin"

    @property
    def limited(self) -> bool:
        return self.kind == "virtual"

    def allows(self, model: str) -> bool:
        for spec in (self.key, self.parent, self.team):
            if spec is not None and "*" not in spec.models and model not in spec.models:
                return False
        return True

    def sees(self, owner: Principal | None) -> bool:
        """Whether this caller may see a sandbox ``owner`` created."""
        if owner is None or self.kind in ("admin", "open"):
            return True
        if owner.key_id == self.key_id:  # static api_keys share one id, as before keys
            return True
        return (owner.share_with_team and owner.team_id is not None
                and owner.team_id == self.team_id)


ADMIN = Principal("admin", "admin", "admin")
STATIC = Principal("static", "static", "static")
OPEN = Principal("open", "open", "open")
