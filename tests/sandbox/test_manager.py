"""The manager over real jails: capacity, the warm pool, lifetimes, crash detection, file
confinement, bad input, and that nothing outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from gateway_core.config.sandbox import SandboxConfig
from gateway_core.errors import InvalidRequest, NotFound, PayloadTooLarge
from gateway_sandbox import PoolExhausted, SandboxDead, SandboxManager
from gateway_sandbox.errors import SandboxConflict
from tests.sandbox.conftest import children_of, make_config


class Recorder:
    def __init__(self) -> None:
        self.starts: list[tuple[str, str]] = []
        self.executions: list[tuple[str, str]] = []
        self.exits: list[tuple[int | None, bool]] = []
        self.lifecycle: list[tuple[str, str]] = []

    def on_start(self, backend: str, kind: str, seconds: float, *, sandbox_id: str,
                 runtime: str) -> None:
        assert sandbox_id and runtime
        self.starts.append((backend, kind))

    def on_execute(self, runtime: str, outcome: str, seconds: float, *, sandbox_id: str,
                   exit_code: int | None, timed_out: bool) -> None:
        assert sandbox_id
        self.executions.append((runtime, outcome))
        self.exits.append((exit_code, timed_out))

    def on_lifecycle(self, action: str, outcome: str, seconds: float, *,
                     sandbox_id: str) -> None:
        self.lifecycle.append((action, outcome))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def cgroup_dirs() -> list[str]:
    """This process's sandbox cgroups (named agw-<pid>-<start time>)."""
    mine = f"agw-{os.getpid()}-"
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d.startswith(mine)]
        dirs[:] = [d for d in dirs if not d.startswith("agw-") and root.count("/") < 6]
    return found


async def test_concurrent_creates_never_exceed_max_total(state_dir: Path) -> None:
    cfg = make_config(state_dir, min_ready=2, max_total=10, acquire_timeout_s=0.0)
    async with SandboxManager.from_config(cfg) as m:
        results = await asyncio.wait_for(
            asyncio.gather(*(m.create("python") for _ in range(20)), return_exceptions=True),
            90)
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(made) == 10
        assert all(isinstance(r, PoolExhausted) and r.status == 503 for r in refused)
        assert "max_total" in str(refused[0])
        assert m.stats().active == 10 and m.stats().pool_ready == 0
        # Every one of them really runs, in its own jail.
        outs = await asyncio.gather(*(sb.execute("import os; print(os.getuid())")
                                      for sb in made))  # type: ignore[union-attr]
        assert len({o.stdout for o in outs}) == 10


async def test_create_waits_for_a_free_slot(state_dir: Path) -> None:
    cfg = make_config(state_dir, min_ready=0, max_total=1, acquire_timeout_s=20.0)
    async with SandboxManager.from_config(cfg) as m:
        first = await m.create("python")
        waiter = asyncio.create_task(m.create("python"))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await first.close()
        second = await asyncio.wait_for(waiter, 20)
        assert (await second.execute("print('ok')")).stdout == "ok\n"


async def test_pool_refills_after_take_and_reports_warm_and_cold(state_dir: Path) -> None:
    rec = Recorder()
    cfg = make_config(state_dir, min_ready=2, max_total=5)
    async with SandboxManager.from_config(cfg, observer=rec) as m:
        assert await m.wait_pool_ready(2, timeout_s=30)
        a = await m.create("python")
        b = await m.create("python")
        assert rec.starts == [("process", "warm"), ("process", "warm")]
        assert await m.wait_pool_ready(2, timeout_s=30)
        assert m.stats().pool_ready == 2 and m.stats().active == 2
        await a.execute("print(1)")
        await b.execute("raise SystemExit(2)")
        assert rec.executions == [("python", "ok"), ("python", "error")]
        assert rec.exits == [(0, False), (2, False)]
        await a.pause()
        await a.resume()
        with pytest.raises(SandboxConflict):
            await a.resume()
        assert rec.lifecycle == [("pause", "ok"), ("resume", "ok"),
                                 ("resume", "SandboxConflict")]
    cold = Recorder()
    async with SandboxManager.from_config(make_config(state_dir, min_ready=0),
                                          observer=cold) as m:
        await m.create("python")
        assert cold.starts == [("process", "cold")]


