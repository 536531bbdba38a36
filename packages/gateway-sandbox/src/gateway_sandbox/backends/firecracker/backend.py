"""The Firecracker backend: each guest is a microVM (``vm``) with the agent on vsock; guests
are restored from a snapshot of one booted VM when possible, else cold-booted; a paused guest
is a snapshot on disk and no process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway_core.config.sandbox import SandboxConfig
from gateway_core.sandbox_types import Resources
from gateway_sandbox.backends.base import EgressRoute
from gateway_sandbox.backends.firecracker import vsock
from gateway_sandbox.backends.firecracker.api import (
    BootSource,
    Drive,
    MachineConfig,
    NetworkInterface,
    NetworkOverride,
    Vsock,
)
from gateway_sandbox.backends.firecracker.jailer import Jail, chroot_dir
from gateway_sandbox.backends.firecracker.vm import (
    VSOCK_UDS,
    FirecrackerVM,
    create_tap,
    make_work_drive,
    orphaned_firecrackers,
)
from gateway_sandbox.errors import BackendUnavailable, SandboxConflict
from gateway_sandbox.guest_layout import EGRESS_VSOCK_PORT
from gateway_sandbox.image.template import TemplateImage
from gateway_sandbox.protocol import AgentClient, ConnectionLost, Execute, Result
from gateway_sandbox.runtimes import Runtime

__all__ = [
    "BOOT_ARGS",
    "GUEST_CID",
    "FirecrackerBackend",
    "FirecrackerGuest",
    "firecracker_status",
    "first_contact",
    "hardware_kvm",
]

log = structlog.get_logger("gateway_sandbox")

GUEST_CID = 3
_IFACE = "eth0"
# Firecracker adds the virtio-mmio devices itself; init= is the image builder's init.
# `quiet`: every console byte is a VM exit, and a full boot log costs tens of milliseconds;
# errors and panics still reach console.log.
BOOT_ARGS = ("console=ttyS0 quiet reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux "
             "i8042.nopnp i8042.dumbkbd root=/dev/vda ro rootfstype=ext4 "
             "init=/sbin/gateway-init")


def _process_starttime(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def hardware_kvm() -> tuple[bool, str]:
    """Whether /dev/kvm is hardware virtualisation (Intel VT-x / AMD-V), and what it is."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist (no KVM on this host)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return False, ("/dev/kvm is kvm-pvm (software PVM virtualisation: /sys/module/kvm_pvm "
                       "is loaded, no Intel/AMD KVM); PVM only runs guest kernels built with PVM "
                       "guest support, which the guest kernel (Debian's linux-source) lacks, so "
                       "Firecracker guests cannot boot here")
    try:
        flags = {w for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError as exc:
        return False, f"cannot read /proc/cpuinfo: {exc}"
    for flag, name in (("vmx", "Intel VT-x"), ("svm", "AMD-V")):
        if flag in flags:
            return True, f"hardware KVM ({name})"
    return False, ("/dev/kvm exists but the CPU shows neither vmx nor svm: not hardware KVM, "
                   "so Firecracker guests cannot boot here")


def firecracker_status(cfg: SandboxConfig) -> tuple[bool, str]:
    """Whether this host can run Firecracker guests with ``cfg``, and why (or why not)."""
    missing: list[str] = []
    if not os.access(cfg.firecracker_path, os.X_OK):
        missing.append(f"no Firecracker binary at {cfg.firecracker_path}")
    if not os.path.isfile(cfg.kernel_path):
        missing.append(f"no guest kernel at {cfg.kernel_path} "
                       "(make one with `agentic-gateway sandbox build-image`)")
    if not os.path.isfile(cfg.rootfs_path):
        missing.append(f"no guest rootfs at {cfg.rootfs_path} "
                       "(make one with `agentic-gateway sandbox build-image`)")
    kvm_ok, kvm_why = hardware_kvm()
    if not kvm_ok:
        missing.append(kvm_why)
    if missing:
        return False, "; ".join(missing)
    return True, f"{cfg.firecracker_path}, {kvm_why}"


# Run in the guest on first contact with a restored clone: every clone starts from the same
# memory, so the same RNG state; mix in host randomness (RNDADDENTROPY credits it) and give
# the clone its own hostname.
_FIRST_CONTACT = """\
import base64, fcntl, socket, struct
seed = base64.b64decode({seed!r})
with open("/dev/random", "wb") as f:
    fcntl.ioctl(f, 0x40085203, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
socket.sethostname({hostname!r})
"""
_PY = Runtime(name="python", file="first_contact.py", run=["python3", "-I", "{file}"])


class FirecrackerGuest:
    """A running microVM whose agent listens on vsock."""

    def __init__(self, backend: FirecrackerBackend, sandbox_id: str, vm: FirecrackerVM,
                 *, restored: bool, work_drive: Path | None = None,
                 rootfs: str | None = None) -> None:
        self._backend = backend
        self._id = sandbox_id
        self.vm = vm
        self.restored = restored
        # Its root drive: the configured rootfs_path, or its template's ext4 image.
        self.rootfs = rootfs or backend.cfg.rootfs_path
        # The writable drive (disk_mb) mounted on /work; outside the VM directory, so a
        # snapshot's path to it stays valid after a resume into a new directory.
        self.work_drive = work_drive
        self.paused_snapshot: _Snapshot | None = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def backend(self) -> str:
        return "firecracker"

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await vsock.connect(str(self.vm.vsock_socket), self._backend.agent_port)

    def alive(self) -> bool:
        return self.paused_snapshot is not None or self.vm.alive()

    def egress_route(self) -> EgressRoute:
        # The guest's agent connects to the host's vsock port; Firecracker turns that into a
        # connection to this VM's own `v.sock_<port>`, where the proxy listens.
        jail = self.vm.jail
        return EgressRoute(self.vm.vsock_listener(EGRESS_VSOCK_PORT),
                           vsock_port=EGRESS_VSOCK_PORT,
                           uid=jail.uid if jail is not None else None)

    @property
    def keeps_connection_when_paused(self) -> bool:
        return False  # the VMM is stopped; the restored VM's agent is reached anew

    async def pause(self) -> None:
        """Pause the VM, snapshot it (state + memory) to disk, stop the VMM: a paused
        sandbox holds neither CPU nor memory. resume() restores it in a fresh VMM."""
        api = self.vm.api
        if api is None or not self.vm.alive():
            raise SandboxConflict("The sandbox's VM is not running; it cannot be paused.")
        snap = _Snapshot(self._backend.dir / f"{self._id}.paused")
        try:
            await api.pause()
            snap.dir.mkdir(exist_ok=True)
            if self.vm.jail is None:
                await api.snapshot_create(str(snap.state), str(snap.memory))
            else:  # written inside the chroot, kept outside it
                await api.snapshot_create("/vm.snap", "/vm.mem")
                os.link(self.vm.dir / "vm.snap", snap.state)
                os.link(self.vm.dir / "vm.mem", snap.memory)
        except (BackendUnavailable, OSError) as exc:
            with contextlib.suppress(BackendUnavailable):
                await api.resume()
            shutil.rmtree(snap.dir, ignore_errors=True)
            raise SandboxConflict(f"The sandbox could not be snapshotted: {exc}") from exc
        self.paused_snapshot = snap
        await self.vm.stop()

    async def resume(self) -> None:
        snap = self.paused_snapshot
        if snap is None:
            raise SandboxConflict("The sandbox's VM is not paused.")
        try:
            self.vm = await self._backend.restore(self._id, snap, work_drive=self.work_drive,
                                                  reseed=False, rootfs=self.rootfs)
        except BackendUnavailable as exc:
            raise SandboxConflict(f"The sandbox could not be restored: {exc}") from exc
        self.paused_snapshot = None
        await asyncio.to_thread(shutil.rmtree, snap.dir, True)

    async def stop(self) -> None:
        try:
            await self.vm.stop()
        finally:
            if self.paused_snapshot is not None:
                await asyncio.to_thread(shutil.rmtree, self.paused_snapshot.dir, True)
                self.paused_snapshot = None
            if self.work_drive is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.work_drive.unlink()
            self._backend.release(self)


class _Snapshot:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state = directory / "vm.snap"
        self.memory = directory / "vm.mem"


class FirecrackerBackend:
    """Guests are Firecracker microVMs booted from ``kernel_path`` + ``rootfs_path``."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self.agent_port = cfg.firecracker_agent_port
        self._instance = f"{os.getpid()}-{_process_starttime(os.getpid()) or '0'}"
        self.base = Path(cfg.state_dir) / "firecracker"
        self.dir = self.base / self._instance
        self._guests: dict[str, FirecrackerGuest] = {}
        # Warm-start snapshot per root drive (the default rootfs, each template's); None:
        # that one could not be made, so its guests cold-boot.
        self._snapshots: dict[str, _Snapshot | None] = {}
        self._snapshot_lock = asyncio.Lock()
        self.warm_start = "not tried yet" if cfg.firecracker_snapshots else \
            "off (firecracker_snapshots = false): cold boot"
        self._snapshot_failed = not cfg.firecracker_snapshots
        self._seq = 0
        self.reaped_stale = 0
        self._jail = Jail(jailer=cfg.jailer_path, uid=cfg.jailer_uid, gid=cfg.jailer_gid) \
            if cfg.jailer_path else None

    @property
    def name(self) -> str:
        return "firecracker"

    async def start(self) -> None:
        usable, why = firecracker_status(self.cfg)
        if not usable:
            _, kvm_why = hardware_kvm()
            # Only a software KVM may be overridden (a PVM-enabled guest kernel would boot).
            software_kvm_only = why == kvm_why and os.path.exists("/dev/kvm")
            if not software_kvm_only or self.cfg.firecracker_require_hardware_kvm:
                raise BackendUnavailable(f"Firecracker cannot run guests here: {why}")
            log.warning("firecracker_software_kvm", reason=why)
        if self._jail is not None and not os.access(self._jail.jailer, os.X_OK):
            raise BackendUnavailable(f"no jailer binary at {self._jail.jailer}")
        await asyncio.to_thread(self._reap_stale)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def _reap_stale(self) -> None:
        """Kill Firecracker processes and remove VM directories that runs of this state dir
        which are no longer alive left behind (a gateway killed without cleanup)."""
        if not self.base.is_dir():
            return
        live = {self._instance}
        for child in self.base.iterdir():
            pid_s, _, start = child.name.partition("-")
            if pid_s.isdigit() and _process_starttime(int(pid_s)) == start:
                live.add(child.name)  # another live gateway worker sharing the state dir
        for pid in orphaned_firecrackers(self.base, live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                self.reaped_stale += 1
        for child in self.base.iterdir():
            if child.name not in live:
                shutil.rmtree(child, ignore_errors=True)
        log.info("firecracker_stale_reaped", processes=self.reaped_stale)

    def _new_vm(self, label: str) -> FirecrackerVM:
        self._seq += 1
        # Short names keep the sockets under the 108-byte sun_path limit.
        # The instance is hashed in too: tap names are host-wide, shared by all workers.
        short = hashlib.sha256(f"{self._instance}-{label}-{self._seq}".encode()
                               ).hexdigest()[:10]
        if self._jail is not None:
            chroot = chroot_dir(self.dir, self.cfg.firecracker_path, short)
            return FirecrackerVM(self.cfg.firecracker_path, chroot, jail=self._jail)
        return FirecrackerVM(self.cfg.firecracker_path, self.dir / short)

    async def configure(self, vm: FirecrackerVM, resources: Resources | None = None,
                        work_drive: Path | None = None, rootfs: str | None = None) -> None:
        """Everything before InstanceStart; ``rootfs``: the root drive (a template's ext4
        image; default rootfs_path)."""
        api = vm.api
        assert api is not None
        await vm.configure_logs()
        kernel = await asyncio.to_thread(vm.provide, self.cfg.kernel_path, "vmlinux")
        root = await asyncio.to_thread(vm.provide, rootfs or self.cfg.rootfs_path,
                                       "rootfs.ext4")
        await api.boot_source(BootSource(
            kernel_image_path=kernel,
            boot_args=f"{BOOT_ARGS} gateway.agent=vsock:{self.agent_port}"))
        await api.drive(Drive(drive_id="rootfs", path_on_host=root,
                              is_root_device=True, is_read_only=True))
        if work_drive is not None:
            # init mounts it on /work (guest_layout.WORK_DRIVE): the sandbox's disk quota.
            work = await asyncio.to_thread(vm.provide, str(work_drive), "work.ext4")
            await api.drive(Drive(drive_id="work", path_on_host=work, is_root_device=False,
                                  is_read_only=False))
        await api.machine_config(MachineConfig(
            vcpu_count=max(1, math.ceil(resources.cpus)) if resources else self.cfg.vcpus,
            mem_size_mib=resources.memory_mb if resources else self.cfg.memory_mb))
        await api.vsock(Vsock(guest_cid=GUEST_CID, uds_path=VSOCK_UDS))
        await api.entropy()
        if self.cfg.network:
            tap = await self._new_tap(vm)
            await api.network_interface(NetworkInterface(iface_id=_IFACE, host_dev_name=tap))

    async def _new_tap(self, vm: FirecrackerVM) -> str:
        """A tap of the VM's own (removed by its stop()). Named from the VM's id, not its
        directory: jailed, every directory is called ``root``."""
        vm.tap = f"fc{vm.name[:10]}"
        await asyncio.to_thread(create_tap, vm.tap)
        return vm.tap

    async def launch(self, label: str, resources: Resources | None = None,
                     work_drive: Path | None = None, rootfs: str | None = None
                     ) -> FirecrackerVM:
        """A new VM, configured and started (InstanceStart); its agent is not waited for."""
        vm = self._new_vm(label)
        try:
            await vm.spawn(vm_id=vm.name)
            await self.configure(vm, resources, work_drive, rootfs)
            assert vm.api is not None
            await vm.api.instance_start()
        except BaseException:
            await vm.stop()
            raise
        return vm

    async def cold_boot(self, label: str, resources: Resources | None = None,
                        work_drive: Path | None = None, rootfs: str | None = None
                        ) -> FirecrackerVM:
        vm = await self.launch(label, resources, work_drive, rootfs)
        try:
            await vsock.wait_for_agent(vm, self.agent_port, self.cfg.start_timeout_s)
        except BaseException:
            await vm.stop()
            raise
        return vm

    async def restore(self, label: str, snap: _Snapshot, *, work_drive: Path | None = None,
                      reseed: bool = True, rootfs: str | None = None) -> FirecrackerVM:
        """A VM from ``snap``: the pool's template (a clone: reseeded and renamed) or a
        paused sandbox's own snapshot (``reseed=False``: the same machine, resumed)."""
        vm = self._new_vm(label)
        try:
            await vm.spawn(vm_id=vm.name)
            await vm.configure_logs()
            assert vm.api is not None
            # Jailed, the snapshot and the rootfs path baked into it must be in the chroot.
            await asyncio.to_thread(vm.provide, rootfs or self.cfg.rootfs_path, "rootfs.ext4")
            if work_drive is not None:
                await asyncio.to_thread(vm.provide, str(work_drive), "work.ext4")
            state = await asyncio.to_thread(vm.provide, str(snap.state), "vm.snap")
            memory = await asyncio.to_thread(vm.provide, str(snap.memory), "vm.mem")
            # The tap named in the snapshot went with the VM that took it (and a clone's
            # siblings would share it): each restored VM gets its own.
            overrides: list[NetworkOverride] = []
            if self.cfg.network:
                tap = await self._new_tap(vm)
                overrides.append(NetworkOverride(iface_id=_IFACE, host_dev_name=tap))
            await vm.api.snapshot_load(state, memory, resume=True, network_overrides=overrides)
            client = await vsock.wait_for_agent(vm, self.agent_port,
                                                self.cfg.start_timeout_s, keep=True)
            assert client is not None
            try:
                if reseed:
                    await first_contact(client, hostname=label)
            finally:
                await client.aclose()
        except BaseException:
            await vm.stop()
            raise
        return vm

    async def _ensure_snapshot(self, rootfs: str) -> _Snapshot | None:
        async with self._snapshot_lock:
            if self._snapshot_failed:
                return None
            if rootfs in self._snapshots:
                return self._snapshots[rootfs]
            self._snapshots[rootfs] = None  # until it is made
            default = rootfs == self.cfg.rootfs_path
            name = "snapshot" if default else \
                "snapshot-" + hashlib.sha256(rootfs.encode()).hexdigest()[:10]
            snap = _Snapshot(self.dir / name)
            began = time.monotonic()
            try:
                vm = await self.cold_boot("template", rootfs=rootfs)
            except BackendUnavailable as exc:
                self.warm_start = f"cold boot: the snapshot template did not boot ({exc})"
                log.warning("firecracker_snapshot_unavailable", reason=self.warm_start)
                return None
            try:
                assert vm.api is not None
                await vm.api.pause()
                snap.dir.mkdir(exist_ok=True)
                if vm.jail is None:
                    await vm.api.snapshot_create(str(snap.state), str(snap.memory))
                else:  # written inside the chroot, kept outside it
                    await vm.api.snapshot_create("/vm.snap", "/vm.mem")
                    os.link(vm.dir / "vm.snap", snap.state)
                    os.link(vm.dir / "vm.mem", snap.memory)
            except (BackendUnavailable, OSError) as exc:
                self.warm_start = f"cold boot: snapshotting failed ({exc})"
                log.warning("firecracker_snapshot_unavailable", reason=self.warm_start)
                shutil.rmtree(snap.dir, ignore_errors=True)
                return None
            finally:
                await vm.stop()
            self._snapshots[rootfs] = snap
            self.warm_start = "restore from snapshot"
            log.info("firecracker_snapshot_ready", ms=round((time.monotonic() - began) * 1000))
            return snap

    async def start_guest(self, sandbox_id: str, resources: Resources | None = None,
                          template: TemplateImage | None = None) -> FirecrackerGuest:
        if not self.dir.is_dir():
            raise BackendUnavailable("the firecracker backend was not started")
        # A template's ext4 image is the root drive instead of rootfs_path.
        rootfs = str(template.rootfs) if template is not None else self.cfg.rootfs_path
        if resources is not None:
            # Its own vCPUs, memory and a writable drive of disk_mb: a cold boot.
            drive = self.dir / f"{sandbox_id}.work.ext4"
            try:
                await asyncio.to_thread(make_work_drive, drive, resources.disk_mb)
                sized = await self.cold_boot(sandbox_id, resources, drive, rootfs)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    drive.unlink()
                raise
            guest = FirecrackerGuest(self, sandbox_id, sized, restored=False,
                                     work_drive=drive, rootfs=rootfs)
            self._guests[sandbox_id] = guest
            return guest
        snap = await self._ensure_snapshot(rootfs)
        vm: FirecrackerVM | None = None
        if snap is not None:
            try:
                vm = await self.restore(sandbox_id, snap, rootfs=rootfs)
            except BackendUnavailable as exc:
                log.warning("firecracker_restore_failed", reason=str(exc),
                            fallback="cold boot")
        restored = vm is not None
        if vm is None:
            vm = await self.cold_boot(sandbox_id, rootfs=rootfs)
        guest = FirecrackerGuest(self, sandbox_id, vm, restored=restored, rootfs=rootfs)
        self._guests[sandbox_id] = guest
        return guest

    def release(self, guest: FirecrackerGuest) -> None:
        self._guests.pop(guest.id, None)

    def describe(self) -> dict[str, object]:
        return {
            "backend": "firecracker",
            "isolation": "Firecracker microVM (KVM), one guest kernel per sandbox"
                         + (f"; jailer: chroot per VM, uid {self._jail.uid}"
                            if self._jail is not None else ""),
            "firecracker": self.cfg.firecracker_path,
            "kernel": self.cfg.kernel_path,
            "rootfs": self.cfg.rootfs_path + " (read-only, shared; /work and /tmp are tmpfs)",
            "vcpus": self.cfg.vcpus,
            "memory_mb": self.cfg.memory_mb,
            "network": self.cfg.network,
            "warm_start": self.warm_start,
            "kvm": hardware_kvm()[1],
        }

    async def aclose(self) -> None:
        guests = list(self._guests.values())
        await asyncio.gather(*(g.stop() for g in guests), return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
        with contextlib.suppress(OSError):
            self.base.rmdir()


async def first_contact(client: AgentClient, *, hostname: str,
                        entropy: Callable[[int], bytes] = os.urandom) -> None:
    """Reseed a restored clone's RNG from the host and set its own hostname."""
    code = _FIRST_CONTACT.format(seed=base64.b64encode(entropy(64)).decode(),
                                 hostname=hostname[:63])
    msg = Execute(id=client.new_id(), runtime=_PY, code=code, timeout_s=10.0,
                  max_output_bytes=4096)
    queue = await client.send(msg)
    try:
        while True:
            reply = await asyncio.wait_for(queue.get(), 15.0)
            if isinstance(reply, ConnectionLost):
                raise BackendUnavailable(f"the restored guest's agent went away: {reply}")
            if isinstance(reply, Result):
                break
    finally:
        client.forget(msg.id)
    if reply.exit_code != 0:
        raise BackendUnavailable(f"reseeding the restored guest failed: {reply.stderr[-500:]}")
