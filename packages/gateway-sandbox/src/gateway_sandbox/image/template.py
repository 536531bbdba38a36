"""Templates: one guest root per ``[sandbox.templates.NAME]`` recipe (the cached debootstrap
base, then the template's apt packages, pip requirements and files), as an unpacked tree (the
process backend's jail root) and an ext4 image (Firecracker's root drive). Each build is
keyed by the recipe's hash and atomic: it is made in a ``.partial`` directory renamed into
place at the end, so a failed or killed build leaves no half image."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from gateway_core.config.sandbox import TemplateConfig
from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.guest_layout import GUEST_RUN, GUEST_WORKDIR
from gateway_sandbox.image.builder import (
    BuildError,
    check_prerequisites,
    debootstrap_tree,
    install_guest_files,
    make_ext4,
    run_logged,
    say,
    tree_bytes,
)
from gateway_sandbox.image.recipe import INIT_SCRIPT, Recipe, debootstrap_key, digest
from gateway_sandbox.runtimes import RUNTIMES, find_tool

__all__ = [
    "BASES",
    "BUILD_COMMAND",
    "TemplateImage",
    "TemplateManifest",
    "TemplateRecipe",
    "TemplateState",
    "build_lock_path",
    "build_template",
    "find_template",
    "template_key",
    "template_state",
    "templates_root",
]

#: ``base`` of a template -> Debian suite.
BASES: dict[str, str] = {"debian-bookworm": "bookworm"}
#: Bump when the template build steps change in a way the recipe does not show.
TEMPLATE_STAGE_VERSION = 2
#: What to run to build a template (said in the 409 for one that is not built).
BUILD_COMMAND = "agentic-gateway sandbox build-image --template {name}"
# The runtimes' Debian packages beyond python3 (debootstrap does not resolve virtual ones).
_RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {"python": (), "node": ("nodejs",),
                                                 "rust": ("rustc", "libc6-dev")}
# Environment the build passes on to apt and pip (proxies, a private index), nothing else.
_PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "NO_PROXY", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
               "PIP_DEFAULT_TIMEOUT")

# Where the manifest looks for the runtimes' tools (SandboxConfig.runtime_path's default).
_GUEST_PATH = "/usr/local/bin:/usr/bin:/bin"

_BUILD_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
               "CAP_FSETID", "CAP_SETUID", "CAP_SETGID", "CAP_SETFCAP", "CAP_KILL", "CAP_MKNOD",
               "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
# Where the host's CA bundle is seen during a build (GUEST_RUN: a mount point in every root).
_BUILD_CA = GUEST_RUN + "/build-ca.crt"

TemplateState = Literal["built", "missing", "building"]


class TemplateRecipe(msgspec.Struct, frozen=True, kw_only=True):
    """What a template is made of; its hash names the build."""

    name: str
    base: str
    apt: tuple[str, ...]
    pip: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    runtimes: tuple[str, ...]
    mirror: str = Recipe().mirror

    @classmethod
    def from_config(cls, name: str, cfg: TemplateConfig) -> TemplateRecipe:
        return cls(name=name, base=cfg.base, apt=tuple(cfg.apt), pip=tuple(cfg.pip),
                   files=tuple(sorted(cfg.files.items())),
                   runtimes=tuple(sorted(set(cfg.runtimes) | {"python"})))

    def base_recipe(self) -> Recipe:
        """The debootstrap base: python3 and the runtimes' packages (shared, cached)."""
        extra = tuple(p for r in self.runtimes for p in _RUNTIME_PACKAGES[r])
        return Recipe(suite=BASES[self.base], mirror=self.mirror, packages=("python3", *extra))

    def apt_packages(self) -> tuple[str, ...]:
        return (*self.apt, "python3-pip") if self.pip else self.apt


def template_key(recipe: TemplateRecipe) -> str:
    """The recipe's hash (its name is not part of it: two names, one recipe, one build)."""
    files = b"".join(digest(p.encode(), c.encode()).encode() for p, c in recipe.files)
    return digest(str(TEMPLATE_STAGE_VERSION).encode(),
                   debootstrap_key(recipe.base_recipe()).encode(),
                   "\n".join(sorted(recipe.apt_packages())).encode(),
                   "\n".join(recipe.pip).encode(), files, ",".join(recipe.runtimes).encode(),
                   AGENT_PATH.read_bytes(), INIT_SCRIPT.read_bytes())


class TemplateManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``manifest.json`` of a built template: what is in it and when it was made."""

    name: str
    key: str
    base: str
    apt: list[str]
    pip: list[str]
    files: list[str]
    runtimes: list[str]
    built_at: float
    build_seconds: float
    root_bytes: int
    image_bytes: int


class TemplateImage(msgspec.Struct, frozen=True, kw_only=True):
    """A built template: the unpacked root (process backend) and its ext4 image
    (Firecracker)."""

    name: str
    key: str
    root_dir: Path
    rootfs: Path
    manifest: TemplateManifest


def templates_root(cache: Path) -> Path:
    return cache / "templates"


def _dir(cache: Path, key: str) -> Path:
    return templates_root(cache) / f"template-{key}"


def find_template(cache: Path, recipe: TemplateRecipe,
                  key: str | None = None) -> TemplateImage | None:
    """The built template for ``recipe`` (whose hash is ``key``) under ``cache``, or None."""
    key = key or template_key(recipe)
    d = _dir(cache, key)
    try:
        manifest = msgspec.json.decode((d / "manifest.json").read_bytes(),
                                       type=TemplateManifest)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError):
        return None
    return TemplateImage(name=recipe.name, key=key, root_dir=d / "root",
                         rootfs=d / "rootfs.ext4", manifest=manifest)


def build_lock_path(cache: Path, key: str) -> Path:
    """The file a build of recipe ``key`` holds an exclusive flock on while it runs."""
    return templates_root(cache) / f"template-{key}.lock"


@contextlib.contextmanager
def _build_lock(cache: Path, key: str, *, wait: bool) -> Iterator[bool]:
    """Hold the recipe's build lock (an flock: gone with the process that held it)."""
    path = build_lock_path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
            if wait:
                say(f"another build of template-{key} is running; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = True
        yield held
    finally:
        os.close(fd)  # releases the lock


def template_state(cache: Path, recipe: TemplateRecipe,
                   key: str | None = None) -> TemplateState:
    key = key or template_key(recipe)
    if find_template(cache, recipe, key) is not None:
        return "built"
    if not build_lock_path(cache, key).exists():
        return "missing"
    with _build_lock(cache, key, wait=False) as free:
        return "missing" if free else "building"


def _jailed(tree: Path, script: str, log: Path, env: dict[str, str]) -> None:
    """Run ``script`` as root inside ``tree`` (bubblewrap, the host's network) — the tree's
    own apt and pip, not the host's. The host's pip CA bundle (PIP_CERT or SSL_CERT_FILE: a
    registry behind a TLS-inspecting proxy) is lent to the build, not put in the image."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise BuildError("`bwrap` not found (apt-get install bubblewrap): the template's apt "
                         "and pip steps run inside its root with it")
    argv = [bwrap, "--bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp",
            "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            # Root for dpkg and apt's privilege drop, without what would reach past the tree
            # (no CAP_SYS_ADMIN: no mounts; no raw devices, modules or ptrace).
            "--cap-drop", "ALL", *(a for c in _BUILD_CAPS for a in ("--cap-add", c)),
            "--clearenv", "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
            "/usr/bin:/sbin:/bin", "--setenv", "HOME", "/root", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "DEBIAN_FRONTEND", "noninteractive"]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca and os.path.isfile(ca):
        argv += ["--ro-bind", ca, _BUILD_CA, "--setenv", "PIP_CERT", _BUILD_CA]
    try:
        run_logged([*argv, "--", "/bin/sh", "-ec", script], log)
    finally:
        # bwrap made the bind's mount point in the tree; the image keeps no trace of it.
        (tree / _BUILD_CA.lstrip("/")).unlink(missing_ok=True)


def _check_pip_index() -> str | None:
    url = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    try:
        urllib.request.urlopen(url, timeout=15).close()
    except (urllib.error.URLError, OSError) as exc:
        return f"the Python package index {url} is not reachable ({exc})"
    return None


def build_template(cache: Path, recipe: TemplateRecipe) -> TemplateImage:
    """Build ``recipe`` under ``cache`` (or find it built). Raises BuildError naming the
    step that failed and its log; nothing of a failed build is left but the log."""
    cache = cache.absolute()
    found = find_template(cache, recipe)
    if found is not None:
        return found
    key = template_key(recipe)
    with _build_lock(cache, key, wait=True):
        found = find_template(cache, recipe)  # built by the one we waited for
        if found is not None:
            return found
        base = recipe.base_recipe()
        missing = check_prerequisites(cache, base, need_kernel=False, need_rootfs=True)
        if recipe.pip:
            missing += [m for m in (_check_pip_index(),) if m]
        if missing:
            raise BuildError(f"cannot build template {recipe.name!r}:\n" +
                             "\n".join(f"  - {m}" for m in missing))
        final = _dir(cache, key)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a killed build's leftovers (we hold the lock)
        log = cache / "build" / f"template-{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        try:
            image = _build(cache, recipe, key, base, partial, final, log, began)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return image


def _build(cache: Path, recipe: TemplateRecipe, key: str, base: Recipe, partial: Path,
           final: Path, log: Path, began: float) -> TemplateImage:
    base_tree = debootstrap_tree(cache, base)
    for path, _ in recipe.files:
        _inside(base_tree, path)  # refused before anything is copied
    partial.mkdir(parents=True)
    tree = partial / "root"
    say(f"template {recipe.name}: copying the base root {base_tree.name}")
    run_logged(["cp", "-a", "--reflink=auto", str(base_tree), str(tree)], log)
    (tree / ".complete").unlink(missing_ok=True)
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    packages = recipe.apt_packages()
    if packages:
        say(f"template {recipe.name}: apt-get install {' '.join(packages)}")
        # No daemon may start at build time (policy-rc.d 101: "action not allowed").
        policy = tree / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # The names are Debian package names (the config's pattern): no shell quoting needed.
        _jailed(tree, "apt-get update -q\n"
                f"apt-get install -y -q --no-install-recommends {' '.join(packages)}\n"
                "apt-get clean\nrm -rf /var/lib/apt/lists/*\n", log, env)
        policy.unlink()
    if recipe.pip:
        say(f"template {recipe.name}: pip install {' '.join(recipe.pip)}")
        quoted = " ".join("'" + r.replace("'", "'\\''") + "'" for r in recipe.pip)
        _jailed(tree, "python3 -m pip install --no-cache-dir --break-system-packages "
                f"--root-user-action=ignore --no-input --progress-bar off {quoted}\n", log,
                env)
    for path, content in recipe.files:
        dest = _inside(tree, path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()  # never write through a link of the base root
        dest.write_text(content)
        dest.chmod(0o644)
    install_guest_files(tree)
    # Mount points the process backend binds over a read-only root.
    for point in (GUEST_RUN, GUEST_WORKDIR, "/tmp", "/proc", "/dev"):
        (tree / point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    say(f"template {recipe.name}: packing rootfs.ext4")
    make_ext4(tree, partial / "rootfs.ext4", log)
    runtimes = [r for r in recipe.runtimes
                if find_tool(RUNTIMES[r].tool, _GUEST_PATH, str(tree)) is not None]
    manifest = TemplateManifest(
        name=recipe.name, key=key, base=recipe.base, apt=list(recipe.apt),
        pip=list(recipe.pip), files=[p for p, _ in recipe.files], runtimes=runtimes,
        built_at=time.time(), build_seconds=round(time.monotonic() - began, 1),
        root_bytes=tree_bytes(tree),
        image_bytes=os.stat(partial / "rootfs.ext4").st_blocks * 512)
    (partial / "manifest.json").write_bytes(msgspec.json.encode(manifest))
    _sync(partial)
    os.rename(partial, final)
    say(f"template {recipe.name} built in {manifest.build_seconds:.0f} s: {final} "
        f"({manifest.root_bytes // 1024**2} MiB root, "
        f"{manifest.image_bytes // 1024**2} MiB image)")
    found = find_template(cache, recipe)
    assert found is not None
    return found


def _inside(tree: Path, path: str) -> Path:
    """``path`` in ``tree``, refusing one whose directories pass through a symlink of the
    root (``/var/run`` -> ``/run``: resolved on the build host, it would land outside)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        d = tree.joinpath(*parts[:i])
        if d.is_symlink():
            raise BuildError(f"files: {path} passes through /{'/'.join(parts[:i])}, a "
                             f"symlink to {os.readlink(d)} in the template's root; give the "
                             "path without the link")
    return tree.joinpath(*parts)


def _sync(path: Path) -> None:
    # The rename below is the commit: what it names must be on disk first.
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["sync", "-f", str(path / "manifest.json")], timeout=120, check=False)
