"""What a guest image is made of (Debian suite, packages, our kernel fragment, init and agent)
and the hashes that key its parts in the build cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import msgspec

from gateway_sandbox.agent import AGENT_PATH

__all__ = [
    "INIT_SCRIPT",
    "KERNEL_FRAGMENT",
    "LINUX_SOURCE_PACKAGE",
    "LINUX_SOURCE_TARBALL",
    "OPTIONAL_RUNTIMES",
    "RECIPE_VERSION",
    "Recipe",
    "debootstrap_key",
    "digest",
    "kernel_key",
    "linux_source_version",
    "rootfs_key",
]

KERNEL_FRAGMENT = Path(__file__).with_name("kernel.config")
INIT_SCRIPT = Path(__file__).with_name("init.sh")
LINUX_SOURCE_PACKAGE = "linux-source-6.1"
LINUX_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
# Bump when the build steps change in a way the inputs below do not show.
RECIPE_VERSION = 1

# debootstrap does not resolve virtual packages: rustc's `libc-dev` is named as libc6-dev.
OPTIONAL_RUNTIMES: dict[str, tuple[str, ...]] = {"node": ("nodejs",),
                                                 "rust": ("rustc", "libc6-dev")}


class Recipe(msgspec.Struct, frozen=True, kw_only=True):
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    # python3 is always there: the agent needs it. nodejs / rustc are options.
    packages: tuple[str, ...] = ("python3",)

    @classmethod
    def with_runtimes(cls, runtimes: list[str], **kw: str) -> Recipe:
        extra = tuple(pkg for r in runtimes for pkg in OPTIONAL_RUNTIMES[r])
        return cls(packages=("python3", *extra), **kw)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def linux_source_version() -> str:
    """The installed linux-source package's version (part of the kernel's cache key)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", LINUX_SOURCE_PACKAGE],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode == 0 and out.stdout:
        return out.stdout
    try:  # a tarball without dpkg: key by its size and mtime
        st = os.stat(LINUX_SOURCE_TARBALL)
    except OSError:
        return "absent"
    return f"tarball-{st.st_size}-{int(st.st_mtime)}"


def kernel_key(source_version: str) -> str:
    return digest(str(RECIPE_VERSION).encode(), source_version.encode(),
                   KERNEL_FRAGMENT.read_bytes())


def debootstrap_key(recipe: Recipe) -> str:
    return digest(str(RECIPE_VERSION).encode(), recipe.suite.encode(), recipe.mirror.encode(),
                   ",".join(sorted(recipe.packages)).encode())


def rootfs_key(recipe: Recipe) -> str:
    return digest(debootstrap_key(recipe).encode(), AGENT_PATH.read_bytes(),
                   INIT_SCRIPT.read_bytes())
