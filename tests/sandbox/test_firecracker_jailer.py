"""Firecracker under its jailer (JAILER_BIN with FIRECRACKER_BIN, root): a chroot per VM,
an unprivileged uid, files linked into the chroot, snapshots across chroots, and nothing left
behind. Skipped with the reason when the jailer is absent."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_core.config.sandbox import PoolConfig, SandboxConfig
from gateway_sandbox import BackendUnavailable
from gateway_sandbox.backends.firecracker.api import BootSource, Drive, MachineConfig, Vsock
from gateway_sandbox.backends.firecracker.backend import (
    BOOT_ARGS,
    FirecrackerBackend,
    hardware_kvm,
)
from gateway_sandbox.backends.firecracker.jailer import Jail
from gateway_sandbox.backends.firecracker.vm import FirecrackerVM, orphaned_firecrackers
from gateway_sandbox.image import find_image

UID = 200999


@pytest.fixture
def binaries() -> tuple[str, str]:
    fc, jailer = os.environ.get("FIRECRACKER_BIN"), os.environ.get("JAILER_BIN")
    if not fc or not jailer:
        pytest.skip("FIRECRACKER_BIN and JAILER_BIN are not both set: these tests need the "
                    "real Firecracker and jailer binaries (of one release)")
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root (chroot, mknod, setuid)")
    return fc, jailer


@pytest.fixture
def kernel() -> Path:
    image = find_image()
    if image is None:
        pytest.skip("no guest kernel built: run `python -m gateway_sandbox.image build`")
    return image.kernel


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="jl", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _status_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


async def test_jailed_vm_boots_snapshots_and_restores_in_another_chroot(
        binaries: tuple[str, str], kernel: Path, base: Path) -> None:
    fc, jailer = binaries
    jail = Jail(jailer=jailer, uid=UID, gid=UID)
    name = os.path.basename(fc)
    disk = base / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    os.chmod(disk, 0o644)
    vm = FirecrackerVM(fc, base / name / "tpl" / "root", jail=jail)
    clone = FirecrackerVM(fc, base / name / "clone" / "root", jail=jail)
    snaps = base / "snap"
    snaps.mkdir()
    try:
        api = await vm.spawn(vm_id="tpl")
        await vm.configure_logs()
        await api.boot_source(BootSource(kernel_image_path=vm.provide(str(kernel), "vmlinux"),
                                         boot_args=BOOT_ARGS))
        await api.drive(Drive(drive_id="rootfs", path_on_host=vm.provide(str(disk), "r.img"),
                              is_root_device=True, is_read_only=True))
        await api.machine_config(MachineConfig(vcpu_count=1, mem_size_mib=128))
        await api.vsock(Vsock(guest_cid=3, uds_path="v.sock"))
        await api.instance_start()
        assert vm.pid is not None
        assert _status_uid(vm.pid) == UID
        # pivot_root into the chroot in its own mount namespace: its / is the VM directory.
        assert os.readlink(f"/proc/{vm.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert sorted(os.listdir(f"/proc/{vm.pid}/root")) == sorted(os.listdir(vm.dir))
        assert (vm.dir / "v.sock").exists()  # relative to the chroot's /
        await api.pause()
        await api.snapshot_create("/vm.snap", "/vm.mem")
        os.link(vm.dir / "vm.snap", snaps / "vm.snap")
        os.link(vm.dir / "vm.mem", snaps / "vm.mem")
        await vm.stop()
        capi = await clone.spawn(vm_id="clone")
        clone.provide(str(disk), "r.img")
        await capi.snapshot_load(clone.provide(str(snaps / "vm.snap"), "vm.snap"),
                                 clone.provide(str(snaps / "vm.mem"), "vm.mem"), resume=True)
        assert clone.alive(), clone.console_tail()
        assert (clone.dir / "v.sock").exists()
        pids = [p for p in (vm.pid, clone.pid) if p is not None]
    finally:
        await vm.stop()
        await clone.stop()
    assert not (base / name / "tpl").exists() and not (base / name / "clone").exists()
    assert all(not Path(f"/proc/{p}").exists() for p in pids)


async def test_jailed_backend_cleans_up_after_a_failed_boot(
        binaries: tuple[str, str], kernel: Path, base: Path) -> None:
    if hardware_kvm()[0]:
        pytest.skip("this host boots guests: covered by the end-to-end tests")
    fc, jailer = binaries
    image = find_image()
    assert image is not None
    cfg = SandboxConfig(backend="firecracker", state_dir=str(base / "s"), firecracker_path=fc,
                        jailer_path=jailer, kernel_path=str(kernel),
                        rootfs_path=str(image.rootfs), memory_mb=128, start_timeout_s=2.0,
                        pool=PoolConfig(min_ready=0, max_total=1),
                        firecracker_require_hardware_kvm=False)
    backend = FirecrackerBackend(cfg)
    await backend.start()
    try:
        assert "jailer" in str(backend.describe()["isolation"])
        with pytest.raises(BackendUnavailable) as err:
            await backend.start_guest("sb-jailed")
        assert "guest console tail" in str(err.value)
        leftovers = list(backend.dir.rglob("*"))
        assert leftovers == [backend.dir / os.path.basename(fc)] or leftovers == []
        assert orphaned_firecrackers(backend.base, set()) == []
    finally:
        await backend.aclose()
    assert not backend.base.exists()
