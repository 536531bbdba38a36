"""The guest image: the builder's prerequisite check, the built artifacts (ELF vmlinux with our
options, a valid ext4 holding python3, the agent and the init), and — the only proof on a
host without hardware KVM that kernel, init and agent work inside a VM — a QEMU microvm
(pure TCG emulation) booting them and running code through the agent over a serial port.
The image is $GATEWAY_GUEST_IMAGE or the default cache; when neither holds one and every
prerequisite is installed (as .ci/run installs them), the first test using it builds it (minutes,
once: cached by recipe hash), so CI runs the QEMU test; otherwise those tests skip saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from gateway_sandbox.agent import AGENT_PATH
from gateway_sandbox.backends.firecracker.backend import first_contact
from gateway_sandbox.image import (
    GuestImage,
    Recipe,
    build,
    check_prerequisites,
    default_cache_dir,
    find_image,
)
from gateway_sandbox.image.builder import GUEST_AGENT, GUEST_INIT
from gateway_sandbox.image.recipe import INIT_SCRIPT
from gateway_sandbox.protocol import AgentClient, ConnectionLost, Execute, Result
from gateway_sandbox.runtimes import RUNTIMES


@pytest.fixture(scope="module")
def image() -> GuestImage:
    if os.environ.get("GATEWAY_GUEST_IMAGE"):
        found = find_image()
        if found is None:
            pytest.skip(f"GATEWAY_GUEST_IMAGE={os.environ['GATEWAY_GUEST_IMAGE']} holds no "
                        "vmlinux and rootfs.ext4")
        return found
    missing = check_prerequisites(default_cache_dir(), Recipe(), need_kernel=True,
                                  need_rootfs=True)
    if missing:
        # Cannot build here: an image built earlier (maybe from an older agent) is what
        # there is.
        found = find_image()
        if found is not None:
            return found
        pytest.skip("no guest image built, and it cannot be built here: "
                    + "; ".join(missing) + ". Run `python -m gateway_sandbox.image build` "
                    "or set GATEWAY_GUEST_IMAGE=<dir holding vmlinux and rootfs.ext4>")
    # Cached by recipe hash (agent and init included): a rebuild only when they changed.
    return build()  # a tinyconfig kernel + minbase rootfs: ~5 min on 2 cores, then cached


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="gi", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_prerequisite_check_names_what_is_missing(short_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(short_dir))  # no tools at all
    missing = check_prerequisites(short_dir, Recipe(mirror="http://127.0.0.1:9"),
                                  need_kernel=True, need_rootfs=True)
    assert "`make` not found (apt-get install make)" in missing
    assert "`debootstrap` not found (apt-get install debootstrap)" in missing
    assert "`mkfs.ext4` not found (apt-get install e2fsprogs)" in missing
    assert any(m.startswith("the Debian mirror http://127.0.0.1:9 is not reachable")
               for m in missing)
    # Nothing to build: nothing is required.
    assert check_prerequisites(short_dir, Recipe(), need_kernel=False, need_rootfs=False) == []


def _debugfs_cat(rootfs: Path, path: str) -> bytes:
    res = subprocess.run(["debugfs", "-R", f"cat /{path}", str(rootfs)], capture_output=True,
                         timeout=60, check=True)
    return res.stdout


@pytest.mark.timeout(1800)  # the first test to use the image may have to build it
def test_built_kernel_and_rootfs(image: GuestImage) -> None:
    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) is not installed")
    assert image.kernel.read_bytes()[:4] == b"\x7fELF"
    config = (image.kernel.parent / "config").read_text().splitlines()
    for opt in ("CONFIG_PVH=y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
                "CONFIG_VIRTIO_VSOCKETS=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_EXT4_FS=y",
                "CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_DEVTMPFS=y", "CONFIG_TMPFS=y",
                "CONFIG_FUTEX=y", "CONFIG_EPOLL=y"):
        assert opt in config
    fsck = subprocess.run(["e2fsck", "-fn", str(image.rootfs)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert _debugfs_cat(image.rootfs, GUEST_AGENT) == AGENT_PATH.read_bytes()
    assert _debugfs_cat(image.rootfs, GUEST_INIT.replace("sbin/", "usr/sbin/")) \
        == INIT_SCRIPT.read_bytes()
    python = os.readlink(image.root_dir / "usr/bin/python3") if image.root_dir else "python3"
    assert _debugfs_cat(image.rootfs, f"usr/bin/{python}")[:4] == b"\x7fELF"


async def _spawn_qemu(qemu: str, image: GuestImage, d: Path, sock: Path, err: IO[bytes],
                      ) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        qemu, "-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max", "-m", "256",
        "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel),
        "-append", "console=ttyS0 root=/dev/vda ro rootfstype=ext4 init=/sbin/gateway-init "
                   "gateway.agent=tty:/dev/ttyS1 panic=-1",
        "-drive", f"id=root,file={image.rootfs},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=root",
        "-serial", f"file:{d / 'console.log'}",
        # wait=on: the guest starts only once we are connected, so the hello is not lost.
        # microvm has one ISA serial port of its own; the agent's is the second (ttyS1).
        "-chardev", f"socket,id=agent,path={sock},server=on,wait=on",
        "-device", "isa-serial,chardev=agent,index=1",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


async def _qemu_agent(image: GuestImage, d: Path,
                      ) -> tuple[asyncio.subprocess.Process, AgentClient]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    sock = d / "agent.sock"
    with open(d / "qemu.err", "wb") as err:
        proc = await _spawn_qemu(qemu, image, d, sock, err)
    try:
        for _ in range(1000):  # 10 s for QEMU to listen
            if sock.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 20)
        client = await AgentClient.connect(reader, writer, timeout_s=100.0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc, client


async def _execute(client: AgentClient, code: str, *, runtime: str = "python") -> Result:
    msg = Execute(id=client.new_id(), runtime=RUNTIMES[runtime], code=code,
                  timeout_s=240.0, max_output_bytes=65536)
    queue = await client.send(msg)
    try:
        while True:
            reply = await asyncio.wait_for(queue.get(), 250.0)
            if isinstance(reply, ConnectionLost):
                raise reply
            if isinstance(reply, Result):
                return reply
    finally:
        client.forget(msg.id)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_image_boots_in_qemu_microvm_and_runs_code(image: GuestImage,
                                                          short_dir: Path) -> None:
    proc, client = await _qemu_agent(image, short_dir)
    try:
        result = await _execute(client, "print(1+1)")
        assert (result.stdout, result.exit_code) == ("2\n", 0), result.stderr
        # Our kernel, the read-only shared root, and a writable tmpfs /work.
        result = await _execute(client, "import os\n"
                                "print(os.uname().release)\n"
                                "print(os.getcwd(), os.access('/usr', os.W_OK))\n"
                                "open('state.txt', 'w').write('kept')\n"
                                "print(open('/proc/mounts').read())\n")
        release, cwd_line, *mounts = result.stdout.splitlines()
        assert release.startswith("6.1."), result.stdout
        assert cwd_line == "/work False"
        assert any(m.startswith("tmpfs /work ") for m in mounts)
        assert any(m.startswith("/dev/root / ext4 ro") for m in mounts)
        result = await _execute(client, "print(open('state.txt').read())")
        assert result.stdout == "kept\n"
        # What a restored Firecracker clone gets on first contact, run in a real guest.
        await first_contact(client, hostname="clone-7")
        result = await _execute(client, "import socket; print(socket.gethostname())")
        assert result.stdout == "clone-7\n", result.stderr
        # Node.js and rustc when the image was built with them (--with node --with rust).
        root = image.root_dir
        if root is not None and (root / "usr/bin/node").exists():
            result = await _execute(client, "console.log(6 * 7)", runtime="node")
            assert result.stdout == "42\n", result.stderr
        if root is not None and (root / "usr/bin/rustc").exists():
            result = await _execute(client, 'fn main() { println!("{}", 6 * 7); }',
                                    runtime="rust")
            assert result.stdout == "42\n", result.stderr
    finally:
        await client.aclose()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
