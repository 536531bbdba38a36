"""`hatch run bench:llm`: every front door of the gateway against the floor of its stack
(bench/floor.py: hypercorn + one Starlette route + one aiohttp session + one msgspec decode)
and against the mock upstream itself, in one run, same pinning, same load (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCH_DIR,
    RESULTS,
    CpuMeter,
    Figure,
    Procs,
    Table,
    free_port,
    percentile,
    render_grid,
    require_tools,
    wait_http,
    wait_port,
    warn_if_busy,
    write_results,
)

GATEWAY_CORE = "0"
LOAD_CORE = "1"
HELLO = "Hello from the mock upstream."
PROMPT = [{"role": "user", "content": "Say hello in five words."}]

Dialect = Literal["chat", "responses", "messages"]
PATHS: dict[Dialect, str] = {"chat": "/v1/chat/completions", "responses": "/v1/responses",
                             "messages": "/v1/messages"}

# The bounds (issue 18), gateway against the floor, passthrough front doors.
MIN_RATIO = 0.9            # saturation, 1 worker; and Redis limits against memory limits
KEYS_P99_MS = 5.0          # virtual key + Redis limits against no limits, p99 at the rate
C1_P50_MS = 0.2            # one-connection overhead above the floor's
RATED_P50_MS = 0.3         # 500 req/s overhead above the floor's
RATED_P99_MS = 1.0
TTFB_MS = 0.2              # stream time to first event above the floor's
TRANSLATED_C1_MS = 0.3     # translated Responses overhead above the chat path's, one connection
MESSAGES_C1_MS = 0.2       # Messages passthrough overhead above chat passthrough's
TRACED_C1_MS = 0.1         # tracing on: c=1 overhead above tracing off's (issue 16)


def request_body(dialect: Dialect, model: str, stream: bool) -> dict[str, Any]:
    """One short user turn in the front door's own shape (what its SDK sends)."""
    body: dict[str, Any]
    if dialect == "chat":
        body = {"model": model, "messages": PROMPT, "max_tokens": 32}
    elif dialect == "responses":
        body = {"model": model, "input": PROMPT, "max_output_tokens": 32}
    else:
        body = {"model": model, "max_tokens": 32, "messages": PROMPT}
    if stream:
        body["stream"] = True
    return body


@dataclass(frozen=True)
class Scenario:
    """One front door on one kind of provider: the client speaks `door`, the gateway calls
    the mock's `upstream` endpoint. The floor gets the same body on the upstream path."""

    name: str
    door: Dialect
    upstream: Dialect
    model: str            # the alias in bench_config(), which picks the provider
    about: str
    stream: bool = False
    gateway: str = "base"  # which gateway process serves it

    @property
    def body(self) -> dict[str, Any]:
        return request_body(self.door, self.model, self.stream)

    @property
    def passthrough(self) -> bool:
        return self.door == self.upstream


_DOORS = [
    Scenario("chat", "chat", "chat", "bench-openai", "Chat passthrough (OpenAI kind)"),
    Scenario("responses", "responses", "responses", "bench-openai",
             "Responses native passthrough (OpenAI kind, responses = native)"),
    Scenario("messages", "messages", "messages", "bench-anthropic",
             "Messages passthrough (Anthropic kind)"),
    Scenario("responses-chat", "responses", "chat", "bench-compat",
             "Responses translated to chat (OpenAI kind, responses = translate)"),
    Scenario("responses-anthropic", "responses", "messages", "bench-anthropic",
             "Responses translated to Anthropic Messages"),
    Scenario("messages-chat", "messages", "chat", "bench-openai",
             "Messages translated to chat (OpenAI kind)"),
    Scenario("chat-anthropic", "chat", "messages", "bench-anthropic",
             "Chat translated to Anthropic Messages"),
]
SCENARIOS: list[Scenario] = [
    *_DOORS,
    Scenario("chat-rl-memory", "chat", "chat", "bench-openai",
             "Chat passthrough, rate limits in memory", gateway="rl-memory"),
    Scenario("chat-rl-redis", "chat", "chat", "bench-openai",
             "Chat passthrough, rate limits in Redis", gateway="rl-redis"),
    Scenario("chat-keys-redis", "chat", "chat", "bench-openai",
             "Chat passthrough as a virtual key (its rpm, tpm and token and cost budgets "
             "with the provider's limits in Redis; usage records in SQLite)",
             gateway="keys-redis"),
    Scenario("chat-traced", "chat", "chat", "bench-openai",
             "Chat passthrough, traces on (every request sampled, OTLP/HTTP to the mock)",
             gateway="traced"),
    *[Scenario(f"{s.name}-stream", s.door, s.upstream, s.model, s.about + ", streamed",
               stream=True) for s in _DOORS],
    Scenario("chat-traced-stream", "chat", "chat", "bench-openai",
             "Chat passthrough, streamed, traces on", stream=True, gateway="traced"),
]
BY_NAME = {s.name: s for s in SCENARIOS}
WORKERS2 = "workers2"
ALL_NAMES = [*BY_NAME, WORKERS2]


@dataclass
class Settings:
    reps: int
    one_conn_seconds: int  # each one-connection run (wrk -c1, closed loop)
    n_rated: int           # requests per run at the fixed offered load
    rate_conns: int
    rate_per_conn: int     # hey -q: requests/s per connection
    wrk_seconds: int       # each saturation run
    wrk_conns: int
    streams: int           # sequential streams per target per repetition
    chunks: int
    chunk_delay_ms: float
    paired_rounds: int = 8  # A/B of two gateways: interleaved saturation rounds
    paired_seconds: int = 2

    @property
    def rate(self) -> int:
        return self.rate_conns * self.rate_per_conn


# ---------------------------------------------------------------- answers


def _sse(body: bytes) -> list[tuple[str, str]]:
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def check_answer(dialect: Dialect, body: bytes, stream: bool, chunks: int) -> None:
    """A whole answer (or a whole stream) in the dialect's shape carrying the mock's text;
    RuntimeError saying what is wrong otherwise."""
    try:
        if stream:
            _check_stream(dialect, body, "".join(f"tok{i} " for i in range(chunks)))
        else:
            _check_json(dialect, json.loads(body))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise RuntimeError(f"not a {dialect} answer ({type(e).__name__}: {e}): "
                           f"{body[:300]!r}") from None


