"""One Firecracker process in its own directory (API socket, vsock socket, console log,
logs): spawn it (plain or under the jailer), configure its logs, kill, reap, clean up; the tap
devices and work drives VMs are given, and finding VMMs a dead gateway left behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path

from gateway_sandbox.backends.descriptors import cloexec_above_stderr
from gateway_sandbox.backends.firecracker.api import FirecrackerApi, Logger, Metrics
from gateway_sandbox.backends.firecracker.jailer import Jail, jailer_argv
from gateway_sandbox.errors import BackendUnavailable

__all__ = [
    "API_SOCK",
    "CONSOLE_LOG",
    "FC_LOG",
    "METRICS",
    "VSOCK_UDS",
    "FirecrackerVM",
    "create_tap",
    "delete_tap",
    "make_work_drive",
    "orphaned_firecrackers",
]

API_SOCK = "api.sock"
VSOCK_UDS = "v.sock"  # relative: resolved in each VM's own working directory
CONSOLE_LOG = "console.log"
FC_LOG = "firecracker.log"
METRICS = "metrics.json"
_SUN_PATH_MAX = 107
_PR_SET_PDEATHSIG = 1


async def _accepts(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _pdeathsig() -> None:
    """In the child: die with the gateway, so no VM outlives the process that owns it; and
    take none of the gateway's descriptors along."""
    cloexec_above_stderr()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class FirecrackerVM:
    """One Firecracker process in its own directory: spawn, configure over the API, kill,
    reap, crash detection, cleanup. The directory is the process's working directory, so
    every path Firecracker is given (vsock socket, logs) can be relative to it.

    Jailed, the directory must be ``<chroot base>/<binary name>/<vm id>/root`` (the jailer's
    layout): it is the chroot, and files Firecracker opens are linked into it (``provide``)."""

    def __init__(self, binary: str, directory: Path, *, jail: Jail | None = None) -> None:
        self.binary = binary
        self.dir = directory
        self.jail = jail
        # What stop() removes: jailed, the jailer's <vm id> directory around the chroot.
        self._top = directory.parent if jail is not None else directory
        self.proc: asyncio.subprocess.Process | None = None
        self.api: FirecrackerApi | None = None
        self.tap: str | None = None
        self._stopped = False
        for name in (API_SOCK, VSOCK_UDS):
            if len(str(self.dir / name)) > _SUN_PATH_MAX:
                raise BackendUnavailable(
                    f"socket path {self.dir / name} is over {_SUN_PATH_MAX} bytes; use a "
                    "shorter state_dir")

    @property
    def name(self) -> str:
        """The VM's id (its directory's name; jailed, the jailer's --id)."""
        return self._top.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def api_socket(self) -> Path:
        return self.dir / API_SOCK

    @property
    def vsock_socket(self) -> Path:
        return self.dir / VSOCK_UDS

    def vsock_listener(self, port: int) -> Path:
        """Where the host listens for the guest's vsock connections to ``port``: Firecracker
        connects to ``<uds_path>_<port>`` (docs/vsock.md, "guest-initiated connections")."""
        return self.dir / f"{VSOCK_UDS}_{port}"

    async def spawn(self, *, vm_id: str, timeout_s: float = 5.0) -> FirecrackerApi:
        """Start Firecracker in the VM directory and return once its API socket answers."""
        self._top.mkdir(parents=True, exist_ok=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for name in (FC_LOG, METRICS):
            (self.dir / name).touch()
            if self.jail is not None:
                os.chown(self.dir / name, self.jail.uid, self.jail.gid)
        argv = [self.binary, "--api-sock", API_SOCK, "--id", vm_id]
        if self.jail is not None:
            argv = jailer_argv(self.jail, self.binary, self.dir, vm_id,
                               ["--api-sock", API_SOCK])
        console = open(self.dir / CONSOLE_LOG, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                start_new_session=True, preexec_fn=_pdeathsig)
        except OSError as exc:
            raise BackendUnavailable(f"cannot start Firecracker {self.binary}: {exc}") from exc
        finally:
            console.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Bounded by the deadline; the socket usually answers within a few milliseconds.
        # It exists between bind() and listen() (seen with v1.7): wait until it accepts.
        while not await _accepts(self.api_socket):
            if self.proc.returncode is not None:
                raise BackendUnavailable(
                    f"Firecracker exited with {self.proc.returncode} at start: "
                    f"{self.console_tail(800)}")
            if loop.time() > deadline:
                raise BackendUnavailable(f"Firecracker's API socket did not appear within "
                                         f"{timeout_s} s: {self.console_tail(800)}")
            await asyncio.sleep(0.001)
        self.api = FirecrackerApi(str(self.api_socket))
        return self.api

    def provide(self, host_path: str, name: str) -> str:
        """The path to give Firecracker for a host file: as is, or jailed, hard-linked (else
        copied) into the chroot and named from its root."""
        if self.jail is None:
            return host_path
        target = self.dir / name
        try:
            os.link(host_path, target)
        except OSError:  # another filesystem: copy (slow for a big rootfs; keep them together)
            shutil.copyfile(host_path, target)
        return f"/{name}"

    async def configure_logs(self) -> None:
        assert self.api is not None
        await self.api.logger(Logger(log_path=FC_LOG, level="Info"))
        await self.api.metrics(Metrics(metrics_path=METRICS))

    def alive(self) -> bool:
        """False once the process has exited (asyncio's child watcher has reaped it)."""
        return not self._stopped and self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def console_tail(self, limit: int = 2000) -> str:
        """The end of the guest's serial console (and Firecracker's own stdout)."""
        try:
            with open(self.dir / CONSOLE_LOG, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def kill(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns once the process is reaped."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)

    async def stop(self) -> None:
        """Kill, reap, and remove the directory and tap. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.api is not None:
                await self.api.aclose()
            await self.kill()
        finally:
            if self.tap is not None:
                await asyncio.to_thread(delete_tap, self.tap)
                self.tap = None
            await asyncio.to_thread(shutil.rmtree, self._top, True)


def _run_ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, timeout=10, check=False)
    if res.returncode != 0:
        raise BackendUnavailable(f"`ip {' '.join(args)}` failed: "
                                 f"{res.stderr.decode(errors='replace').strip()}")


def create_tap(name: str) -> None:
    _run_ip("tuntap", "add", "dev", name, "mode", "tap")
    _run_ip("link", "set", name, "up")


def delete_tap(name: str) -> None:
    with contextlib.suppress(BackendUnavailable, OSError, subprocess.TimeoutExpired):
        _run_ip("link", "del", name)


def make_work_drive(path: Path, size_mb: int) -> None:
    """A sparse ext4 image of ``size_mb`` for the guest's /work (mkfs.ext4 on the host)."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    try:
        res = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1",
                              str(path)], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"cannot make the sandbox's work drive: {exc}") from exc
    if res.returncode != 0:
        raise BackendUnavailable("cannot make the sandbox's work drive: "
                                 + res.stderr.decode(errors="replace").strip()[:300])
    if os.geteuid() == 0:
        # The guest's root owns the filesystem it formats as; nothing else needs it.
        os.chmod(path, 0o600)


def orphaned_firecrackers(base: Path, live: set[str]) -> list[int]:
    """Firecracker processes whose working directory is under ``base`` but not under one of
    the ``live`` instance directories (their VM dir may already be deleted)."""
    found: list[int] = []
    prefix = str(base.resolve()) + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0", 1)[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if not os.path.basename(argv0.decode(errors="replace")).startswith("firecracker"):
            continue
        if not cwd.startswith(prefix):
            continue
        instance = cwd[len(prefix):].split("/", 1)[0]
        if instance not in live:
            found.append(int(entry))
    return found
