"""`hatch run bench:sandbox`: sandbox warm and cold create, execute round trips (a fresh
process per execute, beside a trivial cell in a persistent context) and concurrent creates
through gateway_sandbox.SandboxManager, per backend available here."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Table, percentile, verdict, warn_if_busy, write_results

TARGET_COLD_MS = 200.0
TARGET_WARM_MS = 50.0
TARGET_CELL_MS = 3.0
CODE = {"python": ("print(1 + 1)", "2"), "node": ("console.log(1 + 1)", "2")}
# A trivial cell in a persistent context, after `x = 41`.
CELL = ("x = 41", "x + 1", "42")


def quiet_logs() -> None:
    """The manager logs one line per create; at benchmark rates that is noise on stdout."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def sandbox_config(backend: str, state_dir: str, min_ready: int, max_total: int) -> Any:
    import msgspec

    from gateway_core.config.sandbox import SandboxConfig

    return msgspec.convert({"enabled": True, "backend": backend, "state_dir": state_dir,
                            "pool": {"min_ready": min_ready, "max_total": max_total,
                                     "acquire_timeout_s": 30.0}}, SandboxConfig)


def summary(ms: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ms), "p99": percentile(ms, 99), "min": min(ms),
            "max": max(ms), "n": float(len(ms))}


def show(s: dict[str, float]) -> str:
    return (f"median {s['median']:.1f} ms, p99 {s['p99']:.1f} ms "
            f"({s['min']:.1f}–{s['max']:.1f}, n={s['n']:.0f})")


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = await fn()
    return (time.perf_counter() - t0) * 1000, out


