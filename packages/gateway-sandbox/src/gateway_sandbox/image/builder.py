"""Builds the guest image from Debian packages: a tinyconfig kernel of Debian's linux-source
plus our fragment, and an ext4 rootfs (debootstrap minbase + runtimes + agent + init) made
without mounting; each part cached under the hash of what it is made of."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec

from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.image.recipe import (
    INIT_SCRIPT,
    KERNEL_FRAGMENT,
    LINUX_SOURCE_PACKAGE,
    LINUX_SOURCE_TARBALL,
    Recipe,
    debootstrap_key,
    kernel_key,
    linux_source_version,
    rootfs_key,
)

__all__ = [
    "BuildError",
    "GUEST_AGENT",
    "GUEST_INIT",
    "GuestImage",
    "build",
    "build_kernel",
    "build_rootfs",
    "check_prerequisites",
    "debootstrap_tree",
    "default_cache_dir",
    "find_image",
    "install_guest_files",
    "make_ext4",
    "run_logged",
    "say",
    "tree_bytes",
]

GUEST_AGENT = "opt/gateway-agent/agent.py"
GUEST_INIT = "sbin/gateway-init"
_MIN_FREE_BYTES = 6 * 1024**3
_KERNEL_TOOLS = {"make": "make", "gcc": "gcc", "bc": "bc", "flex": "flex", "bison": "bison",
                 "tar": "tar", "xz": "xz-utils", "perl": "perl"}
_KERNEL_HEADERS = {"/usr/include/gelf.h": "libelf-dev",
                   "/usr/include/openssl/ssl.h": "libssl-dev"}


class BuildError(Exception):
    """A step of the build failed; the message says which and where its log is."""


class GuestImage(msgspec.Struct, frozen=True, kw_only=True):
    kernel: Path
    rootfs: Path
    # The unpacked root the ext4 image was made from (usable as process_rootfs_dir).
    root_dir: Path | None = None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agentic-gateway" / "guest-image"


def find_image(directory: str | Path | None = None) -> GuestImage | None:
    """The built image in ``directory`` (else $GATEWAY_GUEST_IMAGE, else the default cache),
    or None when it holds no ``vmlinux`` and ``rootfs.ext4``."""
    d = Path(directory or os.environ.get("GATEWAY_GUEST_IMAGE") or default_cache_dir())
    kernel, rootfs = d / "vmlinux", d / "rootfs.ext4"
    if not (kernel.is_file() and rootfs.is_file()):
        return None
    root = rootfs.resolve().parent / "root"
    return GuestImage(kernel=kernel.resolve(), rootfs=rootfs.resolve(),
                      root_dir=root.resolve() if root.is_dir() else None)


def say(msg: str) -> None:
    print(f"build-image: {msg}", file=sys.stderr, flush=True)


def check_prerequisites(out: Path, recipe: Recipe, *, need_kernel: bool,
                        need_rootfs: bool) -> list[str]:
    """Everything missing for the parts still to build, each with what to do about it."""
    missing: list[str] = []
    if need_kernel:
        for tool, pkg in _KERNEL_TOOLS.items():
            if shutil.which(tool) is None:
                missing.append(f"`{tool}` not found (apt-get install {pkg})")
        for header, pkg in _KERNEL_HEADERS.items():
            if not os.path.exists(header):
                missing.append(f"{header} not found (apt-get install {pkg})")
        if not LINUX_SOURCE_TARBALL.is_file():
            missing.append(f"{LINUX_SOURCE_TARBALL} not found "
                           f"(apt-get install {LINUX_SOURCE_PACKAGE})")
    if need_rootfs:
        if os.geteuid() != 0:
            missing.append("debootstrap needs root: run build-image as root (or with sudo)")
        if shutil.which("debootstrap") is None:
            missing.append("`debootstrap` not found (apt-get install debootstrap)")
        try:
            urllib.request.urlopen(
                f"{recipe.mirror}/dists/{recipe.suite}/Release", timeout=15).close()
        except (urllib.error.URLError, OSError) as exc:
            missing.append(f"the Debian mirror {recipe.mirror} is not reachable ({exc})")
    if need_kernel or need_rootfs:
        if shutil.which("mkfs.ext4") is None and need_rootfs:
            missing.append("`mkfs.ext4` not found (apt-get install e2fsprogs)")
        out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out).free
        if free < _MIN_FREE_BYTES:
            missing.append(f"only {free // 1024**2} MiB free in {out}; the build needs "
                           f"{_MIN_FREE_BYTES // 1024**3} GiB")
    return missing


def run_logged(argv: list[str], log: Path, *, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(argv)}\n".encode())
        f.flush()
        res = subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, check=False)
    if res.returncode != 0:
        tail = log.read_bytes()[-1500:].decode(errors="replace")
        raise BuildError(f"`{' '.join(argv)}` failed with {res.returncode} (log: {log}):\n"
                         f"{tail}")


def _fragment_options() -> dict[str, str]:
    opts: dict[str, str] = {}
    for line in KERNEL_FRAGMENT.read_text().splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            opts[name] = value
    return opts


def build_kernel(out: Path, key: str) -> Path:
    target = out / f"kernel-{key}" / "vmlinux"
    if target.is_file():
        return target
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    log = build / f"kernel-{key}.log"
    tree = build / LINUX_SOURCE_PACKAGE
    began = time.monotonic()
    if not (tree / "Makefile").is_file():
        say(f"unpacking {LINUX_SOURCE_TARBALL}")
        shutil.rmtree(tree, ignore_errors=True)
        run_logged(["tar", "-C", str(build), "-xf", str(LINUX_SOURCE_TARBALL)], log)
    say("configuring: make tinyconfig + our fragment")
    run_logged(["make", "tinyconfig"], log, cwd=tree)
    run_logged(["scripts/kconfig/merge_config.sh", "-m", ".config", str(KERNEL_FRAGMENT)], log,
         cwd=tree)
    run_logged(["make", "olddefconfig"], log, cwd=tree)
    final = {}
    for line in (tree / ".config").read_text().splitlines():
        if line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            final[name] = value
    dropped = [f"{k}={v}" for k, v in _fragment_options().items() if final.get(k) != v]
    if dropped:
        # Kconfig drops an option whose dependencies are unmet; say which, keep going.
        say("options the kernel config did not take (unmet dependencies): "
             + ", ".join(dropped))
    jobs = str(os.cpu_count() or 1)
    say(f"compiling: make -j{jobs} vmlinux (minutes; log: {log})")
    run_logged(["make", f"-j{jobs}", "vmlinux"], log, cwd=tree)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tree / ".config", target.parent / "config")
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(tree / "vmlinux", tmp)
    os.replace(tmp, target)
    say(f"kernel built in {time.monotonic() - began:.0f} s: {target}")
    return target


def debootstrap_tree(out: Path, recipe: Recipe) -> Path:
    tree = out / f"debootstrap-{debootstrap_key(recipe)}"
    if (tree / ".complete").is_file():
        return tree
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    log = build / f"{tree.name}.log"
    shutil.rmtree(tree, ignore_errors=True)
    began = time.monotonic()
    say(f"debootstrap --variant=minbase {recipe.suite} + {', '.join(recipe.packages)}")
    run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
          recipe.suite, str(tree), recipe.mirror], log)
    # Package caches are of no use in a read-only guest.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (tree / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    (tree / ".complete").write_text(f"{time.monotonic() - began:.1f}\n")
    say(f"debootstrap took {time.monotonic() - began:.0f} s")
    return tree


def install_guest_files(tree: Path) -> None:
    for rel, src, mode in ((GUEST_AGENT, AGENT_PATH, 0o644), (GUEST_INIT, INIT_SCRIPT, 0o755)):
        dest = tree / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    (tree / "work").mkdir(exist_ok=True)
    (tree / "etc" / "hostname").write_text("sandbox\n")


def tree_bytes(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def make_ext4(tree: Path, image: Path, log: Path) -> int:
    """Pack ``tree`` into a new ext4 image file (its size in MiB), checked with e2fsck."""
    size_mb = int(tree_bytes(tree) * 1.25 / 1024**2) + 64
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024**2)
    # No journal: the guests mount it read-only. -d copies the tree without mounting.
    run_logged(["mkfs.ext4", "-q", "-F", "-L", "agw-root", "-O", "^has_journal",
          "-E", "root_owner=0:0", "-d", str(tree), str(image)], log)
    run_logged(["e2fsck", "-fn", str(image)], log)
    return size_mb


def build_rootfs(out: Path, recipe: Recipe, key: str) -> Path:
    target = out / f"rootfs-{key}" / "rootfs.ext4"
    if target.is_file():
        return target
    tree = debootstrap_tree(out, recipe)
    install_guest_files(tree)
    began = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    log = out / "build" / f"rootfs-{key}.log"
    tmp = target.with_suffix(".tmp")
    size_mb = make_ext4(tree, tmp, log)
    os.replace(tmp, target)
    root_link = target.parent / "root"
    if not root_link.exists():
        root_link.symlink_to(tree)
    say(f"rootfs image ({size_mb} MiB) made in {time.monotonic() - began:.1f} s: {target}")
    return target


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def build(out: Path | None = None, recipe: Recipe | None = None) -> GuestImage:
    """Build (or find in the cache) the kernel and rootfs for ``recipe`` under ``out``;
    ``out/vmlinux`` and ``out/rootfs.ext4`` then point at them."""
    out = (out or default_cache_dir()).absolute()
    recipe = recipe or Recipe()
    kkey = kernel_key(linux_source_version())
    rkey = rootfs_key(recipe)
    kernel = out / f"kernel-{kkey}" / "vmlinux"
    rootfs = out / f"rootfs-{rkey}" / "rootfs.ext4"
    missing = check_prerequisites(out, recipe, need_kernel=not kernel.is_file(),
                                  need_rootfs=not rootfs.is_file())
    if missing:
        raise BuildError("cannot build the guest image:\n" +
                         "\n".join(f"  - {m}" for m in missing))
    kernel = build_kernel(out, kkey)
    rootfs = build_rootfs(out, recipe, rkey)
    _point(out / "vmlinux", kernel)
    _point(out / "rootfs.ext4", rootfs)
    image = find_image(out)
    assert image is not None
    return image