def _check_json(dialect: Dialect, doc: Any) -> None:
    if dialect == "chat":
        ok = doc["object"] == "chat.completion" and \
            doc["choices"][0]["message"]["content"] == HELLO
    elif dialect == "responses":
        ok = doc["object"] == "response" and doc["status"] == "completed" and \
            doc["output"][0]["content"][0]["text"] == HELLO
    else:
        ok = doc["type"] == "message" and doc["content"][0]["text"] == HELLO
    if not ok:
        raise ValueError("unexpected content")


def _check_stream(dialect: Dialect, body: bytes, text: str) -> None:
    events = _sse(body)
    if not events:
        raise ValueError("no events")
    got = []
    if dialect == "chat":
        if events[-1][1] != "[DONE]":
            raise ValueError("no [DONE] at the end")
        for _, data in events[:-1]:
            doc = json.loads(data)
            if doc.get("choices"):
                got.append(doc["choices"][0]["delta"].get("content") or "")
    elif dialect == "responses":
        docs = [json.loads(d) for _, d in events]
        if docs[-1]["type"] != "response.completed":
            raise ValueError(f"last event {docs[-1]['type']}")
        got = [d["delta"] for d in docs if d["type"] == "response.output_text.delta"]
    else:
        docs = [json.loads(d) for _, d in events]
        if docs[-1]["type"] != "message_stop":
            raise ValueError(f"last event {docs[-1]['type']}")
        got = [d["delta"]["text"] for d in docs if d["type"] == "content_block_delta"]
    if "".join(got) != text:
        raise ValueError(f"streamed text {''.join(got)!r}")


# ---------------------------------------------------------------- load tools


def _body_file(body: dict[str, Any]) -> Path:
    data = json.dumps(body, separators=(",", ":")).encode()
    path = RESULTS / f"body-{hashlib.sha1(data).hexdigest()[:12]}.json"
    if not path.exists():
        path.write_bytes(data)
    return path


def hey_latency(url: str, body: Path, n: int, conns: int, qps: int,
                auth: str = "") -> dict[str, float]:
    """p50/p90/p99 in ms of n POSTs at a fixed offered load (hey's per-request CSV)."""
    argv = ["taskset", "-c", LOAD_CORE, "hey", "-n", str(n), "-c", str(conns), "-q", str(qps),
            "-m", "POST", "-D", str(body), "-T", "application/json", "-t", "10", "-o", "csv",
            *(["-H", f"Authorization: Bearer {auth}"] if auth else []), url]
    p = subprocess.run(argv, capture_output=True, timeout=n / (conns * qps) * 3 + 30,
                       check=False)
    if p.returncode != 0:
        raise RuntimeError(f"hey exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    times: list[float] = []
    bad: collections.Counter[str] = collections.Counter()
    for row in csv.DictReader(io.StringIO(p.stdout.decode(errors="replace"))):
        if row.get("status-code") != "200":
            bad[row.get("status-code") or "none"] += 1
            continue
        times.append(float(row["response-time"]) * 1000)
    if bad or not times:
        raise RuntimeError(f"{sum(bad.values())} of {n} requests failed against {url}: "
                           f"statuses {dict(bad)} (the logs in bench/results say why)")
    return {"p50": percentile(times, 50), "p90": percentile(times, 90),
            "p99": percentile(times, 99), "n": float(len(times))}


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, body: Path, seconds: int, conns: int, core: str,
         latency: bool, auth: str = "") -> str:
    """wrk with post.lua, every answer checked for 200 and the mock's text: any request
    that failed in any way makes this an error, never a figure."""
    argv = ["taskset", "-c", core, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
            "--timeout", "5s", "-s", str(BENCH_DIR / "post.lua"), url]
    if latency:
        argv.insert(5, "--latency")
    p = subprocess.run(argv, capture_output=True, timeout=seconds + 30, check=False,
                       env={**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_EXPECT": HELLO,
                            "BENCH_AUTH": auth})
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode} against {url}: "
                           f"{p.stderr.decode(errors='replace')[-300:]}")
    bad = re.search(r"bench-bad-answers: (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    done = re.search(r"(\d+) requests in", out)
    problems = []
    if bad is None or done is None:
        problems.append("no summary")
    elif int(bad.group(1)):
        problems.append(f"{bad.group(1)} of {done.group(1)} answers not 200 with the text")
    if non2xx:
        problems.append(f"{non2xx.group(1)} non-2xx")
    if errs:
        problems.append(errs.group(0))
    if problems:
        raise RuntimeError(f"wrk against {url}: {'; '.join(problems)}")
    return out


def wrk_latency(url: str, body: Path, seconds: int, auth: str = "") -> dict[str, float]:
    """p50/p90/p99 in ms at one connection from wrk's --latency histogram (µs resolution)."""
    out = _wrk(url, body, seconds, 1, LOAD_CORE, latency=True, auth=auth)
    res: dict[str, float] = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        if m is None:
            raise RuntimeError(f"wrk printed no {q}% latency: {out[-400:]}")
        res[f"p{q}"] = float(m.group(1)) * _UNITS[m.group(2)]
    return res


def wrk_rps(url: str, body: Path, seconds: int, conns: int, core: str,
            auth: str = "") -> float:
    return wrk_rps_cpu(url, body, seconds, conns, core, auth)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (hypercorn's workers are
    its children only with --workers > 1), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wrk_rps_cpu(url: str, body: Path, seconds: int, conns: int, core: str,
                auth: str = "", pid: int | None = None) -> tuple[float, float]:
    """Requests per second, and the CPU microseconds the process ``pid`` (the server under
    load) spent per request meanwhile (nan without a pid). The CPU figure does not move with
    the share of the core the host gives this machine, which the rate does."""
    before = cpu_seconds(pid) if pid is not None else 0.0
    out = _wrk(url, body, seconds, conns, core, latency=False, auth=auth)
    after = cpu_seconds(pid) if pid is not None else 0.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if m is None or float(m.group(1)) == 0 or done is None:
        raise RuntimeError(f"wrk printed no rate: {out[-500:]}")
    cpu_us = (after - before) * 1e6 / int(done.group(1)) if pid is not None else math.nan
    return float(m.group(1)), cpu_us


# ---------------------------------------------------------------- streaming client


async def _streams(url: str, body: dict[str, Any], count: int,
                   check: Callable[[bytes], None]) -> list[dict[str, float]]:
    """count sequential streams: time to the first SSE event, the arrival of every event and
    how many separate reads carried them; every stream is checked whole."""
    import aiohttp

    out: list[dict[str, float]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(count):
            t0 = time.perf_counter()
            arrivals: list[float] = []
            reads = 0
            whole = bytearray()
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"stream {url}: HTTP {resp.status} "
                                       f"{(await resp.read())[:300]!r}")
                async for data in resp.content.iter_any():
                    now = (time.perf_counter() - t0) * 1000
                    whole += data
                    events = data.count(b"data:")
                    if events:
                        reads += 1
                        arrivals += [now] * events
            check(bytes(whole))
            out.append({"ttfb": arrivals[0], "total": arrivals[-1],
                        "spread": arrivals[-1] - arrivals[0], "events": len(arrivals),
                        "reads": reads})
    return out


def stream_stats(url: str, body: dict[str, Any], count: int,
                 check: Callable[[bytes], None]) -> dict[str, float]:
    runs = asyncio.run(_streams(url, body, count, check))
    return {k: percentile([r[k] for r in runs], 50)
            for k in ("ttfb", "total", "spread", "events", "reads")}


# ---------------------------------------------------------------- the processes


def bench_config(port: int, mock_port: int, rate_limit: str | None, redis_url: str,
                 rpm: int, traced: bool = False, storage: str = "") -> str:
    """The gateway's config: one alias per kind of provider, all on the mock. ``storage``:
    a SQLite file for the key and usage store (virtual keys on)."""
    rl = "enabled = false"
    if rate_limit is not None:
        # Budgets far above the load (but for the probe): the limiter runs its full path
        # but never refuses. fail_open keeps its production default (true).
        rl = (f'enabled = true\nrequests_per_minute = {rpm}\n'
              f'tokens_per_minute = 1000000000000\nbackend = "{rate_limit}"\n'
              f'redis_url = "{redis_url}"')
    mock = f"http://127.0.0.1:{mock_port}"
    return f"""
[server]
host = "127.0.0.1"
port = {port}
workers = 1
{f'admin_keys = ["{BENCH_ADMIN}"]' if storage else ""}
{f'[storage]{chr(10)}url = "sqlite:///{storage}"' if storage else ""}

[logging]
level = "info"
format = "json"
access_log = true

[llm.providers.mock]
kind = "openai"
base_url = "{mock}/v1"
api_key = "x"
responses = "native"

[llm.providers.mockcompat]
kind = "openai"
base_url = "{mock}/v1"
api_key = "x"
responses = "translate"

[llm.providers.mockanthropic]
kind = "anthropic"
base_url = "{mock}"
api_key = "x"

[llm.models.bench-openai]
provider = "mock"
model = "bench-model"

[llm.models.bench-compat]
provider = "mockcompat"
model = "bench-model"

[llm.models.bench-anthropic]
provider = "mockanthropic"
model = "bench-model"

[rate_limit]
{rl}

[sandbox]
enabled = false

[telemetry]
enabled = {"true" if traced else "false"}
endpoint = "{mock}/v1/traces"
"""


class Server:
    """A gateway (`agentic-gateway serve`, exactly as in production) or the floor, pinned."""

    def __init__(self, procs: Procs, name: str, argv: list[str], port: int, cores: str,
                 health: str | None, env: dict[str, str] | None = None) -> None:
        self.procs, self.name, self.port, self.health = procs, name, port, health
        self.log = RESULTS / f"{name}.log"
        self.proc = procs.start(name, ["taskset", "-c", cores, *argv], log=self.log, env=env)
        self.base = f"http://127.0.0.1:{port}"

    def ready(self) -> None:
        ok = (wait_http(self.base + self.health, 40) if self.health
              else wait_port(self.port, 40))
        if not ok:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log}: "
                               f"{self.log.read_text(errors='replace')[-600:]}")

    def stop(self) -> None:
        self.procs.stop(self.name)


