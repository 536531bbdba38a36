"""Firecracker under its jailer (chroot, its own uid/gid, device nodes made for it): the
directory layout the jailer expects and the command line that starts a VM inside it.
(https://github.com/firecracker-microvm/firecracker/blob/main/docs/jailer.md)"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from gateway_sandbox.errors import BackendUnavailable

__all__ = ["Jail", "chroot_dir", "jailer_argv"]


class Jail(msgspec.Struct, frozen=True, kw_only=True):
    """Run Firecracker under its jailer: chroot, own uid/gid, device nodes made for it."""

    jailer: str
    uid: int
    gid: int


def chroot_dir(base: Path, binary: str, vm_id: str) -> Path:
    """The chroot the jailer makes for ``vm_id``: ``<base>/<binary name>/<vm id>/root``."""
    return base / os.path.basename(binary) / vm_id / "root"


def jailer_argv(jail: Jail, binary: str, directory: Path, vm_id: str,
                firecracker_args: list[str]) -> list[str]:
    """The jailer's command line for a VM whose chroot is ``directory``."""
    if directory != chroot_dir(directory.parent.parent.parent, binary, vm_id):
        raise BackendUnavailable(f"jailed VM directory {directory} is not "
                                 f"<base>/{os.path.basename(binary)}/{vm_id}/root")
    # No --daemonize, no new pid namespace: the jailer execs Firecracker in place,
    # so the pid we wait for is Firecracker's.
    return [jail.jailer, "--id", vm_id, "--exec-file", binary,
            "--uid", str(jail.uid), "--gid", str(jail.gid),
            "--chroot-base-dir", str(directory.parent.parent.parent),
            "--", *firecracker_args]
