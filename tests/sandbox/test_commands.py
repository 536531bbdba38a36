"""Shell commands in real jails: foreground like execute, background with stdin, follow,
signal and exit codes, output caps, and none outliving the sandbox."""

from __future__ import annotations

import asyncio

import pytest

from gateway_core.errors import GatewayError, InvalidRequest, NotFound
from gateway_core.sandbox_types import CommandInfo, ExecResult, OutputChunk
from gateway_sandbox import SandboxManager
from tests.sandbox.conftest import children_of


async def last(events: object) -> ExecResult:
    out = [e async for e in events]  # type: ignore[attr-defined]
    assert isinstance(out[-1], ExecResult)
    return out[-1]


async def test_foreground_command(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    r = await last(sb.run_command("echo hi | tr a-z A-Z; echo oops >&2; exit 3"))
    assert (r.stdout, r.stderr, r.exit_code) == ("HI\n", "oops\n", 3)
    await last(sb.run_command("mkdir -p sub && echo x > sub/f"))
    r = await last(sb.run_command("pwd; cat f; echo $GREETING", cwd="sub",
                                  env={"GREETING": "hello"}))
    assert r.stdout == "/work/sub\nx\nhello\n"
    r = await last(sb.run_command("cat", stdin="piped"))
    assert r.stdout == "piped"
    r = await last(sb.run_command("sleep 30", timeout_s=0.5))
    assert r.timed_out
    r = await last(sb.run_command("head -c 3000000 /dev/zero | tr '\\0' a"))
    assert r.truncated and len(r.stdout) == manager.limits.max_output_bytes
    events = [e async for e in sb.run_command("echo one; echo two", stream=True)]
    assert "".join(e.data for e in events if isinstance(e, OutputChunk)) == "one\ntwo\n"


async def test_background_lifecycle(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    started = await sb.start_command("read line; echo got $line; sleep 30")
    pid = started.pid
    listed = await sb.list_commands()
    assert [(c.pid, c.status) for c in listed] == [(pid, "running")]
    await sb.command_stdin(pid, "hello\n")
    follow = sb.follow_command(pid)
    seen = ""
    while "got hello" not in seen:
        event = await asyncio.wait_for(anext(follow), 10)
        assert isinstance(event, OutputChunk)
        seen += event.data
    await sb.signal_command(pid, "TERM")
    final = await asyncio.wait_for(anext(follow), 10)
    assert isinstance(final, CommandInfo) and final.status == "exited"
    assert final.exit_code == 128 + 15
    info = await sb.get_command(pid)
    assert info.stdout == "got hello\n" and info.status == "exited"
    done = await sb.start_command("echo fin; exit 4")
    info = await sb.get_command(done.pid, wait_s=10)
    assert (info.status, info.exit_code, info.stdout) == ("exited", 4, "fin\n")
    # Following a finished command gives its output, then its status.
    events = [e async for e in sb.follow_command(done.pid)]
    assert isinstance(events[-1], CommandInfo) and events[0] == OutputChunk(stream="stdout",
                                                                            data="fin\n")


async def test_background_commands_die_with_the_sandbox(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    guest_pid = sb.guest.pid  # type: ignore[attr-defined]
    await sb.start_command("sleep 300")
    await sb.start_command("(sleep 301 &) ; sleep 302")
    await asyncio.sleep(0.3)
    before = children_of(guest_pid)
    assert len(before) >= 4
    await sb.close()
    assert children_of(guest_pid) == []


async def test_bad_command_input(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    for call in (sb.start_command("echo \0"), last(sb.run_command("echo \0"))):
        with pytest.raises(InvalidRequest) as bad:
            await call
        assert bad.value.param == "cmd"
    with pytest.raises(NotFound) as nf:
        await sb.get_command(999999)
    assert nf.value.param == "pid"
    with pytest.raises(NotFound):
        await sb.signal_command(999999, "KILL")
    started = await sb.start_command("sleep 5")
    with pytest.raises(InvalidRequest) as sig:
        await sb.signal_command(started.pid, "NOPE")
    assert sig.value.param == "signal"
    with pytest.raises(GatewayError) as cwd:
        await sb.start_command("true", cwd="/does/not/exist")
    assert cwd.value.status == 400 and cwd.value.param == "cwd"