def gateway(procs: Procs, name: str, mock_port: int, workers: int, cores: str,
            rate_limit: str | None = None, redis_url: str = "",
            rpm: int = 100_000_000, traced: bool = False, keys: bool = False,
            env: dict[str, str] | None = None) -> Server:
    port = free_port()
    config = RESULTS / f"gateway-{name}.toml"
    storage = ""
    if keys:
        db = RESULTS / f"gateway-{name}.db"
        for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
            leftover.unlink(missing_ok=True)
        storage = str(db)
    config.write_text(bench_config(port, mock_port, rate_limit, redis_url, rpm, traced,
                                   storage))
    exe = shutil.which("agentic-gateway") or "agentic-gateway"
    return Server(procs, f"gateway-{name}", [exe, "serve", "--config", str(config), "--port",
                                             str(port), "--workers", str(workers)],
                  port, cores, "/health", env)


def floor(procs: Procs, name: str, mock_port: int, workers: int, cores: str) -> Server:
    port = free_port()
    return Server(procs, name, [sys.executable, str(BENCH_DIR / "floor.py"), "--port",
                                str(port), "--upstream", f"http://127.0.0.1:{mock_port}",
                                "--workers", str(workers)], port, cores, None)


def post(url: str, body: dict[str, Any], auth: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


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


BENCH_ADMIN = "bench-admin-key"
# Gateway name -> the virtual key its scenarios send (made at start through /admin/keys).
AUTH: dict[str, str] = {}


def make_key(g: Server, **limits: Any) -> str:
    """A virtual key on the gateway, with limits far above the load (so every one of them
    is checked and charged on each request, and none refuses)."""
    status, body = post(g.base + "/admin/keys", {"name": "bench", **limits}, auth=BENCH_ADMIN)
    if status != 201:
        raise RuntimeError(f"creating a key answered HTTP {status}: {body[:300]!r}")
    return str(json.loads(body)["key"])


def keys_probe(procs: Procs, mock_port: int, redis_url: str) -> str:
    """Are the key's limits on the path? A key allowing 3 requests/min must see a 429."""
    g = gateway(procs, "probe-keys", mock_port, 1, GATEWAY_CORE, "redis", redis_url,
                keys=True)
    try:
        g.ready()
        key = make_key(g, rpm=3)
        codes = [post(g.base + PATHS["chat"], request_body("chat", "bench-openai", False),
                      auth=key)[0] for _ in range(6)]
        if 429 in codes:
            return f"yes (statuses {codes})"
        return f"no: statuses {codes} — the key's limits are not on the request path"
    finally:
        g.stop()


def rate_limit_probe(procs: Procs, mock_port: int, backend: str, redis_url: str) -> str:
    """Is the limiter on the path at all? A gateway allowing 3 requests/min must refuse one
    of 6; otherwise the rate-limit figures measure a gateway that does not limit."""
    g = gateway(procs, f"probe-{backend}", mock_port, 1, GATEWAY_CORE, backend, redis_url,
                rpm=3)
    try:
        g.ready()
        codes = [post(g.base + PATHS["chat"], request_body("chat", "bench-openai", False))[0]
                 for _ in range(6)]
        if 429 in codes:
            return f"yes (statuses {codes})"
        return f"no: statuses {codes} — the limiter is not on the request path"
    finally:
        g.stop()


# ---------------------------------------------------------------- measuring


Raw = dict[str, list[Any]]  # target -> one value per repetition


class Bench:
    """Measures the scenarios repetition by repetition (every scenario once per repetition,
    floor and gateway back to back, their order alternating), so slow phases of a shared
    machine spread over all of them. The mock alone (direct) and the floor are measured once
    per repetition per distinct request and shared by the scenarios that send it."""

    def __init__(self, s: Settings, mock: str, floor_server: Server,
                 gateways: dict[str, Server]) -> None:
        self.s, self.mock, self.gateways = s, mock, gateways
        self.floor_server = floor_server
        self.floor_base = floor_server.base
        self.raw: dict[str, dict[str, Raw]] = {}
        self.errors: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.paired: dict[tuple[str, str], list[float]] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def auth(sc: Scenario, target: str) -> str:
        return AUTH.get(sc.gateway, "") if target == "gateway" else ""

    def urls(self, sc: Scenario) -> dict[str, str]:
        up = PATHS[sc.upstream]
        return {"direct": self.mock + up, "floor": self.floor_base + up,
                "gateway": self.gateways[sc.gateway].base + PATHS[sc.door]}

    def check(self, sc: Scenario, target: str, body: bytes) -> None:
        dialect = sc.door if target == "gateway" else sc.upstream
        try:
            check_answer(dialect, body, sc.stream, self.s.chunks)
        except RuntimeError as e:
            raise RuntimeError(f"{target}: {e}") from None

    def verify(self, sc: Scenario) -> None:
        """Before any timing: each target answers 200 with a correct answer."""
        for target, url in self.urls(sc).items():
            if sc.stream:
                stream_stats(url, sc.body, 1, functools.partial(self.check, sc, target))
                continue
            status, body = post(url, sc.body, auth=self.auth(sc, target))
            if status != 200:
                raise RuntimeError(f"{target} answered HTTP {status}: "
                                   f"{body[:300].decode(errors='replace')}")
            self.check(sc, target, body)

    def _once(self, key: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _record(self, sc: Scenario, metric: str, values: dict[str, Any]) -> None:
        per = self.raw.setdefault(sc.name, {}).setdefault(metric, {})
        for target, v in values.items():
            per.setdefault(target, []).append(v)

    def _pair(self, rep: int, sc: Scenario, metric: str, fn: Callable[[str, str], Any],
              direct: bool) -> dict[str, Any]:
        urls = self.urls(sc)
        body = json.dumps(sc.body, sort_keys=True)
        out: dict[str, Any] = {}
        if direct:
            out["direct"] = self._once((rep, metric, urls["direct"]),
                                       lambda: fn("direct", urls["direct"]))
        order = ["floor", "gateway"] if rep % 2 == 0 else ["gateway", "floor"]
        for target in order:
            if target == "floor":
                out["floor"] = self._once((rep, metric, urls["floor"], body),
                                          lambda: fn("floor", urls["floor"]))
            else:
                out["gateway"] = fn("gateway", urls["gateway"])
        self._record(sc, metric, out)
        return out

    def measure(self, rep: int, sc: Scenario) -> None:
        s = self.s
        if sc.stream:
            res = self._pair(rep, sc, "stream", lambda target, url: stream_stats(
                url, sc.body, s.streams, lambda b: self.check(sc, target, b)), direct=True)
            _progress(rep, s, sc, "TTFB ms", {t: v["ttfb"] for t, v in res.items()})
            return
        body = _body_file(sc.body)
        res = self._pair(rep, sc, "c1", lambda target, url: wrk_latency(
            url, body, s.one_conn_seconds, self.auth(sc, target)), direct=True)
        _progress(rep, s, sc, "c=1 p50/p99 ms",
                  {t: f"{v['p50']:.2f}/{v['p99']:.2f}" for t, v in res.items()})
        res = self._pair(rep, sc, "rated", lambda target, url: hey_latency(
            url, body, s.n_rated, s.rate_conns, s.rate_per_conn, self.auth(sc, target)),
            direct=True)
        _progress(rep, s, sc, f"{s.rate} req/s p50/p99 ms",
                  {t: f"{v['p50']:.2f}/{v['p99']:.2f}" for t, v in res.items()})
        res = self._pair(rep, sc, "rps+cpu", lambda target, url: wrk_rps_cpu(
            url, body, s.wrk_seconds, s.wrk_conns, LOAD_CORE, self.auth(sc, target),
            pid=self.pid(sc, target)), direct=False)
        both = self.raw[sc.name].pop("rps+cpu")
        self._record(sc, "rps", {t: v[-1][0] for t, v in both.items()})
        self._record(sc, "cpu_us", {t: v[-1][1] for t, v in both.items()})
        _progress(rep, s, sc, "req/s (CPU us/req)",
                  {t: f"{v[0]:.0f} ({v[1]:.0f})" for t, v in res.items()})

    def pid(self, sc: Scenario, target: str) -> int:
        server = self.gateways[sc.gateway] if target == "gateway" else self.floor_server
        return server.proc.pid


def _progress(rep: int, s: Settings, sc: Scenario, what: str, values: dict[str, Any]) -> None:
    shown = "  ".join(f"{t} {v:.2f}" if isinstance(v, float) else f"{t} {v}"
                      for t, v in values.items())
    print(f"  rep {rep + 1}/{s.reps} {sc.name:<26} {what:<22} {shown}", flush=True)


def workers2(s: Settings, procs: Procs, mock_port: int) -> dict[str, list[float]]:
    """--workers 2 on cores 0–1 (shared with the load on core 1), gateway and floor."""
    g = gateway(procs, "workers2", mock_port, 2, "0,1")
    f = floor(procs, "floor-workers2", mock_port, 2, "0,1")
    try:
        g.ready()
        f.ready()
        body = _body_file(request_body("chat", "bench-openai", False))
        out: dict[str, list[float]] = {"floor": [], "gateway": []}
        for rep in range(s.reps):
            order = [("floor", f), ("gateway", g)]
            for target, srv in order if rep % 2 == 0 else order[::-1]:
                out[target].append(wrk_rps(srv.base + PATHS["chat"], body, s.wrk_seconds,
                                           s.wrk_conns, LOAD_CORE))
            print(f"  rep {rep + 1}/{s.reps} {WORKERS2:<26} {'req/s':<22} "
                  f"floor {out['floor'][-1]:.0f}  gateway {out['gateway'][-1]:.0f}", flush=True)
        return out
    finally:
        g.stop()
        f.stop()


# Two gateways whose ratio is a criterion (the slower one named first): measured again as
# interleaved short saturation runs, one ratio per round (as bench:ab does), because the
# repetitions measure each scenario minutes apart and the machine's speed drifts between.
PAIRS = (("chat-keys-redis", "chat"), ("chat-rl-redis", "chat-rl-memory"))


def paired(b: Bench, a: Scenario, base: Scenario) -> list[float]:
    """req/s of a's gateway / base's, per round, the two run back to back, alternating."""
    s = b.s
    body = _body_file(a.body)
    servers = {sc.name: (b.gateways[sc.gateway], b.auth(sc, "gateway")) for sc in (a, base)}
    for server, auth in servers.values():  # both warm (caches, upstream connections)
        wrk_rps(server.base + PATHS[a.door], body, 1, s.wrk_conns, LOAD_CORE, auth)
    ratios = []
    for i in range(s.paired_rounds):
        got: dict[str, float] = {}
        for name in ([a.name, base.name] if i % 2 == 0 else [base.name, a.name]):
            server, auth = servers[name]
            got[name] = wrk_rps(server.base + PATHS[a.door], body, s.paired_seconds,
                                s.wrk_conns, LOAD_CORE, auth)
        ratios.append(got[a.name] / got[base.name])
    print(f"  paired {a.name} / {base.name} req/s, {s.paired_rounds} rounds: "
          + " ".join(f"{r:.3f}" for r in ratios), flush=True)
    return ratios


# ---------------------------------------------------------------- reporting


def _fig(values: list[float]) -> Figure:
    return Figure(values)


def _over(raw: dict[str, Raw], metric: str, target: str, q: str) -> Figure:
    """target - direct at percentile q, per repetition."""
    r = raw[metric]
    return _fig([t[q] - d[q] for t, d in zip(r[target], r["direct"], strict=True)])


def _gap(raw: dict[str, Raw], metric: str, q: str) -> Figure:
    """gateway - floor, per repetition (paired)."""
    r = raw[metric]
    return _fig([g[q] - f[q] for g, f in zip(r["gateway"], r["floor"], strict=True)])


def _cpu_ratio(fast: dict[str, Raw], fast_target: str, slow: dict[str, Raw],
               slow_target: str) -> Figure | None:
    """What req/s slow / fast would be if both had the whole core: fast's CPU per request
    over slow's, per repetition (None when either lacks the CPU figure)."""
    if "cpu_us" not in fast or "cpu_us" not in slow:
        return None
    return _fig([f / s_ for f, s_ in zip(fast["cpu_us"][fast_target],
                                         slow["cpu_us"][slow_target], strict=True)])


def _ratio(raw: dict[str, Raw]) -> Figure:
    r = raw["rps"]
    return _fig([g / f for g, f in zip(r["gateway"], r["floor"], strict=True)])


def _between(a: dict[str, Raw], b: dict[str, Raw], metric: str, q: str) -> Figure:
    """Gateway overhead of scenario a above scenario b's, per repetition."""
    oa = _over(a, metric, "gateway", q).values
    ob = _over(b, metric, "gateway", q).values
    return _fig([x - y for x, y in zip(oa, ob, strict=True)])


def grid(b: Bench, w2: dict[str, list[float]] | None, s: Settings) -> str:
    """One line per scenario: gateway / floor on every figure (medians over repetitions;
    overheads are above the mock alone)."""
    head = ["scenario", "req/s gw / floor", "ratio", "CPU us/req gw / fl", "c=1 ovh p50 gw/fl",
            "c=1 ovh p99 gw/fl", f"{s.rate}/s ovh p50 gw/fl", f"{s.rate}/s ovh p99 gw/fl"]
    rows: list[list[str]] = []
    srows: list[list[str]] = []
    for name, raw in b.raw.items():
        if name in b.errors:
            continue
        sc = BY_NAME[name]
        if sc.stream:
            o = {t: _fig([v["ttfb"] - d["ttfb"] for v, d in
                          zip(raw["stream"][t], raw["stream"]["direct"], strict=True)])
                 for t in ("gateway", "floor")}
            tot = {t: _fig([v["total"] for v in raw["stream"][t]]) for t in raw["stream"]}
            srows.append([name, f"{o['gateway'].median:.2f} / {o['floor'].median:.2f}",
                          f"{_gap(raw, 'stream', 'ttfb').median:+.2f}",
                          f"{tot['gateway'].median:.1f} / {tot['floor'].median:.1f} / "
                          f"{tot['direct'].median:.1f}", b.notes.get(name, "")])
            continue
        rps = raw["rps"]
        cells = [name, f"{_fig(rps['gateway']).median:.0f} / {_fig(rps['floor']).median:.0f}",
                 f"{_ratio(raw).median:.2f}"]
        cpu = raw.get("cpu_us")
        cells.append(f"{_fig(cpu['gateway']).median:.0f} / {_fig(cpu['floor']).median:.0f}"
                     if cpu else "")
        for metric in ("c1", "rated"):
            for q in ("p50", "p99"):
                cells.append(f"{_over(raw, metric, 'gateway', q).median:.2f} / "
                             f"{_over(raw, metric, 'floor', q).median:.2f}")
        rows.append(cells)
    if w2 is not None:
        ratio = _fig([g / f for g, f in zip(w2["gateway"], w2["floor"], strict=True)])
        rows.append([f"{WORKERS2} (cores 0-1, shared with load)",
                     f"{_fig(w2['gateway']).median:.0f} / {_fig(w2['floor']).median:.0f}",
                     f"{ratio.median:.2f}", "", "", "", "", ""])
    for name, err in b.errors.items():
        rows.append([name, f"ERROR: {err[:100]}", "", "", "", "", "", ""])
    out = render_grid(head, rows)
    if srows:
        out += "\n\n" + render_grid(
            ["stream", "TTFB ovh ms gw / floor", "gw - floor", "last event ms gw/fl/direct",
             "unbuffered"], srows)
    return out


PASSTHROUGH = ("chat", "responses", "messages")


def verdicts(b: Bench, w2: dict[str, list[float]] | None, s: Settings,
             probes: dict[str, str]) -> tuple[Table, str]:
    """Every verdict as a row of one table (kept in the JSON), and the compact print of
    them: one line per passthrough front door against the issue's bounds, then one line per
    other criterion."""
    t = Table("verdicts", echo=False)
    raw = b.raw

    def have(*names: str) -> bool:
        return all(n in raw and n not in b.errors for n in names)

    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    head = ["front door (passthrough)", f"req/s gw/floor >= {MIN_RATIO}",
            f"c=1 p50 gw-floor <= +{C1_P50_MS}",
            f"{s.rate}/s p50 gw-floor <= +{RATED_P50_MS}",
            f"{s.rate}/s p99 gw-floor <= +{RATED_P99_MS}",
            f"stream TTFB gw-floor <= +{TTFB_MS}"]
    doors: list[list[str]] = []
    more = Table("", echo=False)
    for name in PASSTHROUGH:
        cells = [name]
        if name in b.errors:
            t.add(name, "", f"error: {b.errors[name][:200]}", "ERROR")
            cells.append(f"ERROR: {b.errors[name][:80]}")
        elif name in raw:
            r = raw[name]
            for label, fig, bound, ge in (
                    ("req/s gateway / floor, 1 worker", _ratio(r), MIN_RATIO, True),
                    ("c=1 p50 overhead - floor's (ms)", _gap(r, "c1", "p50"), C1_P50_MS, False),
                    (f"{s.rate} req/s p50 overhead - floor's (ms)", _gap(r, "rated", "p50"),
                     RATED_P50_MS, False),
                    (f"{s.rate} req/s p99 overhead - floor's (ms)", _gap(r, "rated", "p99"),
                     RATED_P99_MS, False)):
                ok = fig.median >= bound if ge else fig.median <= bound
                shown = fig.show("", 2) if ge else _signed(fig)
                t.add(f"{name}: {label}", f"{'>=' if ge else '<= +'}{bound}", shown, mark(ok))
                cells.append(f"{shown} {mark(ok)}")
            by_cpu = _cpu_ratio(r, "floor", r, "gateway")
            if by_cpu is not None:
                t.add(f"{name}: floor's CPU per request / gateway's", "", by_cpu.show("", 2),
                      "—")
                more.add(f"{name}: floor's CPU per request / gateway's (req/s ratio at a "
                         "whole core)", "", by_cpu.show("", 2), "—")
        else:
            cells += ["", "", "", ""]
        stream = f"{name}-stream"
        if stream in b.errors:
            cells.append("ERROR")
        elif stream in raw:
            fig = _gap(raw[stream], "stream", "ttfb")
            ok = fig.median <= TTFB_MS
            t.add(f"{stream}: TTFB - floor's (ms)", f"<= +{TTFB_MS}", _signed(fig), mark(ok))
            cells.append(f"{_signed(fig)} {mark(ok)}")
        if len(cells) > 1:
            doors.append(cells + [""] * (len(head) - len(cells)))

    def both(metric: str, target: str, measured: str, v: str) -> None:
        t.add(metric, target, measured, v)
        more.add(metric, target, measured, v)

    for a, base, bound in (("responses-chat", "chat", TRANSLATED_C1_MS),
                           ("responses-anthropic", "chat-anthropic", TRANSLATED_C1_MS),
                           ("messages", "chat", MESSAGES_C1_MS),
                           ("chat-traced", "chat", TRACED_C1_MS)):
        if not have(a, base):
            continue
        g = _between(raw[a], raw[base], "c1", "p50")
        both(f"{a} overhead - {base}'s, c=1 p50", f"<= +{bound} ms", _signed(g, " ms"),
             mark(g.median <= bound))
        if a.startswith("responses"):
            p50 = _between(raw[a], raw[base], "rated", "p50")
            p99 = _between(raw[a], raw[base], "rated", "p99")
            both(f"{a} overhead - {base}'s, {s.rate} req/s p50 / p99", "",
                 f"{_signed(p50)} / {_signed(p99)} ms", "—")
    if have("chat-traced", "chat"):
        on, off = raw["chat-traced"]["rps"]["gateway"], raw["chat"]["rps"]["gateway"]
        ratio = _fig([x / y for x, y in zip(on, off, strict=True)])
        both("req/s, traces on / off", "", ratio.show("", 2), "—")
    if have("chat-traced-stream", "chat-stream"):
        on_s = _fig([g["ttfb"] - d["ttfb"] for g, d in zip(
            raw["chat-traced-stream"]["stream"]["gateway"],
            raw["chat-stream"]["stream"]["gateway"], strict=True)])
        both("stream TTFB, traces on - off", "", _signed(on_s, " ms"), "—")
    if have("chat-rl-memory", "chat-rl-redis"):
        red, mem = raw["chat-rl-redis"]["rps"]["gateway"], raw["chat-rl-memory"]["rps"]["gateway"]
        ratio = _fig([x / y for x, y in zip(red, mem, strict=True)])
        pair = b.paired.get(("chat-rl-redis", "chat-rl-memory"))
        if pair:
            both("req/s, limits in Redis / in memory, repetitions", "", ratio.show("", 2),
                 "—")
            ratio = _fig(pair)
        both("req/s, limits in Redis / in memory" + (", paired rounds" if pair else ""),
             f">= {MIN_RATIO}", ratio.show("", 2), mark(ratio.median >= MIN_RATIO))
        by_cpu = _cpu_ratio(raw["chat-rl-memory"], "gateway", raw["chat-rl-redis"], "gateway")
        if by_cpu is not None:
            both("CPU per request, limits in memory / in Redis", "", by_cpu.show("", 2), "—")
    if have("chat", "chat-keys-redis"):
        keyed, base_ = (raw["chat-keys-redis"]["rps"]["gateway"],
                        raw["chat"]["rps"]["gateway"])
        ratio = _fig([x / y for x, y in zip(keyed, base_, strict=True)])
        pair = b.paired.get(("chat-keys-redis", "chat"))
        if pair:
            both("req/s, virtual key + limits in Redis / no limits, repetitions", "",
                 ratio.show("", 2), "—")
            ratio = _fig(pair)
        both("req/s, virtual key + limits in Redis / no limits"
             + (", paired rounds" if pair else ""), f">= {MIN_RATIO}", ratio.show("", 2),
             mark(ratio.median >= MIN_RATIO))
        by_cpu = _cpu_ratio(raw["chat"], "gateway", raw["chat-keys-redis"], "gateway")
        if by_cpu is not None:
            both("CPU per request, no limits / virtual key + limits in Redis", "",
                 by_cpu.show("", 2), "—")
        p99 = _between(raw["chat-keys-redis"], raw["chat"], "rated", "p99")
        both(f"virtual key + Redis overhead - no limits', {s.rate} req/s p99",
             f"<= +{KEYS_P99_MS} ms", _signed(p99, " ms"), mark(p99.median <= KEYS_P99_MS))
    if have("chat", "chat-rl-memory"):
        mem, base_ = raw["chat-rl-memory"]["rps"]["gateway"], raw["chat"]["rps"]["gateway"]
        ratio = _fig([x / y for x, y in zip(mem, base_, strict=True)])
        both("req/s, limits in memory / no limits", "", ratio.show("", 2), "—")
    if probes:
        ok = all(p.startswith("yes") for p in probes.values())
        for backend, probe in probes.items():
            t.add(f"rate limit {backend}: limiter in effect (429 at rpm=3)", "yes", probe,
                  mark(probe.startswith("yes")))
        more.add("limiter in effect (a 429 at rpm=3)", "yes",
                 ", ".join(f"{k} {v.split(' ')[0].rstrip(':')}" for k, v in probes.items()),
                 mark(ok))
    streams = [n for n in raw if BY_NAME[n].stream and n not in b.errors]
    if streams:
        bad = [n for n in streams if not b.notes.get(n, "").startswith("yes")]
        for n in streams:
            t.add(f"{n}: events passed on unbuffered", "as sent", b.notes.get(n, ""),
                  mark(n not in bad))
        more.add("streams passed on unbuffered", "all",
                 f"{len(streams) - len(bad)} of {len(streams)}"
                 + (f" (not: {', '.join(bad)})" if bad else ""), mark(not bad))
    if w2 is not None:
        ratio = _fig([g / f for g, f in zip(w2["gateway"], w2["floor"], strict=True)])
        both("--workers 2 req/s gateway / floor (cores 0-1, shared with load)", "",
             ratio.show("", 2), "—")
    for name, err in b.errors.items():
        if name not in PASSTHROUGH:
            both(name, "", f"error: {err[:120]}", "ERROR")
    out = render_grid(head, doors) if doors else ""
    if more.rows:
        out += "\n\n" + render_grid(["criterion", "target", "measured", "verdict"],
                                     [[r.metric, r.target, r.measured, r.verdict]
                                      for r in more.rows])
    return t, out


def _signed(fig: Figure, unit: str = "") -> str:
    """A difference, signed: +0.16 (+0.10–+0.30)."""
    if len(fig.values) == 1:
        return f"{fig.values[0]:+.2f}{unit}"
    return f"{fig.median:+.2f} ({min(fig.values):+.2f}–{max(fig.values):+.2f}){unit}"


def unbuffered(b: Bench, s: Settings) -> None:
    """Events arrive in as many separate reads as the mock sent delayed chunks, spread over
    at least 80 % of the time they left the mock; a buffering proxy delivers them at once."""
    for name, raw in b.raw.items():
        if not BY_NAME[name].stream or name in b.errors:
            continue
        st = raw["stream"]
        spread_d = _fig([d["spread"] for d in st["direct"]]).median
        spread_g = _fig([g["spread"] for g in st["gateway"]]).median
        reads = _fig([g["reads"] for g in st["gateway"]]).median
        events = _fig([g["events"] for g in st["gateway"]]).median
        ok = spread_g >= 0.8 * spread_d and reads >= s.chunks
        b.notes[name] = (f"{'yes' if ok else 'NO'}: {reads:.0f} reads, {events:.0f} events, "
                         f"{spread_g:.0f} ms (direct {spread_d:.0f})")


# ---------------------------------------------------------------- the run


def selected(only: list[str], skip: list[str]) -> list[str]:
    names = only or ALL_NAMES
    unknown = [n for n in [*names, *skip] if n not in ALL_NAMES]
    if unknown:
        sys.exit(f"bench: unknown scenario {', '.join(unknown)}; "
                 f"known: {', '.join(ALL_NAMES)}")
    return [n for n in ALL_NAMES if n in names and n not in skip]


def run(s: Settings, names: list[str], profile: str | None) -> int:
    require_tools(["wrk", "hey", "taskset"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    if cores < 2:
        print("bench: fewer than 2 cores; pinning is shared and figures are pessimistic")
    os.sched_setaffinity(0, {int(LOAD_CORE) % cores})  # this runner's own stream client
    pinning = (f"gateway and floor: core {GATEWAY_CORE} (taskset -c {GATEWAY_CORE}); mock "
               f"upstream, wrk, hey, redis, stream client: core {LOAD_CORE}; --workers 2: "
               f"cores 0,1")
    print(f"pinning: {pinning}", flush=True)
    busy = warn_if_busy()
    meter = CpuMeter()
    started = time.monotonic()
    scenarios = [BY_NAME[n] for n in names if n in BY_NAME]
    probes: dict[str, str] = {}
    w2: dict[str, list[float]] | None = None
    extra: dict[str, Any] = {}
    with Procs() as procs:
        mock_port = free_port()
        procs.start("mock", ["taskset", "-c", LOAD_CORE, sys.executable,
                             str(BENCH_DIR / "mock_upstream.py"), "--port", str(mock_port),
                             "--chunks", str(s.chunks), "--chunk-delay-ms",
                             str(s.chunk_delay_ms)], log=RESULTS / "mock.log")
        if not wait_port(mock_port):
            sys.exit("bench: the mock upstream did not start; see bench/results/mock.log")
        mock = f"http://127.0.0.1:{mock_port}"

        gateways: dict[str, Server] = {}
        errors: dict[str, str] = {}
        needed = {sc.gateway for sc in scenarios}
        redis_url = ""
        for backend in ("memory", "redis"):
            if f"rl-{backend}" not in needed:
                continue
            try:
                if backend == "redis":
                    redis_url = url = start_redis(procs)
                else:
                    url = ""
                probes[backend] = rate_limit_probe(procs, mock_port, backend, url)
                gateways[f"rl-{backend}"] = gateway(procs, f"rl-{backend}", mock_port, 1,
                                                    GATEWAY_CORE, backend, url)
            except RuntimeError as e:
                errors[f"chat-rl-{backend}"] = str(e)
        if "keys-redis" in needed:
            try:
                redis_url = redis_url or start_redis(procs)
                probes["keys"] = keys_probe(procs, mock_port, redis_url)
                gateways["keys-redis"] = gateway(procs, "keys-redis", mock_port, 1,
                                                 GATEWAY_CORE, "redis", redis_url, keys=True)
            except RuntimeError as e:
                errors["chat-keys-redis"] = str(e)
        if "base" in needed:
            gateways["base"] = gateway(procs, "base", mock_port, 1, GATEWAY_CORE)
        if "traced" in needed:
            gateways["traced"] = gateway(procs, "traced", mock_port, 1, GATEWAY_CORE,
                                         traced=True)
        fl = floor(procs, "floor", mock_port, 1, GATEWAY_CORE)
        for name, g in list(gateways.items()):
            try:
                g.ready()
            except RuntimeError as e:
                del gateways[name]
                errors.update({sc.name: str(e) for sc in scenarios if sc.gateway == name})
        if "keys-redis" in gateways:
            try:
                AUTH["keys-redis"] = make_key(
                    gateways["keys-redis"], rpm=100_000_000, tpm=1_000_000_000_000,
                    max_tokens=10**15, max_cost=1_000_000.0, period="month")
            except RuntimeError as e:
                errors["chat-keys-redis"] = str(e)
        fl.ready()

        b = Bench(s, mock, fl, gateways)
        b.errors.update(errors)
        if profile:
            sc = BY_NAME[profile]
            if sc.name in b.errors:
                raise RuntimeError(b.errors[sc.name])
            b.verify(sc)
            run_profile(gateways[sc.gateway], b.urls(sc)["gateway"], _body_file(sc.body),
                        b.auth(sc, "gateway"))
            return 0

        # The mock alone, driven from the other core: it must be far above the gateway.
        ob = _body_file(request_body("chat", "bench-openai", False))
        mock_rps = wrk_rps(mock + PATHS["chat"], ob, 3, s.wrk_conns, GATEWAY_CORE)
        print(f"mock upstream alone (wrk on core {GATEWAY_CORE}): {mock_rps:.0f} req/s",
              flush=True)
        extra["mock_rps"] = mock_rps

        for sc in scenarios:
            if sc.name in b.errors:
                continue
            try:
                b.verify(sc)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                b.errors[sc.name] = f"not timed: {e}"
                print(f"  {sc.name}: {b.errors[sc.name]}", flush=True)
        print(f"verified: {', '.join(sc.name for sc in scenarios if sc.name not in b.errors)}"
              " answer 200 with a correct body (gateway, floor, mock)", flush=True)
        for rep in range(s.reps):
            b._cache.clear()
            for sc in scenarios:
                if sc.name in b.errors:
                    continue
                try:
                    b.measure(rep, sc)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    b.errors[sc.name] = f"rep {rep + 1}: {e}"
                    print(f"  {sc.name}: ERROR {b.errors[sc.name]}", flush=True)
        for pair in PAIRS:
            if all(n in names and n in b.raw and n not in b.errors for n in pair):
                try:
                    b.paired[pair] = paired(b, BY_NAME[pair[0]], BY_NAME[pair[1]])
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    b.errors[f"paired {pair[0]} / {pair[1]}"] = str(e)
        for g in gateways.values():
            g.stop()
        if WORKERS2 in names:
            try:
                w2 = workers2(s, procs, mock_port)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                b.errors[WORKERS2] = str(e)
    cpu = meter.stop()
    unbuffered(b, s)
    table, compact = verdicts(b, w2, s, probes)
    summary = grid(b, w2, s)
    elapsed = time.monotonic() - started
    print()
    print(f"Gateway / floor per front door (ms above the mock alone; {s.reps} repetition(s), "
          f"medians):")
    print(summary)
    print()
    print(f"Verdicts (issue 18), median (min–max) over {s.reps} repetition(s), ms:")
    print(compact)
    path = write_results("llm", {
        "settings": s.__dict__, "pinning": pinning, "cpu_busy_before": busy, "cpu": cpu,
        "elapsed_s": elapsed, "scenarios": {sc.name: sc.about for sc in scenarios},
        "errors": b.errors, "raw": b.raw, "workers2": w2, "probes": probes,
        "paired": {f"{x} / {y}": v for (x, y), v in b.paired.items()},
        "summary": summary, **extra}, table)
    print(f"\npinning: {pinning}")
    print(f"machine: {100 * cpu['others']:.0f}% of all CPUs used by other processes during "
          f"the run (ours {100 * cpu['ours']:.0f}%, before the start {100 * busy:.0f}%)"
          + ("  — WARNING: a busy machine; figures are noisy" if cpu["others"] > 0.1 else ""))
    print(f"took {elapsed / 60:.1f} min; results: {path}")
    return 1 if b.errors or any(r.verdict == "ERROR" for r in table.rows) else 0


def run_profile(gw: Server, url: str, body: Path, auth: str = "") -> None:
    """py-spy samples the gateway while wrk saturates it; flame graph + collapsed stacks."""
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("profile: py-spy not found (it is in the bench environment)", flush=True)
        return
    seconds = 20
    load = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c16", f"-d{seconds + 4}s",
                             "-s", str(BENCH_DIR / "post.lua"), url],
                            env={**os.environ, "BENCH_BODY_FILE": str(body),
                                 "BENCH_AUTH": auth},
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


def _split(values: list[str]) -> list[str]:
    return [n for v in values for n in v.split(",") if n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="one repetition (the same loads as each repetition of a full run)")
    p.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                   help=f"run only these (repeat or comma-separate): {', '.join(ALL_NAMES)}")
    p.add_argument("--skip", action="append", default=[], metavar="SCENARIO",
                   help="leave these out (repeat or comma-separate)")
    p.add_argument("--profile", nargs="?", const="chat", metavar="SCENARIO",
                   choices=list(BY_NAME),
                   help="instead of the figures: a py-spy profile of the gateway saturated "
                        "on that scenario (default chat; bench/results/profile.svg, .txt)")
    a = p.parse_args()
    names = selected(_split(a.only), _split(a.skip))
    if a.profile:
        names = [a.profile]
    s = Settings(reps=1 if a.quick else a.reps, one_conn_seconds=2, n_rated=2000,
                 rate_conns=4, rate_per_conn=125, wrk_seconds=4, wrk_conns=16, streams=15,
                 chunks=20, chunk_delay_ms=2.0)
    try:
        sys.exit(run(s, names, a.profile))
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; everything it started was stopped")
    except RuntimeError as e:
        sys.exit(f"bench: {e}")


if __name__ == "__main__":
    main()
