"""Lifetimes that fit an agent: extending the timeout (injected clock), activity resetting
the idle TTL, pause (no CPU, calls refused with 409) and resume with state intact,
on_timeout = "pause", per-sandbox resources within caps, and nothing left after delete."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway_core.errors import InvalidRequest
from gateway_sandbox import SandboxManager
from gateway_sandbox.errors import SandboxConflict, SandboxPaused
from tests.sandbox.conftest import make_config
from tests.sandbox.test_manager import FakeClock, cgroup_dirs


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mounts").read_text()
    return [line.split()[1] for line in text.splitlines()
            if line.split()[1].startswith(str(path))]


async def test_timeout_extends_past_the_original_expiry(state_dir: Path) -> None:
    clock = FakeClock()
    async with SandboxManager.from_config(make_config(state_dir), clock=clock) as m:
        sb = await m.create("python", timeout_s=60)
        t0 = clock.now
        clock.now = t0 + 50
        sb.set_timeout(60)
        assert sb.expires_at == t0 + 110
        clock.now = t0 + 70  # past the original expiry
        assert await m.reap() == []
        with pytest.raises(InvalidRequest) as capped:
            sb.set_timeout(m.cfg.max_lifetime_s + 1)
        assert capped.value.param == "timeout_s"
        # Activity resets the idle TTL; without it the sandbox goes at its idle expiry.
        m.idle_ttl_s = 30
        sb.touch()
        clock.now = t0 + 95
        assert await m.reap() == []
        clock.now = t0 + 111
        assert await m.reap() == [sb.id]


async def test_pause_uses_no_cpu_and_resume_keeps_state(state_dir: Path) -> None:
    clock = FakeClock()
    async with SandboxManager.from_config(make_config(state_dir), clock=clock) as m:
        if not m.backend.cgroups.can_freeze:  # type: ignore[attr-defined]
            pytest.skip("no cgroup freezer on this host")
        sb = await m.create("python", timeout_s=60)
        ctx = await sb.create_context()
        await sb.execute("import json\ndata = {'n': 41}", context_id=ctx.id)
        await sb.start_command("while :; do :; done")
        await asyncio.sleep(0.3)
        guest = sb.guest
        busy0 = guest.cpu_seconds()  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
        assert guest.cpu_seconds() > busy0  # type: ignore[attr-defined]
        await sb.pause()
        assert sb.info().status == "paused"
        frozen = guest.cpu_seconds()  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        assert guest.cpu_seconds() == frozen  # type: ignore[attr-defined]
        with pytest.raises(SandboxPaused) as paused:
            await sb.execute("1", context_id=ctx.id)
        assert paused.value.status == 409 and "resume" in paused.value.message
        with pytest.raises(SandboxPaused):
            await sb.list_files()
        with pytest.raises(SandboxConflict):
            await sb.pause()
        # Paused past its original expiry, after a timeout: still there.
        sb.set_timeout(120)
        clock.now += 100
        assert await m.reap() == []
        await sb.resume()
        assert sb.info().status == "ready"
        r = await sb.execute("json.dumps(data)", context_id=ctx.id)
        assert r.results[0].data == "'{\"n\": 41}'"
        with pytest.raises(SandboxConflict) as not_paused:
            await sb.resume()
        assert not_paused.value.status == 409 and not_paused.value.code == "sandbox_not_paused"
        # Paused and frozen, then deleted: nothing is left.
        await sb.pause()
        await sb.close()
        assert not (m.backend.dir / sb.id).exists()  # type: ignore[attr-defined]


async def test_on_timeout_pause(state_dir: Path) -> None:
    clock = FakeClock()
    async with SandboxManager.from_config(make_config(state_dir), clock=clock) as m:
        if not m.backend.cgroups.can_freeze:  # type: ignore[attr-defined]
            pytest.skip("no cgroup freezer on this host")
        sb = await m.create("python", timeout_s=10, on_timeout="pause")
        await sb.execute("v = 3", context="default")
        clock.now += 11
        assert await m.reap() == []
        assert sb.status == "paused" and sb.expires_at == clock.now + m.cfg.max_paused_s
        await sb.resume()
        assert (await sb.execute("v", context="default")).results[0].data == "3"
        # A paused sandbox is deleted once its paused life is over.
        await sb.pause()
        clock.now += m.cfg.max_paused_s + 1
        assert await m.reap() == [sb.id]


async def test_resources_within_caps_and_nothing_leaks(state_dir: Path) -> None:
    async with SandboxManager.from_config(make_config(state_dir)) as m:
        for field, value in (("cpus", 99.0), ("memory_mb", 10**6), ("disk_mb", 10**7),
                             ("disk_mb", 0)):
            with pytest.raises(InvalidRequest) as bad:
                await m.create("python", **{field: value})  # type: ignore[arg-type]
            assert bad.value.param == field
        sb = await m.create("python", cpus=0.5, memory_mb=64, disk_mb=8)
        assert sb.info().resources is not None and sb.info().resources.memory_mb == 64
        # The cgroup carries the sandbox's own limit (v1 memory or v2).
        limit_files = [os.path.join(d, sb.id, f) for d in cgroup_dirs()
                       for f in ("memory.limit_in_bytes", "memory.max")
                       if os.path.exists(os.path.join(d, sb.id, f))]
        if limit_files:
            assert any(Path(f).read_text().strip() == str(64 << 20) for f in limit_files)
        r = await sb.execute("x = bytearray(200 << 20)", timeout_s=20)
        assert r.exit_code != 0
        root = m.backend.dir / sb.id  # type: ignore[attr-defined]
        await sb.start_command("sleep 300")
        had_mounts = mounts_under(root)
        await sb.close()
        assert not root.exists() and mounts_under(root) == []
        assert all(not os.path.exists(os.path.join(d, sb.id)) for d in cgroup_dirs())
        if had_mounts:
            assert mounts_under(state_dir) == [] or all(
                sb.id not in p for p in mounts_under(state_dir))
