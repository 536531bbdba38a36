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
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, Procs, free_port, require_tools, wait_port
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


def start(procs: Procs, name: str, mock_port: int, scenario: str, redis_url: str,
          tree: Path | None) -> Server:
    """A gateway for the scenario's config; ``tree``: imported from that tree's packages."""
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
    env = dict(os.environ)
    if tree is not None:
        src = [str(tree / "packages" / p / "src") for p in PACKAGES]
        env["PYTHONPATH"] = os.pathsep.join([*src, *filter(None, [env.get("PYTHONPATH")])])
    exe = shutil.which("agentic-gateway") or "agentic-gateway"
    return Server(procs, f"gateway-{name}", [exe, "serve", "--config", str(config), "--port",
                                             str(port), "--workers", "1"],
                  port, GATEWAY_CORE, "/health", env)


def quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return f"{statistics.median(values):.3f}"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.3f} (quartiles {q1:.3f}–{q3:.3f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="HEAD", help="the revision to compare with (HEAD)")
    p.add_argument("--scenario", default="chat",
                   choices=[n for n, sc in BY_NAME.items() if not sc.stream])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--seconds", type=int, default=2, help="per wrk run")
    args = p.parse_args()
    require_tools(["wrk", "taskset", "git"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    sha, tree = extract(args.base)
    sc = BY_NAME[args.scenario]
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
