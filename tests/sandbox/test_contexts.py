"""Persistent contexts in real jails: names survive between cells, the last expression's
value and rich outputs come back, errors point at the cell, a timeout interrupts and keeps
state, a cell that ignores the interrupt gets a fresh interpreter, and bad input is a 4xx."""

from __future__ import annotations

import asyncio
import base64
import subprocess

import pytest

from gateway_core.errors import GatewayError, InvalidRequest, NotFound
from gateway_core.sandbox_types import ExecResult, OutputChunk
from gateway_sandbox import SandboxManager
from tests.sandbox.conftest import require_runtime


def plain(result: ExecResult) -> list[str]:
    return [r.data for r in result.results if r.mime == "text/plain"]


async def test_python_context_keeps_state_and_returns_values(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    ctx = await sb.create_context("python")
    assert ctx.id.startswith("ctx_") and ctx.language == "python"
    r = await sb.execute("import json\nx = 41\ndata = {'a': [1, 2]}\nprint('set')",
                         context_id=ctx.id)
    assert r.exit_code == 0 and r.stdout == "set\n" and r.results == [] and r.error is None
    r = await sb.execute("x + 1", context_id=ctx.id)
    assert plain(r) == ["42"] and r.context_id == ctx.id and r.execution_count == 2
    r = await sb.execute("json.dumps(data)", context_id=ctx.id)
    assert plain(r) == ["'{\"a\": [1, 2]}'"]
    # Top-level await runs on the context's own event loop.
    r = await sb.execute("import asyncio\nawait asyncio.sleep(0)\nx * 2", context_id=ctx.id)
    assert plain(r) == ["82"]
    # Objects that offer _repr_*_ come back in every representation, display() included.
    r = await sb.execute(
        "class H:\n    def _repr_html_(self): return '<b>h</b>'\n"
        "    def _repr_json_(self): return {'k': 1}\n"
        "display(H())\nH()", context_id=ctx.id)
    mimes = [o.mime for o in r.results]
    assert mimes.count("text/html") == 2 and "application/json" in mimes
    assert {o.data for o in r.results if o.mime == "text/html"} == {"<b>h</b>"}
    # Each object is its own bundle; the value's is marked (E2B's is_main_result).
    assert {(o.bundle, o.value) for o in r.results} == {(0, False), (1, True)}
    # A fresh-process execute next to it knows nothing of the context.
    fresh = await sb.execute("print('x' in dir())")
    assert fresh.stdout == "False\n" and fresh.context_id is None


async def test_default_context_is_made_on_first_use(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    await sb.execute("y = 'kept'", context="default")
    r = await sb.execute("y", context="default")
    assert plain(r) == ["'kept'"] and r.context_id == "default-python"
    assert list(sb.contexts) == ["default-python"]


async def test_error_names_the_exception_and_points_at_the_cell(
        manager: SandboxManager) -> None:
    sb = await manager.create("python")
    ctx = await sb.create_context()
    r = await sb.execute("def f():\n    return 1 / 0\n\nf()", context_id=ctx.id)
    assert r.exit_code == 1 and r.error is not None
    assert r.error.name == "ZeroDivisionError" and r.error.value == "division by zero"
    tb = r.error.traceback
    assert 'File "<cell-1>", line 4' in tb and 'File "<cell-1>", line 2, in f' in tb
    assert "return 1 / 0" in tb and "agent.py" not in tb
    r = await sb.execute("def broken(:\n    pass", context_id=ctx.id)
    assert r.error is not None and r.error.name == "SyntaxError"
    # The context is intact after both.
    assert plain(await sb.execute("f.__name__", context_id=ctx.id)) == ["'f'"]


async def test_timeout_interrupts_the_cell_and_keeps_state(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    ctx = await sb.create_context()
    await sb.execute("x = 41", context_id=ctx.id)
    r = await sb.execute("import time\nfor _ in range(1000):\n    time.sleep(0.01)",
                         context_id=ctx.id, timeout_s=0.5)
    assert r.timed_out and not r.restarted and r.error is not None
    assert r.error.name == "KeyboardInterrupt" and "<cell-2>" in r.error.traceback
    assert plain(await sb.execute("x + 1", context_id=ctx.id)) == ["42"]


async def test_cell_ignoring_the_interrupt_is_restarted(state_dir: object) -> None:
    from pathlib import Path

    from tests.sandbox.conftest import make_config

    cfg = make_config(Path(str(state_dir)), limits={"interrupt_grace_s": 0.3})
    async with SandboxManager.from_config(cfg) as m:
        sb = await m.create("python")
        ctx = await sb.create_context()
        await sb.execute("x = 41", context_id=ctx.id)
        r = await sb.execute("import signal, time\n"
                             "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)",
                             context_id=ctx.id, timeout_s=0.3)
        assert r.timed_out and r.restarted and r.error is not None
        assert r.error.name == "ContextRestarted"
        assert sb.contexts[ctx.id].restarts == 1
        # A fresh interpreter: the old names are gone, the context works.
        r = await sb.execute("'x' in globals()", context_id=ctx.id)
        assert plain(r) == ["False"] and not r.restarted


async def test_interrupt_on_demand_and_restart(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    ctx = await sb.create_context()
    await sb.execute("z = 7", context_id=ctx.id)
    run = asyncio.create_task(sb.execute("import time\ntime.sleep(30)", context_id=ctx.id))
    await asyncio.sleep(0.3)
    assert await sb.interrupt_context(ctx.id) is True
    r = await asyncio.wait_for(run, 10)
    assert r.error is not None and r.error.name == "KeyboardInterrupt" and not r.timed_out
    assert plain(await sb.execute("z", context_id=ctx.id)) == ["7"]
    info = await sb.restart_context(ctx.id)
    assert info.restarts == 1
    r = await sb.execute("z", context_id=ctx.id)
    assert r.error is not None and r.error.name == "NameError"


async def test_streamed_cell_and_cancel(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    ctx = await sb.create_context()
    events = [e async for e in sb.execute_stream(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7", context_id=ctx.id)]
    chunks = [e for e in events if isinstance(e, OutputChunk)]
    for name, text in (("stdout", "out\n"), ("stderr", "err\n")):
        assert "".join(c.data for c in chunks if c.stream == name) == text
    assert isinstance(events[-1], ExecResult) and plain(events[-1]) == ["42"]
    # Closing the stream interrupts the cell; the context stays usable.
    gen = sb.execute_stream("import time\nprint('go', flush=True)\ntime.sleep(30)",
                            context_id=ctx.id)
    first = await anext(gen)
    assert isinstance(first, OutputChunk)
    await gen.aclose()
    r = await asyncio.wait_for(sb.execute("1", context_id=ctx.id), 10)
    assert plain(r) == ["1"]


def _has_matplotlib() -> bool:
    probe = subprocess.run(["python3", "-c", "import matplotlib"], capture_output=True,
                           check=False)
    return probe.returncode == 0


async def test_matplotlib_figure_as_png(manager: SandboxManager) -> None:
    if not await asyncio.to_thread(_has_matplotlib):
        pytest.skip("matplotlib is not installed for the guest's python3")
    sb = await manager.create("python")
    ctx = await sb.create_context()
    r = await sb.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone",
                         context_id=ctx.id, timeout_s=60)
    pngs = [o for o in r.results if o.mime == "image/png"]
    assert r.error is None and len(pngs) == 1
    assert base64.b64decode(pngs[0].data).startswith(b"\x89PNG")


async def test_node_context(manager: SandboxManager) -> None:
    require_runtime("node")
    sb = await manager.create("node")
    ctx = await sb.create_context("node")
    r = await sb.execute("let x = 41; const fs = require('fs'); console.log('hi')",
                         context_id=ctx.id)
    assert r.stdout == "hi\n" and r.error is None
    assert plain(await sb.execute("x + 1", context_id=ctx.id)) == ["42"]
    r = await sb.execute("const y = await Promise.resolve(5)\ny * 2", context_id=ctx.id)
    assert plain(r) == ["10"]
    assert plain(await sb.execute("y + x", context_id=ctx.id)) == ["46"]
    r = await sb.execute("function f() { throw new TypeError('bad') }\nf()", context_id=ctx.id)
    assert r.error is not None and r.error.name == "TypeError" and r.error.value == "bad"
    assert "<cell-5>:1" in r.error.traceback
    r = await sb.execute("while (true) {}", context_id=ctx.id, timeout_s=0.5)
    assert r.timed_out and not r.restarted
    assert plain(await sb.execute("x", context_id=ctx.id)) == ["41"]


async def test_bad_context_input_is_a_4xx_naming_the_field(manager: SandboxManager) -> None:
    sb = await manager.create("python")
    with pytest.raises(NotFound) as nf:
        await sb.execute("1", context_id="ctx_nope")
    assert nf.value.param == "context_id" and nf.value.status == 404
    with pytest.raises(InvalidRequest) as bad:
        await sb.create_context("cobol")
    assert bad.value.param == "language"
    if manager.runtimes().get("rust") is None:
        with pytest.raises(InvalidRequest) as rust:
            await sb.create_context("rust")
        assert rust.value.param == "language" and "no persistent contexts" in rust.value.message
    with pytest.raises(GatewayError) as cwd:
        await sb.create_context("python", cwd="/nonexistent")
    assert cwd.value.status == 400 and cwd.value.param == "cwd"
    ctx = await sb.create_context()
    with pytest.raises(InvalidRequest) as env:
        await sb.execute("1", context_id=ctx.id, env={"A": "b"})
    assert env.value.param == "env"
    await sb.delete_context(ctx.id)
    with pytest.raises(NotFound):
        await sb.execute("1", context_id=ctx.id)


async def test_faulty_cells_end_clearly_and_the_sandbox_stays_usable(
        manager: SandboxManager) -> None:
    sb = await manager.create("python", memory_mb=128)
    ctx = await sb.create_context()
    await sb.execute("kept = 1", context_id=ctx.id)
    r = await sb.execute("print('y' * (3 << 20))", context_id=ctx.id)
    assert r.truncated and len(r.stdout) == manager.limits.max_output_bytes
    assert plain(await sb.execute("kept", context_id=ctx.id)) == ["1"]
    # Past memory_mb: a MemoryError keeps the context; the OOM killer restarts it.
    r = await sb.execute("big = bytearray(600 << 20)\nbig[::4096] = b'x' * len(big[::4096])",
                         context_id=ctx.id, timeout_s=30)
    assert r.error is not None and (r.restarted or r.error.name == "MemoryError"), r
    r = await sb.execute("import os\nos._exit(3)", context_id=ctx.id)
    assert r.restarted and r.error is not None and r.error.name == "ContextRestarted"
    assert plain(await sb.execute("1 + 1", context_id=ctx.id)) == ["2"]
    assert (await sb.execute("print('fresh')")).stdout == "fresh\n"
