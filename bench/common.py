"""Shared pieces of the benchmark runners: processes started and always stopped by PID, free
ports, percentiles, median-of-repetitions figures, the result table and the JSON record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_http(url: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` before the benchmark starts (from
    /proc/stat): anything well above 0 is another job that will skew the figures."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return idle, sum(fields)

    try:
        i0, t0 = sample()
        time.sleep(seconds)
        i1, t1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class CpuMeter:
    """How much of the machine other processes used while the benchmark ran: all CPU time
    (/proc/stat) minus this process's and its children's (stop it after every child was
    reaped, i.e. after Procs.stop_all)."""

    def __init__(self) -> None:
        self._stat0 = self._stat()
        self._ours0 = self._ours()

    @staticmethod
    def _stat() -> tuple[float, float]:
        """(busy, total) CPU seconds over all CPUs since boot."""
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return 0.0, 0.0
        tick = os.sysconf("SC_CLK_TCK")
        return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> dict[str, float]:
        (b0, t0), (b1, t1) = self._stat0, self._stat()
        total = max(1e-9, t1 - t0)
        ours = self._ours() - self._ours0
        busy = b1 - b0
        return {"busy": busy / total, "ours": ours / total,
                "others": max(0.0, busy - ours) / total}


def warn_if_busy() -> float:
    busy = cpu_busy()
    print(f"machine: {100 * busy:.0f}% of all CPUs busy before the start", flush=True)
    if busy > 0.15:
        print("machine: WARNING — something else is using the CPUs; the figures will be "
              "noisy (see the min–max) and slower than this code can do", flush=True)
    return busy


def require_tools(names: Sequence[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} — install with: "
                 f"apt-get install {' '.join(missing)}")


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM to the runner behaves like Ctrl-C: unwind and stop everything."""
    raise KeyboardInterrupt


@dataclass
class Procs:
    """Every process the benchmark starts, stopped by PID on exit (also on errors and
    Ctrl-C). Each is its own process group so a hypercorn master takes its workers along."""

    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            fh = open(log, "wb")  # noqa: SIM115 - closed in stop_all
            self.logs.append(fh)
            out = fh
        p = subprocess.Popen(list(argv), stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, cwd=str(REPO))
        self.started[name] = p
        return p

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        p = self.started.pop(name, None)
        if p is None or p.poll() is not None:
            return
        # The group id is the PID we started (start_new_session), so this reaches only
        # that process and its children.
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        for name in list(self.started):
            self.stop(name)
        for fh in self.logs:
            fh.close()
        self.logs.clear()

    def __enter__(self) -> Procs:
        signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def run_tool(argv: Sequence[str], timeout_s: float) -> str:
    """Run a load tool with a hard time bound; its stdout."""
    p = subprocess.run(list(argv), capture_output=True, timeout=timeout_s, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace')[-500:]}")
    return p.stdout.decode(errors="replace")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


@dataclass
class Figure:
    """One measured figure over repetitions: shown as median (min–max)."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, unit: str, digits: int = 2) -> str:
        unit = f" {unit}" if unit else ""
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}{unit}"
        return (f"{self.median:.{digits}f}{unit} "
                f"({min(self.values):.{digits}f}–{max(self.values):.{digits}f})")

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": min(self.values), "max": max(self.values),
                "values": self.values}


@dataclass
class Row:
    metric: str
    target: str
    measured: str
    verdict: str
    data: Any = None


class Table:
    def __init__(self, title: str, echo: bool = True) -> None:
        self.title = title
        self.echo = echo  # print each row as it is added
        self.rows: list[Row] = []

    def add(self, metric: str, target: str, measured: str, verdict: str = "",
            data: Any = None) -> None:
        self.rows.append(Row(metric, target, measured, verdict, data))
        if self.echo:
            print(f"  {metric}: {measured}" + (f"  [{verdict}]" if verdict else ""), flush=True)

    def render(self) -> str:
        head = ("metric", "target", "measured", "verdict")
        cells = [head] + [(r.metric, r.target, r.measured, r.verdict) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = [self.title, ""]
        for n, c in enumerate(cells):
            lines.append(" | ".join(v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
            if n == 0:
                lines.append("-+-".join("-" * w for w in widths))
        return "\n".join(lines)


def render_grid(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(head), *[list(r) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        lines.append(" | ".join(v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def write_results(kind: str, payload: dict[str, Any], table: Table) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{kind}-{stamp}-{git_rev()}.json"
    payload = {
        "kind": kind, "git": git_rev(), "time": stamp, **payload,
        "table": [{"metric": r.metric, "target": r.target, "measured": r.measured,
                   "verdict": r.verdict, "data": r.data} for r in table.rows],
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