async def test_dead_pool_guest_is_replaced(state_dir: Path) -> None:
    async with SandboxManager.from_config(make_config(state_dir, min_ready=1)) as m:
        assert await m.wait_pool_ready(1, timeout_s=30)
        victim = m._pool.ready[0].guest
        outer = victim.pid  # type: ignore[attr-defined]
        agent = int(Path(f"/proc/{outer}/task/{outer}/children").read_text().split()[0])
        os.kill(agent, signal.SIGKILL)
        for _ in range(200):
            if not victim.alive():
                break
            await asyncio.sleep(0.05)
        await m.reap()
        assert await m.wait_pool_ready(1, timeout_s=30)
        assert m._pool.ready[0].guest.id != victim.id
        sb = await m.create("python")
        assert (await sb.execute("print(3)")).stdout == "3\n"


async def test_ttl_and_lifetime_reaping_with_injected_clock(state_dir: Path) -> None:
    clock = FakeClock()
    cfg = make_config(state_dir, min_ready=0)
    cfg.idle_ttl_s = 60.0
    cfg.max_lifetime_s = 300.0
    async with SandboxManager.from_config(cfg, clock=clock) as m:
        idle = await m.create("python")
        busy = await m.create("python")
        short = await m.create("python", timeout_s=100)
        clock.now += 50
        await busy.execute("print(1)")
        await short.execute("print(1)")
        assert await m.reap() == []
        clock.now += 20  # idle has been idle 70 s > 60 s; the others 20 s
        assert await m.reap() == [idle.id]
        with pytest.raises(NotFound):
            m.get(idle.id)
        clock.now += 40  # short is past its own 100 s lifetime although recently used
        await busy.execute("print(1)")
        await short.execute("print(1)")
        assert await m.reap() == [short.id]
        for _ in range(5):  # busy stays in use, past the 300 s maximum lifetime
            clock.now += 45
            await busy.execute("print(1)")
        assert await m.reap() == [busy.id]
        assert m.list() == []


