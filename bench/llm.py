"""`hatch run bench:llm`: gateway overhead against a direct baseline, throughput, streaming
and rate-limit cost, measured in one run against bench/mock_upstream.py (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCH_DIR,
    RESULTS,
    Figure,
    Procs,
    Table,
    free_port,
    percentile,
    require_tools,
    run_tool,
    verdict,
    wait_http,
    wait_port,
    warn_if_busy,
)

GATEWAY_CORE = "0"
LOAD_CORE = "1"
OPENAI_BODY = {"model": "bench-openai",
               "messages": [{"role": "user", "content": "Say hello in five words."}],
               "max_tokens": 32}
ANTHROPIC_DIRECT_BODY = {"model": "bench-model", "max_tokens": 32,
                         "messages": [{"role": "user", "content": "Say hello in five words."}]}
TARGET_P50_MS = 5.0
TARGET_P99_MS = 15.0
TARGET_RPS = 1000.0


@dataclass
class Settings:
    reps: int
    one_conn_seconds: int  # duration of each one-connection run (wrk, closed loop)
    n_rated: int        # requests per repetition at the fixed offered load
    rate_conns: int
    rate_per_conn: int  # hey -q: requests/s per connection
    wrk_seconds: int
    wrk_conns: int
    streams: int
    chunks: int
    chunk_delay_ms: float


def body_file(name: str, body: dict[str, Any]) -> Path:
    path = RESULTS / f"body-{name}.json"
    path.write_bytes(json.dumps(body, separators=(",", ":")).encode())
    return path


# ---------------------------------------------------------------- load tools


def hey_latency(url: str, body: Path, n: int, conns: int, qps: int | None) -> dict[str, float]:
    """p50/p90/p99 in ms of n POSTs by hey (per-request times from its CSV output)."""
    argv = ["taskset", "-c", LOAD_CORE, "hey", "-n", str(n), "-c", str(conns), "-m", "POST",
            "-D", str(body), "-T", "application/json", "-t", "10", "-o", "csv"]
    expected_s = n * 0.02
    if qps:
        argv += ["-q", str(qps)]
        expected_s = n / (conns * qps)
    out = run_tool(argv + [url], timeout_s=expected_s * 3 + 30)
    times: list[float] = []
    bad: collections.Counter[str] = collections.Counter()
    for row in csv.DictReader(io.StringIO(out)):
        if row.get("status-code") != "200":
            bad[row.get("status-code") or "none"] += 1
            continue
        times.append(float(row["response-time"]) * 1000)
    if bad or not times:
        raise RuntimeError(f"{sum(bad.values())} of {n} requests failed against {url}: "
                           f"statuses {dict(bad)} (the gateway log in bench/results says why)")
    return {"p50": percentile(times, 50), "p90": percentile(times, 90),
            "p99": percentile(times, 99), "n": float(len(times))}


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_latency(url: str, body: Path, seconds: int) -> dict[str, float]:
    """p50/p90/p99 in ms at one connection (closed loop), from wrk's --latency histogram:
    microsecond resolution, where hey's CSV rounds to 0.1 ms."""
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c1", f"-d{seconds}s", "--latency",
            "--timeout", "5s", "-s", str(BENCH_DIR / "post.lua"), url]
    p = subprocess.run(argv, capture_output=True, timeout=seconds + 30, check=False,
                       env={**os.environ, "BENCH_BODY_FILE": str(body)})
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0 or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk -c1 against {url} failed: {out[-400:]} {p.stderr[-200:]!r}")
    res: dict[str, float] = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        if m is None:
            raise RuntimeError(f"wrk printed no {q}% latency: {out[-400:]}")
        res[f"p{q}"] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"(\d+) requests in", out)
    res["n"] = float(m.group(1)) if m else 0.0
    return res


