"""The contract every sandbox backend fulfils: start a guest whose agent answers on a byte
stream, open that stream, tell whether the guest is alive, stop it and remove all it had."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple, Protocol

from gateway_core.sandbox_types import Resources
from gateway_sandbox.image.template import TemplateImage

__all__ = ["Backend", "EgressRoute", "Guest"]


class EgressRoute(NamedTuple):
    """How a guest's egress reaches the proxy: the proxy listens on ``host_path`` (one per
    guest, so it knows who calls); the agent inside connects to the Unix socket ``unix``
    (a jail, where ``host_path`` is bound) or to the host's vsock port ``vsock_port``."""

    host_path: Path
    unix: str | None = None
    vsock_port: int | None = None
    # The uid the guest's side connects as (the socket is given to it), if not the host's.
    uid: int | None = None


class Guest(Protocol):
    """One started guest (a microVM or a jailed process tree) with the agent running in it.

    The agent is ``gateway_sandbox/agent/agent.py`` (``AGENT_PATH``), run in the guest with
    ``python3 agent.py --vsock PORT | --unix PATH | --tty DEVICE | --stdio --workdir /work``;
    the manager speaks ``gateway_sandbox.protocol`` to it. Code runs with ``/work`` as its
    working directory, and the file API is confined to it.
    """

    @property
    def id(self) -> str: ...

    @property
    def backend(self) -> str: ...

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the guest agent's byte stream (vsock, serial port or pipe). The first
        frame read from a new stream is the agent's hello. The manager opens one stream per
        guest and keeps it for the guest's life."""
        ...

    def alive(self) -> bool:
        """False once the guest has exited or crashed (its exit has been noticed and reaped)."""
        ...

    @property
    def keeps_connection_when_paused(self) -> bool:
        """True when the agent's stream survives pause/resume (a frozen jail); False when
        resume needs a new one (a VM restored from a snapshot)."""
        ...

    async def pause(self) -> None:
        """Stop the guest using CPU (and, where it can, memory), keeping its state. Raise
        ``gateway_sandbox.errors.SandboxConflict`` when this guest cannot pause."""
        ...

    async def resume(self) -> None:
        """Undo pause(); the agent answers again (on a new stream, see above)."""
        ...

    def egress_route(self) -> EgressRoute:
        """Where the egress proxy listens for this guest and how the agent reaches it
        (may change across pause/resume: a restored VM lives in a new directory)."""
        ...

    async def stop(self) -> None:
        """Kill the guest and remove every file, socket, process and device it had.
        Idempotent: safe to call twice, and after the guest died on its own."""
        ...


class Backend(Protocol):
    """A way to run guests. Owned by the SandboxManager, which calls start() once before
    the first guest and aclose() once at the end."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Prepare, and reap whatever a crashed previous run left in the state directory.
        Raise ``gateway_sandbox.errors.BackendUnavailable`` with the reason when guests
        cannot run on this host; the API then answers 503 with it."""
        ...

    async def start_guest(self, sandbox_id: str, resources: Resources | None = None,
                          template: TemplateImage | None = None) -> Guest:
        """Start one guest and return once its agent is ready to accept ``open_stream``.
        ``resources``: cpus, memory and disk quota (None: the config's defaults).
        ``template``: a built template to root the guest in (None: the backend's own root).
        On failure (raise BackendUnavailable) or cancellation, leave nothing behind."""
        ...

    def describe(self) -> dict[str, object]:
        """What readiness should say about this backend (isolation, limits in force, why)."""
        ...

    async def aclose(self) -> None:
        """Stop every guest this backend still has."""
        ...
