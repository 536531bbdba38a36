"""``agentic-gateway keys|teams|usage ...``: the admin API's operations straight on the
configured database (so the first key can be made before the gateway runs). Changes are
announced on Redis like the API's, so running gateways drop their cached copies."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from gateway_core.config import Config, StorageConfig
from gateway_core.errors import GatewayError
from gateway_llm.prices import Prices
from gateway_server.access.control import AccessControl
from gateway_server.access.records import KeySpec, KeyUpdate, TeamSpec, TeamUpdate
from gateway_server.access.usage import GroupBy

__all__ = ["add_parsers", "run"]

_encoder = msgspec.json.Encoder()


def _limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated aliases allowed ('*': all)")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--max-cost", type=float, help="USD per period")
    p.add_argument("--max-tokens", type=int, help="tokens per period")
    p.add_argument("--period", choices=["day", "month", "total"])
    p.add_argument("--max-sandboxes", type=int)
    p.add_argument("--max-sandbox-seconds", type=int)
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                config_help: str) -> None:
    keys = sub.add_parser("keys", help="virtual keys: create, list, get, update, rotate, "
                          "revoke")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="create a key (its secret is printed once)")
    c.add_argument("--name", required=True)
    c.add_argument("--team")
    c.add_argument("--owner")
    c.add_argument("--expires-at", help="RFC 3339 time with a zone")
    c.add_argument("--share-sandboxes", action="store_true",
                   help="the team's other keys may use this key's sandboxes")
    _limit_flags(c)
    u = ks.add_parser("update", help="change a key's fields")
    u.add_argument("id")
    u.add_argument("--name")
    u.add_argument("--team")
    u.add_argument("--owner")
    u.add_argument("--expires-at")
    _limit_flags(u)
    ls = ks.add_parser("list")
    ls.add_argument("--team")
    ls.add_argument("--include-revoked", action="store_true")
    for name in ("get", "rotate", "revoke"):
        ks.add_parser(name).add_argument("id")
    teams = sub.add_parser("teams", help="teams: create, list, get, update, revoke")
    ts = teams.add_subparsers(dest="teams_command", required=True)
    c = ts.add_parser("create")
    c.add_argument("--name", required=True)
    c.add_argument("--id")
    _limit_flags(c)
    u = ts.add_parser("update")
    u.add_argument("id")
    u.add_argument("--name")
    _limit_flags(u)
    ts.add_parser("list").add_argument("--include-revoked", action="store_true")
    for name in ("get", "revoke"):
        ts.add_parser(name).add_argument("id")
    usage = sub.add_parser("usage", help="the usage report, as GET /admin/usage")
    usage.add_argument("--key")
    usage.add_argument("--team")
    usage.add_argument("--model")
    usage.add_argument("--group-by", choices=["day", "model", "key", "team"])
    for p in (usage, *ks.choices.values(), *ts.choices.values()):
        p.add_argument("--config", help=config_help)


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "models":
            value = [m.strip() for m in str(value).split(",") if m.strip()]
        elif name == "metadata":
            value = dict(item.partition("=")[::2] for item in value)
        elif name == "share_sandboxes":
            if not value:
                continue
            name = "share_sandboxes_with_team"
        out[name] = value
    return out


_LIMITS = ("models", "rpm", "tpm", "max_cost", "max_tokens", "period", "max_sandboxes",
           "max_sandbox_seconds", "metadata")
_KEY = ("name", "team", "owner", "expires_at", "share_sandboxes", *_LIMITS)
_TEAM = ("name", "id", *_LIMITS)


async def _dispatch(access: AccessControl, args: argparse.Namespace) -> object:
    store = access.keys
    if args.command == "keys":
        cmd = args.keys_command
        if cmd == "create":
            return (await store.create_key(msgspec.convert(_fields(args, _KEY), KeySpec))).view()
        if cmd == "update":
            update = msgspec.convert(_fields(args, _KEY), KeyUpdate)
            return (await store.update_key(args.id, update)).view()
        if cmd == "list":
            return [r.view() for r in await store.list_keys(args.team, args.include_revoked)]
        op: Callable[[str], Awaitable[object]] = {
            "get": store.get_key, "rotate": store.rotate_key, "revoke": store.revoke_key}[cmd]
        return (await op(args.id)).view()  # type: ignore[attr-defined]
    if args.command == "teams":
        cmd = args.teams_command
        if cmd == "create":
            spec = msgspec.convert(_fields(args, _TEAM), TeamSpec)
            return (await store.create_team(spec)).view()
        if cmd == "update":
            team_update = msgspec.convert(_fields(args, _TEAM), TeamUpdate)
            return (await store.update_team(args.id, team_update)).view()
        if cmd == "list":
            return [r.view() for r in await store.list_teams(args.include_revoked)]
        team_op = {"get": store.get_team, "revoke": store.revoke_team}[cmd]
        return (await team_op(args.id)).view()
    group: GroupBy | None = args.group_by
    return await access.usage.report(key=args.key, team=args.team, model=args.model,
                                     group_by=group)


async def _run(config: Config, args: argparse.Namespace) -> object:
    storage = config.key_store or StorageConfig()
    access = AccessControl(config, storage, Prices(config.llm.models))
    await access.db.start()
    await access.keys.start()
    try:
        return await _dispatch(access, args)
    finally:
        await access.keys.aclose()
        await access.db.aclose()


def run(config: Config, args: argparse.Namespace) -> int:
    """Run one keys/teams/usage command; print its answer as JSON."""
    # Logs to stderr: stdout is the answer, as JSON.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        result = asyncio.run(_run(config, args))
    except msgspec.ValidationError as exc:
        print(f"agentic-gateway: invalid value: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"agentic-gateway: {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(_encoder.encode(result).decode() + "\n")
    return 0