def wrk_rps(url: str, body: Path, seconds: int, conns: int, core: str) -> float:
    env_body = {"BENCH_BODY_FILE": str(body)}
    argv = ["taskset", "-c", core, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
            "-s", str(BENCH_DIR / "post.lua"), url]
    p = subprocess.run(argv, capture_output=True, timeout=seconds + 30, check=False,
                       env={**os.environ, **env_body})
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk printed no rate: {out[-500:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    if float(m.group(1)) == 0 or (errs and "connect 0, read 0, write 0" not in errs.group(0)):
        raise RuntimeError(f"wrk against {url}: {errs.group(0) if errs else 'no responses'}")
    if bad and int(bad.group(1)) > 0:
        raise RuntimeError(f"wrk: {bad.group(1)} non-2xx responses from {url}")
    return float(m.group(1))


# ---------------------------------------------------------------- streaming client


async def _streams(url: str, body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """count sequential streams (bounded in count and time): per stream, time to first body
    byte, the arrival time of every SSE event and how many separate reads carried them."""
    import aiohttp

    out: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(count):
            t0 = time.perf_counter()
            arrivals: list[float] = []
            reads = 0
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"stream {url}: HTTP {resp.status} "
                                       f"{(await resp.read())[:300]!r}")
                async for data in resp.content.iter_any():
                    now = (time.perf_counter() - t0) * 1000
                    events = data.count(b"data:")
                    if events:
                        reads += 1
                        arrivals += [now] * events
            if not arrivals:
                raise RuntimeError(f"stream {url}: no events")
            out.append({"ttfb": arrivals[0], "total": arrivals[-1],
                        "spread": arrivals[-1] - arrivals[0], "events": len(arrivals),
                        "reads": reads})
    return out


def stream_stats(url: str, body: dict[str, Any], count: int) -> dict[str, float]:
    runs = asyncio.run(_streams(url, body, count))
    return {k: percentile([r[k] for r in runs], 50)
            for k in ("ttfb", "total", "spread", "events", "reads")}


# ---------------------------------------------------------------- gateway


def gateway_config(port: int, mock_port: int, rate_limit: str | None, redis_url: str,
                   rpm: int) -> str:
    rl = "enabled = false"
    if rate_limit is not None:
        # Budgets far above the load (but for the probe): the limiter runs its full path
        # but never refuses. fail_open keeps its production default (true).
        rl = (f'enabled = true\nrequests_per_minute = {rpm}\n'
              f'tokens_per_minute = 1000000000000\nbackend = "{rate_limit}"\n'
              f'redis_url = "{redis_url}"')
    return f"""
[server]
host = "127.0.0.1"
port = {port}
workers = 1

[logging]
level = "info"
format = "json"
access_log = true

[llm.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = "x"

[llm.providers.mockanthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:{mock_port}"
api_key = "x"

[llm.models.bench-openai]
provider = "mock"
model = "bench-model"

[llm.models.bench-anthropic]
provider = "mockanthropic"
model = "bench-model"

[rate_limit]
{rl}

[sandbox]
enabled = false
"""


class Gateway:
    def __init__(self, procs: Procs, name: str, mock_port: int, workers: int, cores: str,
                 rate_limit: str | None = None, redis_url: str = "",
                 rpm: int = 100_000_000) -> None:
        self.procs, self.name = procs, f"gateway-{name}"
        self.port = free_port()
        self.config = RESULTS / f"{self.name}.toml"
        self.config.write_text(gateway_config(self.port, mock_port, rate_limit, redis_url,
                                                rpm))
        self.log = RESULTS / f"{self.name}.log"
        exe = shutil.which("agentic-gateway") or "agentic-gateway"
        self.proc = procs.start(self.name, ["taskset", "-c", cores, exe, "serve", "--config",
                                            str(self.config), "--port", str(self.port),
                                            "--workers", str(workers)], log=self.log)
        self.base = f"http://127.0.0.1:{self.port}"
        if not wait_http(self.base + "/health", 40):
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log}: "
                               f"{self.log.read_text(errors='replace')[-800:]}")

    def smoke(self, path: str, body: dict[str, Any]) -> None:
        """One request first, so a broken path is reported as its error, not as a number."""
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") \
                from None

    def stop(self) -> None:
        self.procs.stop(self.name)


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, s: Settings, procs: Procs, table: Table) -> None:
        self.s, self.procs, self.table = s, procs, table
        self.raw: dict[str, Any] = {}

    def fail(self, metric: str, exc: BaseException) -> None:
        msg = str(exc).replace("\n", " ")[:160]
        self.table.add(metric, "", f"error: {msg}", "ERROR")
        self.raw[metric] = {"error": str(exc)}

    def latency(self, label: str, direct_url: str, direct_body: Path, gw_url: str,
                gw_body: Path, conns: int, qps: int | None) -> None:
        """Direct and through-gateway latency, interleaved per repetition; overhead per
        percentile per repetition, then median (min–max) over repetitions."""
        direct: list[dict[str, float]] = []
        gw: list[dict[str, float]] = []
        for _ in range(self.s.reps):
            if qps is None:
                direct.append(wrk_latency(direct_url, direct_body, self.s.one_conn_seconds))
                gw.append(wrk_latency(gw_url, gw_body, self.s.one_conn_seconds))
            else:
                direct.append(hey_latency(direct_url, direct_body, self.s.n_rated, conns, qps))
                gw.append(hey_latency(gw_url, gw_body, self.s.n_rated, conns, qps))
        self.raw[label] = {"direct": direct, "gateway": gw}
        for q in ("p50", "p90", "p99"):
            d = Figure([r[q] for r in direct])
            g = Figure([r[q] for r in gw])
            o = Figure([gr[q] - dr[q] for gr, dr in zip(gw, direct, strict=True)])
            target, ok = "", None
            if qps is not None and q == "p50":
                target, ok = f"< {TARGET_P50_MS:g} ms", o.median < TARGET_P50_MS
            elif qps is not None and q == "p99":
                target, ok = f"< {TARGET_P99_MS:g} ms", o.median < TARGET_P99_MS
            self.table.add(f"{label} {q} overhead", target,
                           f"{o.show('ms')}  [direct {d.median:.2f}, gw {g.median:.2f}]",
                           verdict(ok), {"overhead": o.to_json(), "direct": d.to_json(),
                                         "gateway": g.to_json()})

    def throughput(self, label: str, url: str, body: Path, core: str,
                   target: float | None) -> Figure:
        fig = Figure([wrk_rps(url, body, self.s.wrk_seconds, self.s.wrk_conns, core)
                      for _ in range(self.s.reps)])
        ok = None if target is None else fig.median > target
        self.table.add(label, f"> {target:g} req/s" if target else "", fig.show("req/s", 0),
                       verdict(ok), fig.to_json())
        self.raw[label] = fig.to_json()
        return fig

    def streaming(self, label: str, direct_url: str, direct_body: dict[str, Any],
                  gw_url: str, gw_body: dict[str, Any]) -> None:
        direct: list[dict[str, float]] = []
        gw: list[dict[str, float]] = []
        for _ in range(self.s.reps):
            direct.append(stream_stats(direct_url, direct_body, self.s.streams))
            gw.append(stream_stats(gw_url, gw_body, self.s.streams))
        self.raw[label] = {"direct": direct, "gateway": gw}
        o = Figure([g["ttfb"] - d["ttfb"] for g, d in zip(gw, direct, strict=True)])
        self.table.add(f"{label} TTFB overhead", "", o.show("ms"), "—",
                       {"overhead": o.to_json()})
        # Unbuffered: events arrive over as many separate reads and spread over as much time
        # as they left the mock (which pauses chunk_delay_ms between chunks).
        spread_d = Figure([d["spread"] for d in direct])
        spread_g = Figure([g["spread"] for g in gw])
        reads_g = Figure([g["reads"] for g in gw])
        events_g = Figure([g["events"] for g in gw])
        expected_reads = self.s.chunks  # at least one read per delayed chunk
        ok = spread_g.median >= 0.8 * spread_d.median and reads_g.median >= expected_reads
        self.table.add(f"{label} chunks unbuffered", "passed through as sent",
                       f"{reads_g.median:.0f} reads for {events_g.median:.0f} events over "
                       f"{spread_g.median:.1f} ms (direct {spread_d.median:.1f} ms)",
                       "PASS" if ok else "FAIL",
                       {"spread_direct": spread_d.to_json(), "spread_gateway": spread_g.to_json(),
                        "reads_gateway": reads_g.to_json()})


