"""The Firecracker driver against the real binary (FIRECRACKER_BIN): API calls read back,
faults surfaced, InstanceStart, pause/snapshot/restore/clones, kill/reap/crash detection,
stale reaping, the agent-wait timeout, and a sandbox's pause (VM paused, Full snapshot, no
VMM left) and resume (the snapshot in a new VMM, running). Skipped with the reason when the
binary is absent; tests that boot need a guest kernel from the image builder."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_core.config.sandbox import PoolConfig, SandboxConfig
from gateway_core.sandbox_types import Resources
from gateway_sandbox import BackendUnavailable
from gateway_sandbox.backends.firecracker.api import (
    BootSource,
    Drive,
    FirecrackerApi,
    FirecrackerApiError,
    MachineConfig,
    Vsock,
)
from gateway_sandbox.backends.firecracker.backend import (
    BOOT_ARGS,
    FirecrackerBackend,
    FirecrackerGuest,
    firecracker_status,
    hardware_kvm,
)
from gateway_sandbox.backends.firecracker.vm import (
    FirecrackerVM,
    make_work_drive,
    orphaned_firecrackers,
)
from gateway_sandbox.errors import SandboxConflict
from gateway_sandbox.image import GuestImage, find_image


@pytest.fixture
def fc_bin() -> str:
    path = os.environ.get("FIRECRACKER_BIN")
    if not path:
        pytest.skip("FIRECRACKER_BIN is not set: these tests need the real Firecracker binary")
    if not os.access(path, os.X_OK):
        pytest.skip(f"FIRECRACKER_BIN={path} is not an executable file")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("Firecracker needs a read-write /dev/kvm")
    return path


@pytest.fixture
def image() -> GuestImage:
    found = find_image()
    if found is None:
        pytest.skip("no guest kernel built: run `python -m gateway_sandbox.image build` or set "
                    "GATEWAY_GUEST_IMAGE=<dir holding vmlinux and rootfs.ext4>")
    return found


@pytest.fixture
def kernel(image: GuestImage) -> Path:
    return image.kernel


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short, under /tmp: Unix socket paths must stay under 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def disk(state_dir: Path) -> Path:
    """A small raw file as a root drive (Firecracker only opens it before boot)."""
    path = state_dir / "disk.img"
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return path


def _pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()
            and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[:1]]


async def _configured_vm(fc_bin: str, directory: Path, kernel: Path, disk: Path,
                         ) -> FirecrackerVM:
    vm = FirecrackerVM(fc_bin, directory)
    api = await vm.spawn(vm_id=directory.name)
    await vm.configure_logs()
    await api.boot_source(BootSource(kernel_image_path=str(kernel), boot_args=BOOT_ARGS))
    await api.drive(Drive(drive_id="rootfs", path_on_host=str(disk), is_root_device=True,
                          is_read_only=True))
    await api.machine_config(MachineConfig(vcpu_count=1, mem_size_mib=128))
    await api.vsock(Vsock(guest_cid=3, uds_path="v.sock"))
    return vm


async def test_configuration_is_read_back(fc_bin: str, state_dir: Path, disk: Path) -> None:
    # Any existing file passes PUT /boot-source; the ELF is only parsed at InstanceStart.
    vm = await _configured_vm(fc_bin, state_dir / "vm", disk, disk)
    try:
        assert vm.api is not None
        cfg = await vm.api.vm_config()
        assert cfg.boot_source is not None
        assert cfg.boot_source.kernel_image_path == str(disk)
        assert cfg.boot_source.boot_args == BOOT_ARGS
        assert [(d.drive_id, d.path_on_host, d.is_root_device, d.is_read_only)
                for d in cfg.drives] == [("rootfs", str(disk), True, True)]
        assert cfg.machine_config is not None
        assert (cfg.machine_config.vcpu_count, cfg.machine_config.mem_size_mib) == (1, 128)
        assert cfg.vsock is not None and cfg.vsock.uds_path == "v.sock"
        # Logs go to files in the VM's directory.
        assert (vm.dir / "firecracker.log").stat().st_size > 0
    finally:
        await vm.stop()
    assert not vm.dir.exists()


async def test_api_faults_carry_firecrackers_message(fc_bin: str, state_dir: Path,
                                                      disk: Path) -> None:
    vm = FirecrackerVM(fc_bin, state_dir / "vm")
    api = await vm.spawn(vm_id="faults")
    try:
        with pytest.raises(FirecrackerApiError) as bad_kernel:
            await api.boot_source(BootSource(kernel_image_path=str(state_dir / "no-vmlinux")))
        assert bad_kernel.value.http_status == 400
        assert bad_kernel.value.fault_message
        assert bad_kernel.value.fault_message in str(bad_kernel.value)
        with pytest.raises(FirecrackerApiError) as bad_drive:
            await api.drive(Drive(drive_id="rootfs", path_on_host=str(state_dir / "no-disk"),
                                  is_root_device=True))
        assert bad_drive.value.fault_message
        # Starting without a kernel is refused with Firecracker's reason, too.
        with pytest.raises(FirecrackerApiError) as no_boot:
            await api.instance_start()
        assert no_boot.value.fault_message
    finally:
        await vm.stop()


async def test_instance_start_pause_snapshot_restore_and_clones(
        fc_bin: str, state_dir: Path, kernel: Path, disk: Path) -> None:
    vm = await _configured_vm(fc_bin, state_dir / "template", kernel, disk)
    clones: list[FirecrackerVM] = []
    snap, mem = state_dir / "vm.snap", state_dir / "vm.mem"
    try:
        assert vm.api is not None
        await vm.api.instance_start()
        assert vm.alive()
        await vm.api.pause()
        await vm.api.snapshot_create(str(snap), str(mem))
        assert snap.stat().st_size > 0
        assert mem.stat().st_size == 128 * 1024 * 1024
        await vm.stop()
        # Restore into new processes, each in its own directory: the relative vsock path
        # baked into the snapshot lands in each clone's own directory.
        for i in range(3):
            clone = FirecrackerVM(fc_bin, state_dir / f"clone{i}")
            clones.append(clone)
            api = await clone.spawn(vm_id=f"clone{i}")
            await clone.configure_logs()
            await api.snapshot_load(str(snap), str(mem), resume=False)
            await api.resume()
        for clone in clones:
            assert clone.alive(), clone.console_tail()
            assert clone.vsock_socket.exists()
            assert clone.api is not None
            cfg = await clone.api.vm_config()
            assert cfg.machine_config is not None and cfg.machine_config.mem_size_mib == 128
        pids = [c.pid for c in clones if c.pid is not None]
    finally:
        await vm.stop()
        for clone in clones:
            await clone.stop()
    assert _pids_alive(pids) == []
    assert not any((state_dir / f"clone{i}").exists() for i in range(3))


async def test_two_clones_in_one_directory_collide(fc_bin: str, state_dir: Path, kernel: Path,
                                                   disk: Path) -> None:
    """Why each clone needs its own working directory: the vsock socket path is fixed."""
    vm = await _configured_vm(fc_bin, state_dir / "template", kernel, disk)
    snap, mem = state_dir / "vm.snap", state_dir / "vm.mem"
    first = FirecrackerVM(fc_bin, state_dir / "shared")
    second: asyncio.subprocess.Process | None = None
    try:
        assert vm.api is not None
        await vm.api.instance_start()
        await vm.api.pause()
        await vm.api.snapshot_create(str(snap), str(mem))
        await vm.stop()
        api = await first.spawn(vm_id="first")
        await api.snapshot_load(str(snap), str(mem), resume=True)
        second = await asyncio.create_subprocess_exec(
            fc_bin, "--api-sock", "api2.sock", cwd=first.dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if (first.dir / "api2.sock").exists():
                break
            await asyncio.sleep(0.01)
        async with FirecrackerApi(str(first.dir / "api2.sock")) as api2:
            with pytest.raises(FirecrackerApiError) as clash:
                await api2.snapshot_load(str(snap), str(mem), resume=True)
        assert "in use" in clash.value.fault_message.lower()
    finally:
        if second is not None:
            if second.returncode is None:
                second.kill()
            await second.wait()
        await first.stop()
        await vm.stop()


async def test_kill_reap_crash_detection_and_cleanup(fc_bin: str, state_dir: Path,
                                                     kernel: Path, disk: Path) -> None:
    crashed = await _configured_vm(fc_bin, state_dir / "crash", kernel, disk)
    stopped = await _configured_vm(fc_bin, state_dir / "stop", kernel, disk)
    try:
        assert crashed.api is not None and stopped.api is not None
        await crashed.api.instance_start()
        await stopped.api.instance_start()
        pid = crashed.pid
        assert pid is not None and crashed.alive()
        os.kill(pid, signal.SIGKILL)  # a VMM dying on its own
        for _ in range(500):  # noticed within 5 s at most
            if not crashed.alive():
                break
            await asyncio.sleep(0.01)
        assert not crashed.alive()
        assert crashed.returncode == -signal.SIGKILL
        spid = stopped.pid
        assert spid is not None
        await stopped.stop()
        await stopped.stop()  # idempotent
        assert not stopped.alive()
        assert _pids_alive([spid]) == []
        assert not stopped.dir.exists()
    finally:
        await crashed.stop()
        await stopped.stop()
    assert not crashed.dir.exists()
    assert _pids_alive([pid]) == []


def _fc_config(state_dir: Path, kernel: Path, disk: Path, fc_bin: str,
               **extra: object) -> SandboxConfig:
    return SandboxConfig(backend="firecracker", state_dir=str(state_dir / "state"),
                         firecracker_path=fc_bin, kernel_path=str(kernel),
                         rootfs_path=str(disk), memory_mb=128,
                         pool=PoolConfig(min_ready=0, max_total=2),
                         **{"firecracker_require_hardware_kvm": False, **extra})  # type: ignore[arg-type]


async def test_start_reaps_stale_vms_of_a_previous_run(fc_bin: str, state_dir: Path,
                                                       disk: Path) -> None:
    cfg = _fc_config(state_dir, disk, disk, fc_bin)
    # What a gateway killed with SIGKILL leaves: its instance dir and a running VMM in it.
    stale = Path(cfg.state_dir) / "firecracker" / "1-0" / "abc"
    stale.mkdir(parents=True)
    # Not an asyncio child on purpose: the backend must find this VMM on its own.
    proc = subprocess.Popen([fc_bin, "--api-sock", "api.sock"], cwd=stale,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if (stale / "api.sock").exists():
                break
            await asyncio.sleep(0.01)
        base = Path(cfg.state_dir) / "firecracker"
        assert orphaned_firecrackers(base, set()) == [proc.pid]
        backend = FirecrackerBackend(cfg)
        await backend.start()
        try:
            assert proc.wait(timeout=10) == -signal.SIGKILL
            assert backend.reaped_stale == 1
            assert not stale.parent.exists()
        finally:
            await backend.aclose()
        assert not base.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_agent_wait_times_out_with_the_console_tail(fc_bin: str, state_dir: Path,
                                                          kernel: Path, disk: Path) -> None:
    if hardware_kvm()[0] and find_image() is not None:
        pytest.skip("this host boots guests: the agent answers, so there is no timeout to see")
    cfg = _fc_config(state_dir, kernel, disk, fc_bin, start_timeout_s=3.0)
    backend = FirecrackerBackend(cfg)
    await backend.start()
    try:
        with pytest.raises(BackendUnavailable) as err:
            await backend.start_guest("sb-timeout")
        message = str(err.value)
        assert "did not answer on vsock port 52 within 3.0 s" in message \
            or "exited with" in message
        assert "guest console tail" in message
        # The warm start was tried first, failed, and the backend says it fell back.
        assert backend.warm_start.startswith("cold boot")
        assert list(backend.dir.iterdir()) == []
        assert orphaned_firecrackers(backend.base, set()) == []
    finally:
        await backend.aclose()


def test_status_says_why_firecracker_cannot_run(state_dir: Path) -> None:
    cfg = SandboxConfig(firecracker_path=str(state_dir / "nope"),
                        kernel_path=str(state_dir / "vmlinux"),
                        rootfs_path=str(state_dir / "rootfs.ext4"))
    usable, why = firecracker_status(cfg)
    assert not usable
    assert f"no Firecracker binary at {state_dir / 'nope'}" in why
    assert "no guest kernel" in why and "no guest rootfs" in why
    if Path("/sys/module/kvm_pvm").is_dir():
        assert "kvm-pvm" in why and "cannot boot here" in why


async def test_backend_start_refuses_software_kvm(fc_bin: str, state_dir: Path,
                                                  disk: Path) -> None:
    ok, why = hardware_kvm()
    if ok:
        pytest.skip(f"this host has {why}")
    cfg = _fc_config(state_dir, disk, disk, fc_bin, firecracker_require_hardware_kvm=True)
    with pytest.raises(BackendUnavailable) as err:
        await FirecrackerBackend(cfg).start()
    assert why in str(err.value)


async def test_auto_says_why_it_chose_the_process_backend(state_dir: Path) -> None:
    from gateway_sandbox import select_backend

    cfg = SandboxConfig(backend="auto", state_dir=str(state_dir / "state"),
                        firecracker_path=os.environ.get("FIRECRACKER_BIN", "/nonexistent"))
    usable, why = firecracker_status(cfg)
    if usable:
        pytest.skip(f"Firecracker is usable here: {why}")
    backend, reason = select_backend(cfg)
    assert backend.name == "process"
    assert reason == f"auto: firecracker is not usable ({why}); using process"


async def test_network_gets_a_tap_per_vm_and_loses_it_on_cleanup(
        fc_bin: str, state_dir: Path, kernel: Path, disk: Path) -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        pytest.skip("tap devices need root, /dev/net/tun and iproute2")
    if hardware_kvm()[0]:
        pytest.skip("this host boots guests: covered by the end-to-end tests")
    cfg = _fc_config(state_dir, kernel, disk, fc_bin, start_timeout_s=2.0, network=True,
                     firecracker_snapshots=False)
    backend = FirecrackerBackend(cfg)
    await backend.start()
    before = set(os.listdir("/sys/class/net"))
    seen: set[str] = set()
    try:
        task = asyncio.create_task(backend.start_guest("sb-net"))
        for _ in range(1000):  # until the start fails (agent timeout on this host)
            seen |= {n for n in os.listdir("/sys/class/net") if n.startswith("fc")} - before
            if task.done():
                break
            await asyncio.sleep(0.005)
        with pytest.raises(BackendUnavailable):
            await task
    finally:
        await backend.aclose()
    assert len(seen) == 1
    assert not seen & set(os.listdir("/sys/class/net"))


async def test_manager_on_a_host_where_guests_cannot_boot(fc_bin: str, state_dir: Path,
                                                          kernel: Path, disk: Path) -> None:
    """Through the SandboxManager: create answers 503 with the guest console's tail, and
    nothing (process, socket, directory) is left behind."""
    if hardware_kvm()[0]:
        pytest.skip("this host boots guests")
    from gateway_sandbox import SandboxManager

    cfg = _fc_config(state_dir, kernel, disk, fc_bin, start_timeout_s=2.0)
    async with SandboxManager.from_config(cfg) as manager:
        with pytest.raises(BackendUnavailable) as err:
            await manager.create("python")
        assert err.value.status == 503
        assert "guest console tail" in str(err.value)
        described = manager.describe()
        assert "firecracker" in str(described)
    base = Path(cfg.state_dir) / "firecracker"
    assert not base.exists()
    assert orphaned_firecrackers(Path(cfg.state_dir), set()) == []


# A sandbox's pause and resume (FirecrackerGuest) against the real binary. On a host whose
# guests cannot boot (kvm-pvm) the VMM still runs, pauses, snapshots and restores; only what
# needs the guest agent (reconnecting over vsock after restore, the guest's state) is out of
# reach there, and covered by test_paused_sandbox_resumes_with_its_state on a KVM host.
_GUEST_BOOTS = hardware_kvm()[0]
_NO_AGENT = ("the guest never reaches user space on this host (no hardware KVM: "
             f"{hardware_kvm()[1]}), so no guest agent answers over vsock")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _started_guest(cfg: SandboxConfig, sandbox_id: str,
                         ) -> tuple[FirecrackerBackend, FirecrackerGuest]:
    """A sandbox's guest as start_guest makes it with resources (its own drive of disk_mb,
    cold boot), without waiting for the agent: on a PVM host none answers."""
    backend = FirecrackerBackend(cfg)
    await backend.start()
    drive = backend.dir / f"{sandbox_id}.work.ext4"
    await asyncio.to_thread(make_work_drive, drive, 16)
    vm = await backend.launch(sandbox_id, Resources(cpus=1, memory_mb=128, disk_mb=16), drive)
    return backend, FirecrackerGuest(backend, sandbox_id, vm, restored=False, work_drive=drive)


async def _running_vmm(backend: FirecrackerBackend, old: Path, task: asyncio.Task[None],
                       ) -> tuple[FirecrackerVM, str]:
    """While ``task`` resumes: the new VM directory and the state its VMM reports once it
    leaves ``Paused`` (or the last state seen if the resume ends first)."""
    seen = "no new VMM"
    for _ in range(2000):
        for child in backend.dir.iterdir():
            if child == old or not (child / "api.sock").exists():
                continue
            async with FirecrackerApi(str(child / "api.sock"), timeout_s=1.0) as api:
                try:
                    seen = (await api.instance_info()).state
                except BackendUnavailable:
                    continue
            if seen == "Running":
                return FirecrackerVM(backend.cfg.firecracker_path, child), seen
        if task.done():
            break
        await asyncio.sleep(0.005)
    raise AssertionError(f"resume never showed a running VMM (last: {seen})")


async def test_pause_snapshots_the_vm_and_stops_its_vmm(fc_bin: str, state_dir: Path,
                                                        image: GuestImage) -> None:
    cfg = _fc_config(state_dir, image.kernel, image.rootfs, fc_bin, firecracker_snapshots=False)
    backend, guest = await _started_guest(cfg, "sb-pause")
    try:
        vm = guest.vm
        pid = vm.pid
        assert pid is not None and vm.alive(), vm.console_tail()
        assert orphaned_firecrackers(backend.base, set()) == [pid]
        assert _rss_kib(pid) > 0
        await guest.pause()
        snap = guest.paused_snapshot
        assert snap is not None
        # A Full snapshot: the VM state and all of its memory, on disk.
        assert snap.state.stat().st_size > 0
        assert snap.memory.stat().st_size == 128 * 1024 * 1024
        # No VMM left: the process is reaped (its memory freed), its directory gone.
        assert not vm.alive() and _pids_alive([pid]) == []
        assert orphaned_firecrackers(backend.base, set()) == []
        assert not vm.dir.exists()
        # Paused, not dead: the work drive is kept for the resume.
        assert guest.alive()
        assert guest.work_drive is not None and guest.work_drive.exists()
        with pytest.raises(SandboxConflict) as again:
            await guest.pause()
        assert again.value.status == 409 and "not running" in again.value.message
    finally:
        await guest.stop()
        await backend.aclose()
    assert not backend.base.exists()
    assert orphaned_firecrackers(Path(cfg.state_dir), set()) == []


async def test_resume_loads_the_snapshot_into_a_new_vmm(fc_bin: str, state_dir: Path,
                                                        image: GuestImage) -> None:
    cfg = _fc_config(state_dir, image.kernel, image.rootfs, fc_bin, firecracker_snapshots=False,
                     start_timeout_s=3.0)
    backend, guest = await _started_guest(cfg, "sb-resume")
    try:
        old_pid, old_dir = guest.vm.pid, guest.vm.dir
        await guest.pause()
        snap = guest.paused_snapshot
        assert snap is not None
        task = asyncio.create_task(guest.resume())
        restored, state = await _running_vmm(backend, old_dir, task)
        # The same machine in a new process: the snapshot's vCPUs, memory and drives.
        assert state == "Running"
        new_pids = orphaned_firecrackers(backend.base, set())
        assert len(new_pids) == 1 and new_pids[0] != old_pid
        async with FirecrackerApi(str(restored.api_socket)) as api:
            config = await api.vm_config()
        assert config.machine_config is not None
        assert (config.machine_config.vcpu_count, config.machine_config.mem_size_mib) == (1, 128)
        assert {d.drive_id: d.path_on_host for d in config.drives} == {
            "rootfs": image.rootfs.as_posix(), "work": str(guest.work_drive)}
        assert restored.vsock_socket.exists()  # the snapshot's relative uds_path, anew
        if _GUEST_BOOTS:
            await task
            assert guest.paused_snapshot is None and guest.vm.alive()
            assert not snap.dir.exists()
            return
        # Here the resume stops at the agent: it cannot be reached, so the resume fails
        # cleanly and the sandbox stays paused, its snapshot kept for another try.
        with pytest.raises(SandboxConflict) as failed:
            await task
        assert "did not answer on vsock port" in failed.value.message
        assert guest.paused_snapshot is snap and snap.memory.exists() and guest.alive()
        assert orphaned_firecrackers(backend.base, set()) == []
        assert not restored.dir.exists()
    finally:
        await guest.stop()
        await backend.aclose()
    assert not backend.base.exists()
    assert orphaned_firecrackers(Path(cfg.state_dir), set()) == []


async def test_resume_with_network_gives_the_restored_vm_a_tap_of_its_own(
        fc_bin: str, state_dir: Path, image: GuestImage) -> None:
    """The tap named in the snapshot went with the VMM that took it; the restored one gets
    its own (network_overrides), removed with it."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        pytest.skip("tap devices need root, /dev/net/tun and iproute2")
    cfg = _fc_config(state_dir, image.kernel, image.rootfs, fc_bin, firecracker_snapshots=False,
                     start_timeout_s=3.0, network=True)
    backend, guest = await _started_guest(cfg, "sb-net")
    try:
        first_tap = guest.vm.tap
        assert first_tap is not None and Path(f"/sys/class/net/{first_tap}").exists()
        old_dir = guest.vm.dir
        await guest.pause()
        assert not Path(f"/sys/class/net/{first_tap}").exists()
        task = asyncio.create_task(guest.resume())
        restored, _ = await _running_vmm(backend, old_dir, task)
        async with FirecrackerApi(str(restored.api_socket)) as api:
            config = await api.vm_config()
        taps = [i.host_dev_name for i in config.network_interfaces]
        assert len(taps) == 1 and taps[0] != first_tap
        assert Path(f"/sys/class/net/{taps[0]}").exists()
        if not _GUEST_BOOTS:
            with pytest.raises(SandboxConflict):
                await task
            assert not Path(f"/sys/class/net/{taps[0]}").exists()
        else:
            await task
    finally:
        await guest.stop()
        await backend.aclose()
    assert not any(n.startswith("fc") and n in (first_tap, *taps)
                   for n in os.listdir("/sys/class/net"))


@pytest.mark.skipif(not _GUEST_BOOTS, reason=(
    f"needs a booting guest: {_NO_AGENT}. Unverified here: after a resume the host reconnects "
    "to the agent over vsock and the context's variables are intact"))
async def test_paused_sandbox_resumes_with_its_state(fc_bin: str, state_dir: Path,
                                                     image: GuestImage) -> None:
    from gateway_sandbox import SandboxManager

    cfg = _fc_config(state_dir, image.kernel, image.rootfs, fc_bin)
    async with SandboxManager.from_config(cfg) as manager:
        sb = await manager.create("python", disk_mb=64)
        await sb.execute("x = 41\nopen('/work/kept', 'w').write('yes')", context="default")
        await sb.pause()
        assert sb.info().status == "paused"
        guest = sb.guest
        assert isinstance(guest, FirecrackerGuest) and not guest.vm.alive()
        await sb.resume()
        result = await sb.execute("x + 1", context="default")
        assert result.results[0].data == "42"
        kept = await sb.execute("open('/work/kept').read()", context="default")
        assert kept.results[0].data == "'yes'"