async def test_code_cannot_kill_its_agent(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    # The agent is the jail's pid 1: signals from inside the namespace cannot kill it.
    result = await sb.execute("import os, signal\n"
                              "os.kill(os.getppid(), signal.SIGKILL)\n"
                              "os.kill(1, signal.SIGKILL)\n"
                              "print(os.getppid())", timeout_s=5)
    assert (result.stdout, result.exit_code) == ("1\n", 0)
    assert (await sb.execute("print('alive')")).stdout == "alive\n"


async def test_crashed_guest_is_reported_dead(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    outer = sb.guest.pid  # type: ignore[attr-defined]
    agent = int(Path(f"/proc/{outer}/task/{outer}/children").read_text().split()[0])
    os.kill(agent, signal.SIGKILL)  # a crash, as seen from the host
    with pytest.raises(SandboxDead):
        await sb.execute("print(1)", timeout_s=5)
    assert sb.status == "dead"
    assert manager.get(sb.id).info().status == "dead"
    assert manager.stats().dead == 1
    await manager.reap()  # frees the dead guest's files; the record stays until deleted
    with pytest.raises(SandboxDead):
        await sb.read_file("x")
    await manager.delete(sb.id)
    other = await manager.create("python")
    assert (await other.execute("print(5)")).stdout == "5\n"


async def test_files_are_confined_to_the_work_dir(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    assert await sb.write_file("dir/data.bin", b"\x00\x01") == 2
    assert await sb.read_file("/work/dir/data.bin") == b"\x00\x01"
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "/work"):
        with pytest.raises(InvalidRequest) as exc:
            await sb.write_file(bad, b"x")
        assert exc.value.param == "path"
    # A symlink made inside the sandbox cannot lead the file API out of it.
    await sb.execute("import os; os.symlink('/etc', 'link'); os.symlink('/etc/passwd', 'pw')")
    for escape in ("link/passwd", "pw"):
        with pytest.raises(InvalidRequest) as exc:
            await sb.read_file(escape)
        assert exc.value.param == "path"
        with pytest.raises(InvalidRequest):
            await sb.write_file(escape, b"x")
    with pytest.raises(NotFound):
        await sb.read_file("missing.txt")


async def test_bad_input_names_the_field(manager: SandboxManager) -> None:
    with pytest.raises(InvalidRequest) as exc:
        await manager.create("cobol")
    assert exc.value.param == "runtime"
    with pytest.raises(InvalidRequest) as exc:
        await manager.create("python", timeout_s=-1)
    assert exc.value.param == "timeout_s"
    sb = await manager.create("python")
    with pytest.raises(InvalidRequest) as exc:
        await sb.execute("   ")
    assert exc.value.param == "code"
    with pytest.raises(InvalidRequest) as exc:
        await sb.execute("print(1)", timeout_s=10_000)
    assert exc.value.param == "timeout_s"
    with pytest.raises(PayloadTooLarge) as exc:
        await sb.execute("#" * (manager.limits.max_code_bytes + 1))
    assert exc.value.param == "code"
    with pytest.raises(InvalidRequest) as exc:
        await sb.execute("print(1)", runtime="cobol")
    assert exc.value.param == "runtime"
    with pytest.raises(NotFound):
        manager.get("sbx_nope")
    with pytest.raises(NotFound):
        await manager.delete("sbx_nope")


async def test_list_filters_by_metadata(manager: SandboxManager) -> None:
    a = await manager.create("python", metadata={"team": "a"})
    await manager.create("python", metadata={"team": "b"})
    assert [sb.id for sb in manager.list({"team": "a"})] == [a.id]
    assert len(manager.list()) == 2


def orphaned_jail_pids() -> set[int]:
    """Processes (zombies included) of the jails' uids that were handed to the host's pid 1
    (jails of other test runs are children of their own manager, not of pid 1)."""
    base = SandboxConfig().process_uid_base or 0
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if base <= uid < base + 65536 and ppid == 1:
                pids.add(int(entry))
    return pids


async def test_nothing_left_after_close(state_dir: Path) -> None:
    before = orphaned_jail_pids()
    cfg = make_config(state_dir, min_ready=2, max_total=6)
    m = SandboxManager.from_config(cfg)
    await m.start()
    sbs = [await m.create("python") for _ in range(3)]
    await sbs[0].execute("import subprocess; subprocess.Popen(['sleep', '300'])")
    assert await m.wait_pool_ready(2, timeout_s=30)
    assert children_of(os.getpid())
    assert cgroup_dirs()
    await asyncio.wait_for(m.aclose(), 60)
    await m.aclose()  # idempotent
    assert children_of(os.getpid()) == []
    assert orphaned_jail_pids() - before == set()  # not even a zombie handed to pid 1
    assert not state_dir.exists() or list(state_dir.rglob("*")) == []
    assert cgroup_dirs() == []


async def test_startup_removes_a_crashed_runs_leftovers(state_dir: Path) -> None:
    stale = state_dir / "process" / "999999-1" / "sbx_old" / "work"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    async with SandboxManager.from_config(make_config(state_dir, min_ready=0)) as m:
        assert not (state_dir / "process" / "999999-1").exists()
        assert m.describe()["backend"] == "process"


async def test_describe_says_what_is_in_force(manager: SandboxManager) -> None:
    d = manager.describe()
    assert "weaker isolation than a microVM" in str(d["isolation"])
    assert d["network"] is False
    assert set(d["rlimits"]) >= {"cpu", "nproc", "fsize", "data"}  # type: ignore[arg-type]
    assert "cgroup" in d and "backend_reason" in d