def mock_path_openai(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def run(s: Settings, profile: str | None, skip: set[str]) -> int:
    require_tools(["wrk", "hey", "taskset"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    if cores < 2:
        print("bench: fewer than 2 cores; pinning is shared and figures are pessimistic")
    os.sched_setaffinity(0, {int(LOAD_CORE) % cores})  # this runner's own stream client
    table = Table("LLM gateway benchmark")
    ob = body_file("openai", OPENAI_BODY)
    ab_gw = body_file("openai-anthropic", {**OPENAI_BODY, "model": "bench-anthropic"})
    ab_direct = body_file("anthropic", ANTHROPIC_DIRECT_BODY)
    pinning = (f"gateway: core {GATEWAY_CORE} (taskset -c {GATEWAY_CORE}); mock upstream, "
               f"hey, wrk, redis, stream client: core {LOAD_CORE}; --workers 2: cores 0,1")
    print(f"pinning: {pinning}", flush=True)
    busy = warn_if_busy()
    with Procs() as procs:
        b = Bench(s, procs, table)
        mock_port = free_port()
        procs.start("mock", ["taskset", "-c", LOAD_CORE, sys.executable,
                             str(BENCH_DIR / "mock_upstream.py"), "--port", str(mock_port),
                             "--chunks", str(s.chunks), "--chunk-delay-ms",
                             str(s.chunk_delay_ms)], log=RESULTS / "mock.log")
        if not wait_port(mock_port):
            sys.exit("bench: the mock upstream did not start; see bench/results/mock.log")
        murl = mock_path_openai(mock_port)
        manth = f"http://127.0.0.1:{mock_port}/v1/messages"

        # The mock alone, driven from the other core: it must be far above the gateway.
        b.throughput("mock upstream max throughput (wrk on core 0)", murl, ob, GATEWAY_CORE,
                     None)

        try:
            gw = Gateway(procs, "base", mock_port, 1, GATEWAY_CORE)
            gw.smoke("/v1/chat/completions", OPENAI_BODY)
        except RuntimeError as e:
            b.fail("openai-kind path", e)
            procs.stop("gateway-base")
            return finish(table, b, s, pinning, busy)
        gurl = gw.base + "/v1/chat/completions"
        if profile:
            run_profile(gw, gurl, ab_gw if profile == "anthropic" else ob)
            gw.stop()
            return 0
        b.latency("openai 1 conn", murl, ob, gurl, ob, 1, None)
        b.latency(f"openai {s.rate_conns * s.rate_per_conn} req/s", murl, ob, gurl, ob,
                  s.rate_conns, s.rate_per_conn)
        b.throughput("openai max throughput, 1 worker, core 0", gurl, ob, LOAD_CORE,
                     TARGET_RPS)
        b.streaming("openai stream", murl, {**OPENAI_BODY, "stream": True, "model": "x"}, gurl,
                    {**OPENAI_BODY, "stream": True})
        try:
            gw.smoke("/v1/chat/completions", {**OPENAI_BODY, "model": "bench-anthropic"})
        except RuntimeError as e:
            b.fail("anthropic-kind path: not available", e)
        else:
            try:
                b.latency("anthropic 1 conn", manth, ab_direct, gurl, ab_gw, 1, None)
                b.latency(f"anthropic {s.rate_conns * s.rate_per_conn} req/s", manth,
                          ab_direct, gurl, ab_gw, s.rate_conns, s.rate_per_conn)
                b.throughput("anthropic max throughput, 1 worker", gurl, ab_gw, LOAD_CORE,
                             TARGET_RPS)
                b.streaming("anthropic stream", manth,
                            {**ANTHROPIC_DIRECT_BODY, "stream": True}, gurl,
                            {**OPENAI_BODY, "model": "bench-anthropic", "stream": True})
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                b.fail("anthropic-kind path", e)
        gw.stop()

        if "workers2" not in skip:
            try:
                gw2 = Gateway(procs, "workers2", mock_port, 2, "0,1")
                b.throughput("openai max throughput, --workers 2, cores 0-1 (shared with load)",
                             gw2.base + "/v1/chat/completions", ob, LOAD_CORE, None)
                gw2.stop()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                b.fail("--workers 2", e)

        for backend in ("memory", "redis"):
            if f"rl-{backend}" in skip:
                continue
            label = f"rate limit {backend}"
            try:
                redis_url = ""
                if backend == "redis":
                    redis_url = start_redis(procs)
                probe = rate_limit_probe(procs, mock_port, backend, redis_url)
                b.table.add(f"{label}: limiter in effect (429 at rpm=3)", "yes", probe,
                            "PASS" if probe.startswith("yes") else "FAIL")
                g = Gateway(procs, f"rl-{backend}", mock_port, 1, GATEWAY_CORE, backend,
                            redis_url)
                url = g.base + "/v1/chat/completions"
                g.smoke("/v1/chat/completions", OPENAI_BODY)
                b.latency(f"{label} {s.rate_conns * s.rate_per_conn} req/s", murl, ob, url, ob,
                          s.rate_conns, s.rate_per_conn)
                b.throughput(f"{label} max throughput, 1 worker", url, ob, LOAD_CORE,
                             TARGET_RPS)
                g.stop()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                b.fail(label, e)
            finally:
                procs.stop(f"gateway-rl-{backend}")
                procs.stop("redis")
        return finish(table, b, s, pinning, busy)


def rate_limit_probe(procs: Procs, mock_port: int, backend: str, redis_url: str) -> str:
    """Is the limiter on the path at all? A gateway allowing 3 requests/min must refuse one
    of 6; otherwise the rate-limit rows below measure a gateway that does not limit."""
    g = Gateway(procs, f"probe-{backend}", mock_port, 1, GATEWAY_CORE, backend, redis_url,
                rpm=3)
    try:
        codes = []
        for _ in range(6):
            req = urllib.request.Request(g.base + "/v1/chat/completions",
                                         data=json.dumps(OPENAI_BODY).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as e:
                codes.append(e.code)
            except OSError as e:
                codes.append(f"{type(e).__name__}")
        if 429 in codes:
            return f"yes (statuses {codes})"
        return f"no: statuses {codes} — the limiter is not wired in yet"
    finally:
        g.stop()


def start_redis(procs: Procs) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    port = free_port()
    procs.start("redis", ["taskset", "-c", LOAD_CORE, exe, "--port", str(port), "--bind",
                          "127.0.0.1", "--save", "", "--appendonly", "no"],
                log=RESULTS / "redis.log")
    if not wait_port(port):
        raise RuntimeError("redis-server did not start; see bench/results/redis.log")
    return f"redis://127.0.0.1:{port}/0"


def run_profile(gw: Gateway, url: str, body: Path) -> None:
    """py-spy samples the gateway while wrk saturates it; flame graph + collapsed stacks."""
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("profile: py-spy not found (it is in the bench environment)", flush=True)
        return
    seconds = 20
    load = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c16", f"-d{seconds + 4}s",
                             "-s", str(BENCH_DIR / "post.lua"), url],
                            env={**os.environ, "BENCH_BODY_FILE": str(body)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        for fmt, out in (("flamegraph", "profile.svg"), ("raw", "profile.txt")):
            subprocess.run([pyspy, "record", "--pid", str(gw.proc.pid), "--format", fmt,
                            "-r", "250", "-d", str(seconds // 2), "-o", str(RESULTS / out),
                            "--function", "--nonblocking"], capture_output=True,
                           timeout=seconds + 30, check=False)
        print(f"profile: {RESULTS / 'profile.svg'} and {RESULTS / 'profile.txt'}", flush=True)
        summarize_profile(RESULTS / "profile.txt")
    finally:
        load.wait(seconds + 30)


def summarize_profile(path: Path, top: int = 25) -> None:
    if not path.exists():
        return
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    by_pkg: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        self_t[frames[-1]] += count
        m = re.search(r"\(([^/:)]+)", frames[-1])
        by_pkg[m.group(1) if m else "?"] += count
        for f in set(frames):
            incl[f] += count
    print(f"profile: {total} samples; self time by package (uvloop/C time shows as "
          "asyncio's Runner.run):")
    for pkg, c in by_pkg.most_common(15):
        print(f"  {100 * c / total:5.1f}%  {pkg}")
    print("profile: top self time:")
    for f, c in self_t.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    print("profile: top inclusive (ours and libraries):")
    for f, c in incl.most_common(top * 2):
        print(f"  {100 * c / total:5.1f}%  {f}")


def finish(table: Table, b: Bench, s: Settings, pinning: str, busy: float) -> int:
    from common import write_results

    print()
    print(table.render())
    path = write_results("llm", {"settings": s.__dict__, "pinning": pinning,
                                 "cpu_busy_before": busy, "raw": b.raw}, table)
    print(f"\npinning: {pinning}\nresults: {path}")
    return 1 if any(r.verdict == "ERROR" for r in table.rows) else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    p.add_argument("--profile", nargs="?", const="openai", choices=["openai", "anthropic"],
                   help="instead of the figures: a py-spy profile of the gateway under "
                        "saturating load through that provider kind (default openai; "
                        "bench/results/profile.svg, profile.txt)")
    p.add_argument("--skip", action="append", default=[],
                   choices=["workers2", "rl-memory", "rl-redis"])
    a = p.parse_args()
    s = Settings(reps=a.reps, one_conn_seconds=2 if a.quick else 4,
                 n_rated=1000 if a.quick else 4000, rate_conns=4, rate_per_conn=125,
                 wrk_seconds=3 if a.quick else 6, wrk_conns=16, streams=5 if a.quick else 20,
                 chunks=20, chunk_delay_ms=5.0)
    try:
        sys.exit(run(s, a.profile, set(a.skip)))
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; everything it started was stopped")


if __name__ == "__main__":
    main()
