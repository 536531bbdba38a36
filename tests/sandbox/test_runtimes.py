"""Each runtime in a real bubblewrap jail: hello world, state between runs, stdin, compile
errors, and what the jail must stop (network, fork bombs, endless loops, huge output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_sandbox import SandboxManager
from tests.sandbox.conftest import make_config, require_runtime

HELLO = {
    "python": "print(1 + 1)",
    "node": "console.log(1 + 1)",
    "rust": 'fn main() { println!("{}", 1 + 1); }',
}


@pytest.mark.parametrize("runtime", sorted(HELLO))
async def test_hello_world(manager: SandboxManager, runtime: str) -> None:
    require_runtime(runtime)
    sb = await manager.create(runtime)
    result = await sb.execute(HELLO[runtime], timeout_s=30)
    assert (result.stdout, result.exit_code, result.timed_out) == ("2\n", 0, False)
    await sb.close()


async def test_rust_compile_error_is_stderr(manager: SandboxManager) -> None:
    require_runtime("rust")
    sb = await manager.create("rust")
    result = await sb.execute("fn main() { let x: i32 = \"no\"; }", timeout_s=30)
    assert result.exit_code != 0
    assert "mismatched types" in result.stderr


async def test_state_kept_between_executions(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    first = await sb.execute("open('note.txt', 'w').write('kept')")
    assert first.exit_code == 0
    second = await sb.execute("print(open('note.txt').read())")
    assert second.stdout == "kept\n"
    # Files written by code are visible through the file API too.
    assert await sb.read_file("note.txt") == b"kept"


async def test_stdin_and_env(manager: SandboxManager) -> None:
    sb = await manager.create("python", env={"GREETING": "hi"})
    result = await sb.execute("import os, sys; print(os.environ['GREETING'], sys.stdin.read())",
                              stdin="there")
    assert result.stdout == "hi there\n"
    # Without stdin a program that reads it sees end-of-file instead of hanging.
    result = await sb.execute("import sys; print(repr(sys.stdin.read()))", timeout_s=5)
    assert (result.stdout, result.timed_out) == ("''\n", False)


async def test_nonzero_exit_and_stderr(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    result = await sb.execute("import sys; print('bad', file=sys.stderr); sys.exit(3)")
    assert (result.exit_code, result.stderr) == (3, "bad\n")


async def test_infinite_loop_times_out_and_sandbox_stays_usable(
        manager: SandboxManager) -> None:
    sb = await manager.create("python")
    result = await sb.execute("while True: pass", timeout_s=1)
    assert result.timed_out
    assert 900 <= result.duration_ms < 10_000
    after = await sb.execute("print('still here')")
    assert after.stdout == "still here\n"


LIST_PROCS = ("import os\n"
              "for p in os.listdir('/proc'):\n"
              "    if p.isdigit():\n"
              "        print(open(f'/proc/{p}/cmdline').read().replace('\\0', ' '))\n")


async def test_timeout_kills_the_whole_process_group(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import subprocess, time\n"
            "subprocess.Popen(['sleep', '300'])\n"
            "subprocess.Popen(['sleep', '301'])\n"
            "time.sleep(300)\n")
    result = await sb.execute(code, timeout_s=1)
    assert result.timed_out
    listing = await sb.execute(LIST_PROCS)
    assert listing.exit_code == 0 and "agent.py" in listing.stdout
    assert "sleep" not in listing.stdout


async def test_fork_bomb_is_contained(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n")
    result = await sb.execute(code, timeout_s=3)
    assert result.timed_out or result.exit_code != 0
    after = await sb.execute("print('alive')", timeout_s=20)
    assert after.stdout == "alive\n"


async def test_huge_output_is_truncated(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import sys\nchunk = 'x' * 1_000_000\n"
            "for _ in range(100):\n    sys.stdout.write(chunk)\n")
    result = await sb.execute(code, timeout_s=30)
    assert result.truncated
    assert len(result.stdout) == manager.limits.max_output_bytes
    assert result.exit_code == 0


async def test_network_is_unreachable(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import socket\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 80), timeout=3)\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('blocked', e.errno)\n"
            "print(sorted(n for _, n in socket.if_nameindex()))\n")
    result = await sb.execute(code, timeout_s=10)
    assert result.stdout.startswith("blocked")
    assert "['lo']" in result.stdout


async def test_jail_sees_no_host_secrets_and_a_read_only_system(
        manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import os\n"
            "print(os.path.exists('/root'), os.path.exists('/etc/shadow'))\n"
            "try:\n"
            "    open('/usr/evil', 'w')\n"
            "except OSError as e:\n"
            "    print('ro', e.errno)\n"
            "print(os.getpid() < 10)\n")
    result = await sb.execute(code)
    assert result.stdout.splitlines() == ["False False", "ro 30", "True"]


async def test_streaming_yields_chunks_then_result(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = ("import sys, time\n"
            "print('one', flush=True)\n"
            "time.sleep(0.3)\n"
            "print('two', file=sys.stderr, flush=True)\n")
    events = [e async for e in sb.execute_stream(code)]
    chunks = [(e.stream, e.data) for e in events[:-1]]  # type: ignore[union-attr]
    assert "".join(d for s, d in chunks if s == "stdout") == "one\n"
    assert "".join(d for s, d in chunks if s == "stderr") == "two\n"
    last = events[-1]
    assert getattr(last, "exit_code", None) == 0


async def test_cancelling_a_stream_kills_the_execution(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    code = "import time\nprint('started', flush=True)\nopen('mark', 'w')\ntime.sleep(300)\n"
    stream = sb.execute_stream(code, timeout_s=60)
    try:
        seen = ""
        while seen != "started\n":  # a line may come in pieces
            seen += getattr(await anext(stream), "data", "")
    finally:
        await stream.aclose()
    # The sandbox is free at once and the sleeping program is gone.
    listing = await sb.execute(LIST_PROCS, timeout_s=10)
    assert listing.stdout.count("main.py") == 1  # only the listing program itself


async def test_file_size_and_memory_limits(state_dir: Path) -> None:
    cfg = make_config(state_dir, limits={"max_file_mb": 8, "memory_mb": 128}, min_ready=0)
    async with SandboxManager.from_config(cfg) as m:
        sb = await m.create("python")
        # Filling the disk stops at the per-file limit (RLIMIT_FSIZE).
        result = await sb.execute("open('big', 'wb').write(b'x' * (64 << 20))", timeout_s=20)
        assert result.exit_code != 0 and "File too large" in result.stderr
        # Memory beyond the limit fails inside the program, not in the gateway.
        result = await sb.execute("x = bytearray(512 << 20)", timeout_s=20)
        assert result.exit_code != 0 and "MemoryError" in result.stderr
        assert (await sb.execute("print('fine')")).stdout == "fine\n"
