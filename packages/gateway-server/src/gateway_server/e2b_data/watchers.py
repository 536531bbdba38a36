"""Directory watches for envd's ``WatchDir`` and ``CreateWatcher``/``GetWatcherEvents``:
the sandbox's file listing, compared with the one before. Between two looks a file that
came and went is not seen, and several writes are one; creates, writes, removes and mode
changes are reported by name, relative to the watched directory."""

from __future__ import annotations

import posixpath
import secrets

import msgspec

from gateway_core.errors import InvalidRequest, NotFound, RateLimited
from gateway_core.sandbox_types import FileEntry
from gateway_sandbox import Sandbox
from gateway_server.e2b_data.scope import from_guest

__all__ = ["Change", "Watch", "Watchers", "diff", "look"]

# How deep a recursive watch lists (the agent caps the entries of one listing anyway).
_RECURSIVE_DEPTH = 32
_MAX_WATCHES = 256

Kind = str  # "create" | "write" | "remove" | "chmod"


class Change(msgspec.Struct, frozen=True):
    name: str
    kind: Kind
    entry: FileEntry | None = None


class Watch(msgspec.Struct, kw_only=True):
    sandbox: Sandbox
    path: str
    recursive: bool
    include_entry: bool
    seen: dict[str, FileEntry]


async def look(sb: Sandbox, path: str, recursive: bool) -> dict[str, FileEntry]:
    """What is under ``path`` now, by name relative to it."""
    top = await sb.stat_file(path)
    if top.type != "dir":
        raise InvalidRequest(f"{path} is not a directory.", param="path")
    entries, _ = await sb.list_files(path, depth=_RECURSIVE_DEPTH if recursive else 1)
    base = from_guest(top.path)
    return {posixpath.relpath(from_guest(e.path), base): e for e in entries}


def diff(before: dict[str, FileEntry], after: dict[str, FileEntry]) -> list[Change]:
    changes: list[Change] = []
    for name, e in after.items():
        old = before.get(name)
        if old is None:
            changes.append(Change(name, "create", e))
        elif (old.size, old.mtime, old.type) != (e.size, e.mtime, e.type):
            changes.append(Change(name, "write", e))
        elif old.mode != e.mode:
            changes.append(Change(name, "chmod", e))
    changes.extend(Change(name, "remove") for name in before if name not in after)
    return changes


class Watchers:
    """The open ``CreateWatcher`` watches, by id; those of gone sandboxes are dropped."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}

    async def create(self, sb: Sandbox, path: str, recursive: bool,
                     include_entry: bool = False) -> str:
        for wid in [w for w, watch in self._watches.items()
                    if watch.sandbox.status in ("closed", "dead")]:
            del self._watches[wid]
        if len(self._watches) >= _MAX_WATCHES:
            raise RateLimited(f"At most {_MAX_WATCHES} watchers may be open; remove one.")
        seen = await look(sb, path, recursive)
        wid = "w_" + secrets.token_hex(8)
        self._watches[wid] = Watch(sandbox=sb, path=path, recursive=recursive,
                                   include_entry=include_entry, seen=seen)
        return wid

    def get(self, sb: Sandbox, watcher_id: str) -> Watch:
        watch = self._watches.get(watcher_id)
        if watch is None or watch.sandbox is not sb:
            raise NotFound(f"No watcher {watcher_id!r} in this sandbox.", param="watcher_id")
        return watch

    async def changes(self, sb: Sandbox, watcher_id: str) -> list[Change]:
        watch = self.get(sb, watcher_id)
        now = await look(sb, watch.path, watch.recursive)
        found = diff(watch.seen, now)
        watch.seen = now
        return found

    def remove(self, sb: Sandbox, watcher_id: str) -> None:
        self.get(sb, watcher_id)
        del self._watches[watcher_id]
