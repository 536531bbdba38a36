"""process_rootfs_dir: jails rooted in an unpacked Debian root instead of the host's /usr.
Uses $GATEWAY_TEST_ROOTFS when set (e.g. the image builder's unpacked rootfs); otherwise
builds a usrmerged root from read-only bind mounts of this host's /usr and /etc (root only)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from gateway_sandbox import SandboxManager
from tests.sandbox.conftest import make_config


@pytest.fixture
def rootfs() -> Iterator[Path]:
    given = os.environ.get("GATEWAY_TEST_ROOTFS")
    if given:
        yield Path(given)
        return
    if os.geteuid() != 0 or not os.path.islink("/bin"):
        pytest.skip("needs root and a usrmerged host to assemble a rootfs from bind mounts "
                    "(or set GATEWAY_TEST_ROOTFS)")
    root = Path(tempfile.mkdtemp(prefix="agw-rootfs-"))
    os.chmod(root, 0o755)
    mounted: list[Path] = []
    try:
        for d in ("usr", "etc"):
            (root / d).mkdir()
            r = subprocess.run(["mount", "--bind", "-o", "ro", f"/{d}", str(root / d)],
                               capture_output=True, text=True, timeout=30, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot bind-mount /{d}: {r.stderr.strip()}")
            mounted.append(root / d)
        (root / "marker-of-this-rootfs").write_text("yes")
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                os.symlink(os.readlink(f"/{link}"), root / link)
        yield root
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", str(m)], timeout=30, check=False)
        for m in mounted:
            m.rmdir()
        for entry in root.iterdir():
            entry.unlink()
        root.rmdir()


async def test_jail_runs_on_the_given_rootfs(rootfs: Path, state_dir: Path) -> None:
    cfg = msgspec.structs.replace(make_config(state_dir, min_ready=0),
                                  process_rootfs_dir=str(rootfs))
    async with SandboxManager.from_config(cfg) as m:
        assert m.describe()["rootfs"] == str(rootfs)
        sb = await m.create("python")
        result = await sb.execute("import os, sys\n"
                                  "print(sys.version_info[0])\n"
                                  "print(os.path.exists('/etc/os-release'))\n")
        assert result.stdout == "3\nTrue\n", result.stderr
        # Only the rootfs's system directories are mapped, not its other files.
        result = await sb.execute("import os; print(os.path.exists('/marker-of-this-rootfs'))")
        assert result.stdout == "False\n"