class SandboxBench:
    def __init__(self, runs: int, concurrency: int, table: Table) -> None:
        self.runs, self.concurrency, self.table = runs, concurrency, table
        self.raw: dict[str, Any] = {}

    def row(self, metric: str, target: str, ms: list[float], limit: float | None) -> None:
        s = summary(ms)
        ok = None if limit is None else s["median"] < limit
        self.table.add(metric, target, show(s), verdict(ok), s)
        self.raw[metric] = {"summary": s, "values": ms}

    def error(self, metric: str, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
        self.table.add(metric, "", f"not available: {msg}", "ERROR")
        self.raw[metric] = {"error": msg}

    async def backend(self, name: str) -> None:
        from gateway_sandbox import SandboxManager

        state = tempfile.mkdtemp(prefix=f"bench-sandbox-{name}-")
        # The process backend's jails run under unprivileged uids that must reach it.
        Path(state).chmod(0o711)
        try:
            if await self._warm_and_exec(SandboxManager, name, state):
                await self._cold(SandboxManager, name, state)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    async def _warm_and_exec(self, manager_cls: Any, name: str, state: str) -> bool:
        """False when the backend cannot run here (reported as one row)."""
        from gateway_sandbox import BackendUnavailable

        cfg = sandbox_config(name, state, min_ready=2, max_total=4)
        try:
            manager = manager_cls.from_config(cfg)
            await manager.start()
        except BackendUnavailable as e:
            msg = str(e).replace("\n", " ")[:110] + "…"
            self.table.add(f"{name}: backend", "", f"not available here: {msg}", "—")
            self.raw[f"{name}: backend"] = {"unavailable": str(e)}
            return False
        except Exception as e:  # noqa: BLE001 - any reason the backend failed is a row
            self.error(f"{name}: backend", e)
            return False
        try:
            print(f"{name}: backend started ({manager.backend_reason or 'ok'})", flush=True)
            warm: list[float] = []
            for _ in range(self.runs):
                if not await manager.wait_pool_ready(1, timeout_s=60):
                    raise RuntimeError("the pool did not refill within 60 s")
                ms, sb = await timed(lambda: manager.create("python"))
                warm.append(ms)
                await sb.close()
            self.row(f"{name}: warm create (pool non-empty)", f"< {TARGET_WARM_MS:g} ms", warm,
                     TARGET_WARM_MS)
            # What a user waits for: a warm sandbox and its first result.
            first_result: list[float] = []
            for _ in range(self.runs):
                if not await manager.wait_pool_ready(1, timeout_s=60):
                    raise RuntimeError("the pool did not refill within 60 s")
                t0 = time.perf_counter()
                sb = await manager.create("python")
                await sb.execute(CODE["python"][0])
                first_result.append((time.perf_counter() - t0) * 1000)
                await sb.close()
            self.row(f"{name}: warm create + first python execute", "", first_result, None)
            available = manager.runtimes()
            for runtime, (code, expect) in CODE.items():
                if available.get(runtime) is not None:
                    self.table.add(f"{name}: execute {runtime}", "",
                                   f"not available: {available[runtime]}", "—")
                    continue
                await manager.wait_pool_ready(1, timeout_s=60)
                sb = await manager.create(runtime)
                try:
                    first = await sb.execute(code)  # the runtime's first start, not counted
                    if first.stdout.strip() != expect:
                        raise RuntimeError(f"{runtime} printed {first.stdout!r} "
                                           f"(stderr {first.stderr[-200:]!r})")
                    rt: list[float] = []
                    for _ in range(self.runs):
                        ms, _res = await timed(functools.partial(sb.execute, code))
                        rt.append(ms)
                    self.row(f"{name}: execute round trip {runtime} ({code})", "", rt, None)
                    ctx = await sb.create_context(runtime)
                    setup, cell, want = CELL
                    await sb.execute(setup, context_id=ctx.id)
                    cells: list[float] = []
                    for _ in range(max(200, self.runs * 10)):
                        ms, res = await timed(functools.partial(sb.execute, cell,
                                                                context_id=ctx.id))
                        if not res.results or res.results[-1].data != want:
                            raise RuntimeError(f"the {runtime} cell gave {res.results!r}")
                        cells.append(ms)
                    self.row(f"{name}: context cell round trip {runtime} ({cell})",
                             f"< {TARGET_CELL_MS:g} ms", cells,
                             TARGET_CELL_MS if name == "process" else None)
                finally:
                    await sb.close()
        except Exception as e:  # noqa: BLE001
            self.error(f"{name}: warm/execute", e)
        finally:
            await manager.aclose()
        return True

    async def _cold(self, manager_cls: Any, name: str, state: str) -> None:
        c = self.concurrency
        cfg = sandbox_config(name, state, min_ready=0, max_total=max(4, c))
        try:
            manager = manager_cls.from_config(cfg)
            await manager.start()
        except Exception as e:  # noqa: BLE001
            self.error(f"{name}: backend (cold)", e)
            return
        try:
            cold: list[float] = []
            for _ in range(self.runs):
                ms, sb = await timed(lambda: manager.create("python"))
                cold.append(ms)
                await sb.close()
            self.row(f"{name}: cold create (pool empty, min_ready=0)",
                     f"< {TARGET_COLD_MS:g} ms", cold, TARGET_COLD_MS)

            each: list[float] = []
            batch: list[float] = []
            rounds = max(5, self.runs // c)
            for _ in range(rounds):
                async def one() -> float:
                    ms, sb = await timed(lambda: manager.create("python"))
                    await sb.close()
                    return ms

                t0 = time.perf_counter()
                each += await asyncio.gather(*(one() for _ in range(c)))
                batch.append((time.perf_counter() - t0) * 1000)
            self.row(f"{name}: {c} concurrent cold creates, each", "", each, None)
            self.row(f"{name}: {c} concurrent cold creates, all ready (+close)", "", batch,
                     None)
        except Exception as e:  # noqa: BLE001
            self.error(f"{name}: cold/concurrent", e)
        finally:
            await manager.aclose()


async def run(backends: list[str], runs: int, concurrency: int) -> int:
    quiet_logs()
    busy = warn_if_busy()
    table = Table("Sandbox benchmark")
    b = SandboxBench(runs, concurrency, table)
    for name in backends:
        await b.backend(name)
        if name == "firecracker" and "firecracker: backend" not in b.raw:
            table.add("firecracker: snapshot restore", "", "not measured: the manager has no "
                      "snapshot restore yet", "—")
    print()
    print(table.render())
    path = write_results("sandbox", {"backends": backends, "runs": runs,
                                     "concurrency": concurrency, "cpu_busy_before": busy,
                                     "raw": b.raw}, table)
    print(f"\nresults: {path}")
    return 1 if any(r.verdict == "ERROR" for r in table.rows) else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=30, help="runs per figure (>= 20)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--backend", action="append", choices=["process", "firecracker"],
                   help="default: both (one that cannot run here is reported as such)")
    a = p.parse_args()
    try:
        sys.exit(asyncio.run(run(a.backend or ["process", "firecracker"], max(1, a.runs),
                                 a.concurrency)))
    except KeyboardInterrupt:
        sys.exit("bench: interrupted (the managers close their guests on the way out)")


if __name__ == "__main__":
    main()
