"""Fixtures for sandbox tests: real bubblewrap jails under a per-test state dir. Tests skip
with bwrap's own reason where the host cannot create the namespaces."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway_core.config.sandbox import PoolConfig, SandboxConfig, SandboxLimits
from gateway_sandbox import BackendUnavailable, SandboxManager
from gateway_sandbox.runtimes import RUNTIMES, find_tool


def make_config(state_dir: Path, limits: dict[str, object] | None = None,
                **pool: object) -> SandboxConfig:
    lim: dict[str, object] = {"max_processes": 64, "memory_mb": 256, "max_exec_timeout_s": 60.0,
                              "default_exec_timeout_s": 20.0, **(limits or {})}
    return SandboxConfig(
        backend="process",
        state_dir=str(state_dir),
        pool=PoolConfig(**{"min_ready": 1, "max_total": 4, **pool}),  # type: ignore[arg-type]
        limits=SandboxLimits(**lim),  # type: ignore[arg-type]
        reap_interval_s=3600.0,  # tests call reap() themselves
    )


def require_runtime(name: str) -> None:
    rt = RUNTIMES[name]
    if find_tool(rt.tool, SandboxConfig().runtime_path) is None:
        pytest.skip(f"the {name} toolchain (`{rt.tool}`) is not installed on this host")


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is mode 0700, and the jails run as their own uids.
    d = Path(tempfile.mkdtemp(prefix="agw-sbx-test-"))
    os.chmod(d, 0o711)
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def manager(state_dir: Path) -> AsyncIterator[SandboxManager]:
    m = SandboxManager.from_config(make_config(state_dir))
    try:
        await m.start()
    except BackendUnavailable as exc:
        pytest.skip(f"bubblewrap jails are unavailable here: {exc.message}")
    try:
        yield m
    finally:
        await asyncio.wait_for(m.aclose(), 60)
