"""The filesystem API in real jails: list (with depth), stat, mkdir, move, delete, chunked
uploads and downloads, confinement, and a full disk quota seen as ENOSPC inside."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway_core.errors import GatewayError, InvalidRequest, NotFound
from gateway_sandbox import SandboxManager
from gateway_sandbox.sandbox import CHUNK_BYTES


async def test_list_stat_mkdir_move_delete(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    assert await sb.make_dir("a/b") is True
    assert await sb.make_dir("a/b") is False
    await sb.write_file("a/b/f.txt", b"12345")
    await sb.write_file("top.txt", b"x")
    entries, truncated = await sb.list_files(".")
    assert [(e.name, e.type) for e in entries] == [("a", "dir"), ("top.txt", "file")]
    assert not truncated
    deep, _ = await sb.list_files("/work", depth=3)
    assert {e.path for e in deep} == {"a", "a/b", "a/b/f.txt", "top.txt"}
    st = await sb.stat_file("a/b/f.txt")
    assert (st.type, st.size, st.name, st.mode) == ("file", 5, "f.txt", 0o644)
    moved = await sb.move("a/b/f.txt", "c/g.txt")
    assert moved.path == "c/g.txt" and await sb.read_file("c/g.txt") == b"12345"
    with pytest.raises(GatewayError) as exists:
        await sb.move("top.txt", "c/g.txt")
    assert exists.value.status == 409
    await sb.move("top.txt", "c/g.txt", overwrite=True)
    with pytest.raises(GatewayError) as not_empty:
        await sb.delete_file("c")
    assert not_empty.value.status == 409
    await sb.delete_file("c", recursive=True)
    await sb.delete_file("a/b")
    with pytest.raises(NotFound):
        await sb.stat_file("c")
    entries, _ = await sb.list_files()
    assert [e.name for e in entries] == ["a"]


async def test_confinement(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    await sb.execute("import os; os.symlink('/etc', 'etc')")
    for call in (sb.list_files("etc"), sb.list_files("../"), sb.stat_file("/etc/passwd"),
                 sb.delete_file("etc/passwd"), sb.make_dir("/tmp/x"),
                 sb.move("etc/passwd", "p")):
        with pytest.raises(InvalidRequest) as bad:
            await call
        assert bad.value.param in ("path", "src", "dst")
    # The symlink itself is described and removable; its target is untouched.
    st = await sb.stat_file("etc")
    assert st.type == "symlink" and st.target == "/etc"
    await sb.delete_file("etc")
    with pytest.raises(InvalidRequest):
        await sb.delete_file("/work")


async def test_chunked_upload_and_download(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    payload = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 17)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 300_000):
            yield payload[i:i + 300_000]

    assert await sb.write_file_stream("big.bin", pieces()) == len(payload)
    size, chunks = await sb.open_download("big.bin")
    got = [c async for c in chunks]
    assert size == len(payload) and len(got) == 3 and b"".join(got) == payload
    r = await sb.execute("import hashlib; print(len(open('big.bin','rb').read()))")
    assert r.stdout == f"{len(payload)}\n"


async def test_disk_quota_fills_with_enospc(state_dir: object) -> None:
    from pathlib import Path

    from tests.sandbox.conftest import make_config

    cfg = make_config(Path(str(state_dir)), limits={"max_file_mb": 64})
    async with SandboxManager.from_config(cfg) as m:
        if not m.backend.describe()["disk_quota"]["enabled"]:  # type: ignore[index]
            pytest.skip(f"no disk quota here: {m.backend.describe()['disk_quota']}")
        with pytest.raises(InvalidRequest) as cap:
            await m.create("python", disk_mb=m.limits.max_disk_mb + 1)
        assert cap.value.param == "disk_mb"
        sb = await m.create("python", disk_mb=16, memory_mb=128)
        assert sb.resources.disk_mb == 16
        r = await sb.execute(
            "import errno\n"
            "try:\n"
            "    with open('/tmp/fill', 'wb') as f:\n"
            "        for _ in range(64):\n"
            "            f.write(b'x' * (1 << 20)); f.flush()\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n", timeout_s=30)
        assert r.stdout == "ENOSPC\n", r
        with pytest.raises(GatewayError) as full:
            await sb.write_file("more.bin", b"y" * (2 << 20))
        assert full.value.status == 507
        await sb.delete_file("more.bin")
        await sb.execute("import os; os.remove('/tmp/fill')")
        # Freed space is usable again, and the sandbox works on.
        assert await sb.write_file("ok.txt", b"fine") == 4
        assert (await sb.execute("print(open('ok.txt').read())")).stdout == "fine\n"
