"""Per-sandbox cgroups for the process backend: cgroup v2 where the host delegates it, else
the v1 ``memory``/``pids``/``cpu`` controllers under /sys/fs/cgroup. Best effort: what
could not be set up is reported, not fatal."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import msgspec

__all__ = ["CGROUP_ROOT", "CgroupLimits", "CgroupManager", "V1_CONTROLLERS", "kill_and_remove"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")


class CgroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    memory_bytes: int
    max_processes: int
    cpus: float


def _own_v1_path(controller: str) -> str:
    """This process's cgroup in a v1 hierarchy (so jails nest under the gateway's limits)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if controller in ctrls.split(","):
                return path
    except OSError:
        pass
    return "/"


def _own_v2_path() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return "/"


class CgroupManager:
    """Creates ``<parent>/<group>/<sandbox id>`` per sandbox and removes it, killing all in it."""

    def __init__(self, group: str, limits: CgroupLimits) -> None:
        self.group = group
        self.limits = limits
        self.version: str | None = None
        self.parents: dict[str, Path] = {}  # controller (or "unified") -> our parent dir
        self.reason = ""

    def setup(self) -> None:
        """Find a place where we may create cgroups; record why not when there is none."""
        reasons: list[str] = []
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            parent = CGROUP_ROOT / _own_v2_path().lstrip("/") / self.group
            try:
                parent.mkdir(exist_ok=True)
                enabled = (parent.parent / "cgroup.subtree_control").read_text().split()
                wanted = [c for c in ("memory", "pids", "cpu") if c not in enabled]
                if wanted:
                    (parent.parent / "cgroup.subtree_control").write_text(
                        " ".join("+" + c for c in wanted))
                (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
                self.version = "v2"
                self.parents = {"unified": parent}
                return
            except OSError as exc:
                reasons.append(f"cgroup v2 not delegated here: {exc.strerror}")
        else:
            for ctrl in V1_CONTROLLERS:
                base = CGROUP_ROOT / ctrl
                if not base.is_dir():
                    reasons.append(f"no v1 {ctrl} hierarchy")
                    continue
                own = base / _own_v1_path(ctrl).lstrip("/")
                parent = (own if own.is_dir() else base) / self.group
                try:
                    parent.mkdir(exist_ok=True)
                except OSError as exc:
                    reasons.append(f"cannot create a v1 {ctrl} cgroup: {exc.strerror}")
                    continue
                self.parents[ctrl] = parent
            if self.parents:
                self.version = "v1"
        self.reason = "; ".join(reasons)

    def describe(self) -> dict[str, object]:
        if self.version is None:
            return {"enabled": False, "reason": self.reason or "no cgroup hierarchy"}
        out: dict[str, object] = {"enabled": True, "version": self.version,
                                  "controllers": sorted(self.parents) if self.version == "v1"
                                  else ["memory", "pids", "cpu"],
                                  "memory_bytes": self.limits.memory_bytes,
                                  "max_processes": self.limits.max_processes,
                                  "cpus": self.limits.cpus}
        if self.reason:
            out["missing"] = self.reason
        return out

    @property
    def can_freeze(self) -> bool:
        return "freezer" in self.parents or self.version == "v2"

    def create(self, name: str, limits: CgroupLimits | None = None) -> list[Path]:
        """Make the sandbox's cgroups with limits; returns the ``cgroup.procs`` files to join."""
        procs: list[Path] = []
        lim = limits or self.limits
        period = 100_000
        for ctrl, parent in self.parents.items():
            d = parent / name
            d.mkdir(exist_ok=True)
            if ctrl == "unified":
                _write(d / "memory.max", str(lim.memory_bytes))
                _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(lim.max_processes))
                _write(d / "cpu.max", f"{int(lim.cpus * period)} {period}")
            elif ctrl == "memory":
                _write(d / "memory.limit_in_bytes", str(lim.memory_bytes))
            elif ctrl == "pids":
                _write(d / "pids.max", str(lim.max_processes))
            elif ctrl == "cpu":
                _write(d / "cpu.cfs_period_us", str(period))
                _write(d / "cpu.cfs_quota_us", str(int(lim.cpus * period)))
            procs.append(d / "cgroup.procs")
        return procs

    def freeze(self, name: str, frozen: bool) -> None:
        """Freeze (or thaw) every process of the sandbox: v1 ``freezer.state``, v2
        ``cgroup.freeze``; returns once the kernel says it is done."""
        if "freezer" in self.parents:
            state = self.parents["freezer"] / name / "freezer.state"
            want = "FROZEN" if frozen else "THAWED"
            state.write_text(want)
            check = state
        elif self.version == "v2":
            d = self.parents["unified"] / name
            (d / "cgroup.freeze").write_text("1" if frozen else "0")
            check, want = d / "cgroup.events", f"frozen {1 if frozen else 0}"
        else:
            raise OSError(f"no cgroup freezer here ({self.reason or 'no cgroups'})")
        # Bounded: freezing settles within milliseconds (FREEZING -> FROZEN).
        for _ in range(500):
            if want in check.read_text():
                return
            time.sleep(0.002)
        raise OSError(f"the cgroup did not reach {want}")

    def cpu_seconds(self, name: str) -> float | None:
        """CPU time (user + system) the sandbox's live processes used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        for parent in self.parents.values():
            try:
                pids = (parent / name / "cgroup.procs").read_text().split()
            except OSError:
                continue
            total = 0
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])
            return total / tick
        return None

    def remove(self, name: str) -> None:
        for ctrl, parent in self.parents.items():
            if ctrl == "freezer":
                # A frozen task cannot die: thaw before killing.
                _write(parent / name / "freezer.state", "THAWED")
            elif ctrl == "unified":
                _write(parent / name / "cgroup.freeze", "0")
            kill_and_remove(parent / name)

    def cleanup_all(self) -> None:
        """Remove every sandbox cgroup a previous run of this state dir left behind."""
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                for child in parent.iterdir():
                    if child.is_dir():
                        _write(child / "freezer.state", "THAWED")
                        kill_and_remove(child)


def _write(path: Path, value: str) -> None:
    with contextlib.suppress(OSError):
        path.write_text(value)


def kill_and_remove(d: Path) -> None:
    if not d.is_dir():
        return
    if (d / "cgroup.kill").exists():
        _write(d / "cgroup.kill", "1")
    # Bounded: a cgroup empties within milliseconds of SIGKILL to all its members.
    for _ in range(100):
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
