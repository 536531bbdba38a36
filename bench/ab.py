"""`hatch run bench:ab`: one change measured before/after in one run. The gateway of the
working tree and the gateway of a git revision (its packages extracted under bench/results,
imported first through PYTHONPATH) run side by side, same core, same config, same mock; short
saturating wrk runs alternate between them, round after round, and each round gives one
paired ratio new / old. On a machine whose speed drifts from second to second (a shared
host), adjacent short runs see the same machine, so the median of the paired ratios moves
far less than two separate benchmark runs do.

Prints, per round, req/s and CPU microseconds per request of each, then the medians and
quartiles of req/s new / old and of CPU per request old / new (both > 1: the change is
faster).

``--instructions N`` measures instead what does not drift at all: each gateway runs under
valgrind's callgrind with instrumentation off through start-up, then on for exactly N
requests (hey, 16 connections), and the run prints user-space instructions per request
(repeatable to ~0.2 %). Instructions are not time (system calls are not counted, and
regular-expression or memcpy-heavy code runs more of them per nanosecond than the
interpreter does), so a figure worth keeping is checked with req/s as well.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, Procs, free_port, require_tools, wait_http, wait_port
from llm import (
    BY_NAME,
    GATEWAY_CORE,
    LOAD_CORE,
    PATHS,
    Server,
    _body_file,
    bench_config,
    make_key,
    start_redis,
    wrk_rps_cpu,
)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway-core", "gateway-llm", "gateway-sandbox", "gateway-server")


def extract(rev: str) -> tuple[str, Path]:
    """The packages of ``rev`` under bench/results/ab-<sha> (made once per revision)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.strip()
    tree = RESULTS / f"ab-{sha[:12]}"
    if not (tree / "packages").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "packages"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return sha, tree


def configure(name: str, mock_port: int, scenario: str, redis_url: str) -> tuple[Path, int]:
    """The scenario's gateway config (and the port it names) for the gateway ``name``."""
    sc = BY_NAME[scenario]
    backend = {"rl-memory": "memory", "rl-redis": "redis", "keys-redis": "redis"}.get(
        sc.gateway)
    port = free_port()
    storage = ""
    if sc.gateway == "keys-redis":
        db = RESULTS / f"gateway-{name}.db"
        for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
            leftover.unlink(missing_ok=True)
        storage = str(db)
    config = RESULTS / f"gateway-{name}.toml"
    config.write_text(bench_config(port, mock_port, backend,
                                   redis_url if backend == "redis" else "", 100_000_000,
                                   sc.gateway == "traced", storage))
    return config, port


def environment(tree: Path | None) -> dict[str, str]:
    """This environment; with ``tree``, its packages imported before the installed ones."""
    env = dict(os.environ)
    if tree is not None:
        src = [str(tree / "packages" / p / "src") for p in PACKAGES]
        env["PYTHONPATH"] = os.pathsep.join([*src, *filter(None, [env.get("PYTHONPATH")])])
    return env


def start(procs: Procs, name: str, mock_port: int, scenario: str, redis_url: str,
          tree: Path | None, wrapper: list[str] | None = None) -> Server:
    """A gateway for the scenario's config; ``tree``: imported from that tree's packages;
    ``wrapper``: the command it runs under (valgrind)."""
    config, port = configure(name, mock_port, scenario, redis_url)
    exe = shutil.which("agentic-gateway") or "agentic-gateway"
    argv = [exe, "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    if wrapper:
        argv = [*wrapper, sys.executable, *argv]
    return Server(procs, f"gateway-{name}", argv, port, GATEWAY_CORE, "/health",
                  environment(tree))


def instructions(procs: Procs, label: str, mock_port: int, scenario: str, redis_url: str,
                 tree: Path | None, n: int) -> float:
    """User-space instructions per request of one gateway under callgrind (see above)."""
    sc = BY_NAME[scenario]
    n -= n % 16  # hey sends whole rounds of its 16 connections
    out_dir = RESULTS / f"callgrind-{label}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    server = start(procs, f"ab-cg-{label}", mock_port, scenario, redis_url, tree, [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p"])
    try:
        if not wait_http(server.base + "/health", 300):
            raise RuntimeError(f"the gateway under valgrind did not start; see {server.log}")
        auth = ""
        if sc.gateway == "keys-redis":
            auth = make_key(server, rpm=100_000_000, tpm=1_000_000_000_000,
                            max_tokens=10**15, max_cost=1_000_000.0, period="month")
        url = server.base + PATHS[sc.door]
        pid = str(server.proc.pid)
        hey = ["taskset", "-c", LOAD_CORE, "hey", "-c", "16", "-m", "POST", "-D",
               str(_body_file(sc.body)), "-T", "application/json",
               *(["-H", f"Authorization: Bearer {auth}"] if auth else [])]
        subprocess.run([*hey, "-n", "200", url], check=True, capture_output=True, timeout=600)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        done = subprocess.run([*hey, "-n", str(n), url], check=True, capture_output=True,
                              timeout=3600, text=True).stdout
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True,
                       capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    finally:
        server.stop()
    if f"[200]\t{n} responses" not in done:
        raise RuntimeError(f"not every request answered 200: {done[-400:]}")
    total = 0
    for path in glob.glob(str(out_dir / "callgrind.out.*")):
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise RuntimeError(f"callgrind wrote no totals under {out_dir}")
    return total / n


def quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return f"{statistics.median(values):.3f}"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.3f} (quartiles {q1:.3f}–{q3:.3f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="HEAD", help="the revision to compare with (HEAD)")
    p.add_argument("--scenario", default="chat", choices=list(BY_NAME),
                   help="any bench:llm scenario (a streamed one with --instructions only)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--seconds", type=int, default=2, help="per wrk run")
    p.add_argument("--instructions", type=int, metavar="N", default=0,
                   help="instead: instructions per request over N requests under callgrind")
    args = p.parse_args()
    require_tools(["wrk", "taskset", "git"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    sha, tree = extract(args.base)
    sc = BY_NAME[args.scenario]
    if sc.stream and not args.instructions:
        sys.exit("bench: a streamed scenario is measured with --instructions only")
    os.sched_setaffinity(0, {int(LOAD_CORE) % (os.cpu_count() or 1)})
    print(f"{args.scenario}: working tree (new) vs {args.base} = {sha[:12]} (old); "
          f"{args.rounds} rounds of {args.seconds} s each; gateway core {GATEWAY_CORE}, "
          f"load core {LOAD_CORE}", flush=True)
    started = time.monotonic()
    with Procs() as procs:
        mock_port = free_port()
        procs.start("mock", ["taskset", "-c", LOAD_CORE, sys.executable,
                             str(Path(__file__).parent / "mock_upstream.py"), "--port",
                             str(mock_port)], log=RESULTS / "mock.log")
        if not wait_port(mock_port):
            sys.exit("bench: the mock upstream did not start; see bench/results/mock.log")
        redis_url = start_redis(procs) if sc.gateway in ("rl-redis", "keys-redis") else ""
        if args.instructions:
            require_tools(["valgrind", "callgrind_control", "hey"])
            counts = {label: instructions(procs, label, mock_port, args.scenario, redis_url,
                                          where, args.instructions)
                      for label, where in (("new", None), ("old", tree))}
            for label, count in counts.items():
                print(f"  {label}: {count:,.0f} instructions per request")
            print(f"instructions per request new / old: {counts['new'] / counts['old']:.4f}")
            return 0
        servers = {"new": start(procs, "ab-new", mock_port, args.scenario, redis_url, None),
                   "old": start(procs, "ab-old", mock_port, args.scenario, redis_url, tree)}
        auth: dict[str, str] = {}
        for label, server in servers.items():
            server.ready()
            if sc.gateway == "keys-redis":
                auth[label] = make_key(server, rpm=100_000_000, tpm=1_000_000_000_000,
                                       max_tokens=10**15, max_cost=1_000_000.0,
                                       period="month")
        body = _body_file(sc.body)
        rps_ratio: list[float] = []
        cpu_ratio: list[float] = []
        for label, server in servers.items():  # warm both up (caches, first connections)
            wrk_rps_cpu(server.base + PATHS[sc.door], body, 1, 16, LOAD_CORE,
                        auth.get(label, ""), pid=server.proc.pid)
        for i in range(args.rounds):
            order = ["new", "old"] if i % 2 == 0 else ["old", "new"]
            got: dict[str, tuple[float, float]] = {}
            for label in order:
                server = servers[label]
                got[label] = wrk_rps_cpu(server.base + PATHS[sc.door], body, args.seconds, 16,
                                         LOAD_CORE, auth.get(label, ""), pid=server.proc.pid)
            rps_ratio.append(got["new"][0] / got["old"][0])
            cpu_ratio.append(got["old"][1] / got["new"][1])
            print(f"  round {i + 1:>2}: new {got['new'][0]:.0f} req/s ({got['new'][1]:.0f} "
                  f"us/req)  old {got['old'][0]:.0f} req/s ({got['old'][1]:.0f} us/req)  "
                  f"new/old {rps_ratio[-1]:.3f}", flush=True)
        # A gateway that logged warnings or errors (a limit store failing open, say) did not
        # do the work it was timed for: no figures then.
        bad = {label: [line for line in server.log.read_text(errors="replace").splitlines()
                       if '"level":"error"' in line or '"level":"warning"' in line]
               for label, server in servers.items()}
    if any(bad.values()):
        for label, lines in bad.items():
            for line in lines[:5]:
                print(f"{label}: {line[:300]}")
        print("bench: a gateway logged warnings or errors; the figures are not comparable")
        return 1
    print(f"req/s new / old:          {quartiles(rps_ratio)}")
    print(f"CPU per request old / new: {quartiles(cpu_ratio)}")
    print(f"took {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
