"""`hatch run bench:workers`: does `--workers N` scale? The gateway with 1 worker, the gateway
with 2 workers and the LiteLLM proxy with 2 workers (`litellm --config ... --num_workers 2`),
unpinned, on the same mock upstream, driven by the same checked wrk load in one run, their order
rotating between repetitions (see bench/README.md).

LiteLLM lives in its own virtual environment (its pins collide with ours), made on first use
under bench/results/peers/ with uv (or venv + pip) from PyPI; when it cannot be installed or
does not start, its row says so and the gateway's figures stand alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    CpuMeter,
    Figure,
    Procs,
    Table,
    free_port,
    render_grid,
    require_tools,
    wait_http,
    wait_port,
    warn_if_busy,
    write_results,
)
from llm import (
    HELLO,
    PATHS,
    Server,
    _body_file,
    check_answer,
    gateway,
    post,
    request_body,
    wrk_rps,
)

__all__ = ["LITELLM_SPEC", "main"]

# The LiteLLM measured against: pinned, so runs on different days compare the same peer
# (`--litellm-spec` to try another).
LITELLM_SPEC = "litellm[proxy]==1.108.7"
PEERS = RESULTS / "peers"
MODEL = "bench-openai"  # the gateway's alias (llm.bench_config) and LiteLLM's model_name
LIVENESS = "/health/liveliness"  # LiteLLM's, answered without calling the model
GW1, GW2, LL2 = "gateway 1w", "gateway 2w", "litellm 2w"


@dataclass
class Settings:
    reps: int
    seconds: int   # each timed wrk run
    conns: int     # wrk connections, the same for every target
    warmup_s: int  # one untimed, checked wrk run per target before the first repetition


# ---------------------------------------------------------------- LiteLLM's environment


def litellm_exe(spec: str) -> tuple[Path | None, str]:
    """The `litellm` executable of a venv holding `spec` (made on first use), or None and
    why it could not be had."""
    # One venv per spec: trying another spec leaves the pinned one in place.
    venv = PEERS / ("venv-" + re.sub(r"[^A-Za-z0-9.]+", "-", spec).strip("-"))
    exe = venv / "bin" / "litellm"
    stamp = venv / ".bench-spec"
    if exe.exists() and stamp.exists() and stamp.read_text() == spec:
        return exe, f"{spec} (in {venv})"
    PEERS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    if uv:
        steps = [[uv, "venv", "-q", "-p", sys.executable, str(venv)],
                 [uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), spec]]
    else:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", spec]]
    print(f"litellm: installing {spec} into {venv} ({'uv' if uv else 'venv + pip'}, from "
          "PyPI; once)", flush=True)
    log = venv.parent / f"{venv.name}.install.log"
    failure = ""
    with open(log, "wb") as out:
        for argv in steps:
            try:
                p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                failure = str(e)
                break
            if p.returncode != 0:
                failure = f"{Path(argv[0]).name} exited {p.returncode}"
                break
    if not failure and not exe.exists():
        failure = "no `litellm` executable installed"
    if failure:
        shutil.rmtree(venv, ignore_errors=True)
        tail = log.read_text(errors="replace").strip().splitlines()[-2:]
        return None, f"could not install {spec}: {failure}: {' / '.join(tail)} (see {log})"
    stamp.write_text(spec)
    return exe, f"{spec} (in {venv})"


def litellm_config(mock_port: int) -> str:
    """One model routed to the mock as an OpenAI-compatible endpoint; no callbacks, no
    database, no spend or error logs, no master key (the gateway runs without client keys
    here too): LiteLLM's bare proxy path. JSON is YAML, so it is written as JSON."""
    return json.dumps({
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": "openai/bench-model", "api_base": f"http://127.0.0.1:{mock_port}/v1",
            "api_key": "x"}}],
        "litellm_settings": {"telemetry": False, "callbacks": [], "success_callback": [],
                             "failure_callback": [], "turn_off_message_logging": True},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True,
                             # Refuses to start without a master key otherwise.
                             "dangerously_permit_weak_or_unset_master_key": True},
    }, indent=2)


# uvicorn's access log off, its other loggers at WARNING, to the log file.
_LITELLM_LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
}


class LiteLLM(Server):
    """The LiteLLM proxy as its CLI serves it (uvicorn, `--num_workers`), in its own venv."""

    def __init__(self, procs: Procs, exe: Path, mock_port: int, workers: int,
                 cores: str) -> None:
        self.procs, self.port = procs, free_port()
        self.name, self.health = f"litellm-{workers}w", LIVENESS
        self.log = RESULTS / f"{self.name}.log"
        self.base = f"http://127.0.0.1:{self.port}"
        config = RESULTS / "litellm.yaml"
        config.write_text(litellm_config(mock_port))
        logging = RESULTS / "litellm-logging.json"
        logging.write_text(json.dumps(_LITELLM_LOGGING))
        # No telemetry, no fetch of the model cost map (no internet here anyway), and nothing
        # of a database, master key or Redis leaking in from the caller's environment.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LITELLM_", "DATABASE_", "REDIS_"))}
        env.update({"LITELLM_TELEMETRY_DISABLED": "true",
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port",
                str(self.port), "--num_workers", str(workers), "--log_config", str(logging),
                # uvicorn kills a worker that misses its 5 s ping; on a busy 2-core machine
                # a worker under load (or still importing litellm) can, failing the run.
                "--timeout_worker_healthcheck", "120"]
        self.proc = procs.start(self.name, ["taskset", "-c", cores, *argv], log=self.log,
                                env=env)

    def ready(self) -> None:
        # Importing litellm in each worker takes tens of seconds on a busy machine.
        if not wait_http(self.base + LIVENESS, 240):
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log}: "
                               f"{self.log.read_text(errors='replace')[-600:]}")


# ---------------------------------------------------------------- measuring


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of one process group: a server
    and its workers (each server is started as its own group)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after "pid (comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / tick


def settle(groups: dict[str, int], quiet_cores: float = 0.05, limit_s: float = 30.0) -> float:
    """Wait until the servers are idle again: a slow one goes on working through the
    requests still queued when wrk stopped, which would otherwise run into the next target's
    load. Seconds waited (bounded)."""
    t0 = time.monotonic()
    prev = sum(group_cpu_s(g) for g in groups.values())
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.5)
        now = sum(group_cpu_s(g) for g in groups.values())
        if (now - prev) / 0.5 < quiet_cores:
            break
        prev = now
    return time.monotonic() - t0


def listeners(port: int) -> set[int]:
    """Process groups holding a listening TCP socket on `port` (IPv4, from /proc)."""
    inodes = set()
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    except OSError:
        return set()
    groups = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
            if any(os.readlink(f"/proc/{entry.name}/fd/{fd}") in inodes for fd in fds):
                groups.add(os.getpgid(int(entry.name)))
        except OSError:
            continue
    return groups


def own_port(srv: Server, timeout_s: float = 60.0) -> None:
    """The port answers as ours alone. Servers with several workers bind with SO_REUSEPORT
    (hypercorn, uvicorn), so another such server that picked the same free port on a shared
    machine would silently take half the connections (or answer the health check for a
    server still starting)."""
    deadline = time.monotonic() + timeout_s
    while srv.proc.pid not in (held := listeners(srv.port)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{srv.name}: port {srv.port} is not held by it (held by "
                               f"process groups {sorted(held)}); see {srv.log}")
        time.sleep(0.2)
    if held - {srv.proc.pid}:
        raise RuntimeError(f"{srv.name}: port {srv.port} is shared with other processes "
                           f"(process groups {sorted(held - {srv.proc.pid})}): run again")


def verify(name: str, url: str) -> None:
    """Before any timing: 200 with a Chat Completions answer carrying the mock's text."""
    status, body = post(url, request_body("chat", MODEL, False))
    if status != 200:
        raise RuntimeError(f"{name} answered HTTP {status}: "
                           f"{body[:300].decode(errors='replace')}")
    try:
        check_answer("chat", body, False, 0)
    except RuntimeError as e:
        raise RuntimeError(f"{name}: {e}") from None


def measure(s: Settings, targets: dict[str, Server], mock_pid: int, cores: str,
            on_error: Callable[[str, str], None]) -> dict[str, dict[str, list[float]]]:
    """Every target once per repetition, the order rotating: req/s, and the CPU (in cores)
    that the target's processes used meanwhile, the mock's and the other targets' (idle, they
    should use next to nothing)."""
    body = _body_file(request_body("chat", MODEL, False))
    raw: dict[str, dict[str, list[float]]] = {
        n: {"rps": [], "cores": [], "mock_cores": [], "others_cores": []} for n in targets}
    failed: set[str] = set()
    everyone = {"mock": mock_pid, **{n: t.proc.pid for n, t in targets.items()}}
    for name, srv in targets.items():
        try:
            wrk_rps(srv.base + PATHS["chat"], body, s.warmup_s, s.conns, cores)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            failed.add(name)
            on_error(name, f"warm-up: {e}")
        settle(everyone)
    names = list(targets)
    for rep in range(s.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        shown = []
        for name in order:
            if name in failed:
                continue
            srv = targets[name]
            settle(everyone)
            before = {n: group_cpu_s(g) for n, g in everyone.items()}
            t0 = time.monotonic()
            try:
                rps = wrk_rps(srv.base + PATHS["chat"], body, s.seconds, s.conns, cores)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failed.add(name)
                on_error(name, f"rep {rep + 1}: {e}")
                continue
            wall = time.monotonic() - t0
            used = {n: (group_cpu_s(g) - before[n]) / wall for n, g in everyone.items()}
            raw[name]["rps"].append(rps)
            raw[name]["cores"].append(used[name])
            raw[name]["mock_cores"].append(used["mock"])
            raw[name]["others_cores"].append(sum(v for n, v in used.items()
                                                 if n not in (name, "mock")))
            shown.append(f"{name} {rps:.0f} ({used[name]:.2f} cores)")
        print(f"  rep {rep + 1}/{s.reps} req/s: {'  '.join(shown)}", flush=True)
    return raw


def _ratio(a: list[float], b: list[float]) -> Figure | None:
    """a / b per repetition (paired), or None when either side has no complete set."""
    if not a or len(a) != len(b):
        return None
    return Figure([x / y for x, y in zip(a, b, strict=True)])


def _per_cpu_s(r: dict[str, list[float]]) -> list[float]:
    """Requests per CPU-second of the target's own processes, per repetition."""
    return [x / max(c, 1e-9) for x, c in zip(r["rps"], r["cores"], strict=True)]


def report(raw: dict[str, dict[str, list[float]]], errors: dict[str, str],
           skipped: dict[str, str]) -> tuple[Table, str]:
    t = Table("workers", echo=False)
    rows = []
    for name in (GW1, GW2, LL2):
        if name in skipped:
            rows.append([name, "SKIPPED (why: below)", "", "", "", ""])
            continue
        if name in errors:
            rows.append([name, "ERROR (why: below)", "", "", "", ""])
            t.add(f"{name} req/s", "", f"error: {errors[name][:200]}", "ERROR")
            continue
        r = raw[name]
        rows.append([name, Figure(r["rps"]).show("", 0), Figure(r["cores"]).show("", 2),
                     Figure(_per_cpu_s(r)).show("", 0), Figure(r["mock_cores"]).show("", 2),
                     Figure(r["others_cores"]).show("", 2)])
        t.add(f"{name} req/s", "", Figure(r["rps"]).show("", 0), "—", data=r)
    out = render_grid(["target (unpinned)", "req/s", "its cores", "req per CPU-s",
                       "mock's cores", "idle targets' cores"], rows)

    def ok(name: str) -> bool:
        return name in raw and name not in errors and name not in skipped

    lines = []
    for label, a, b in (("scaling, gateway 2 workers / 1 worker (req/s)", GW2, GW1),
                        ("gateway 2 workers / LiteLLM 2 workers (req/s)", GW2, LL2)):
        fig = _ratio(raw[a]["rps"], raw[b]["rps"]) if ok(a) and ok(b) else None
        why = next((f"{n} {'skipped' if n in skipped else 'failed'}" for n in (a, b)
                    if not ok(n)), "")
        shown = fig.show("", 2) if fig else f"— ({why})"
        t.add(label, "", shown, "—" if fig else ("SKIPPED" if "skipped" in why else "ERROR"))
        lines.append(f"{label}: {shown}")
    if ok(GW1) and ok(GW2):
        eff = _ratio(_per_cpu_s(raw[GW2]), _per_cpu_s(raw[GW1]))
        if eff is not None:
            t.add("gateway 2w / 1w req per CPU-second", "", eff.show("", 2), "—")
            lines.append(f"req per CPU-second, gateway 2 workers / 1 worker: {eff.show('', 2)}"
                         " (1.0: the second worker works as well as the first)")
    lines += [f"{n}: SKIPPED — {why}" for n, why in skipped.items()]
    lines += [f"{n}: ERROR — {why}" for n, why in errors.items()]
    return t, out + "\n\n" + "\n".join(lines)


# ---------------------------------------------------------------- the run


def run(s: Settings, spec: str, with_litellm: bool) -> int:
    require_tools(["wrk", "taskset"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    allowed = sorted(os.sched_getaffinity(0))
    # "Unpinned": every process may run on every core this runner may use.
    cores = ",".join(map(str, allowed))
    print(f"pinning: none — mock, gateways, LiteLLM and wrk all on cores {cores}", flush=True)
    skipped: dict[str, str] = {}
    exe: Path | None = None
    peer = ""
    if with_litellm:
        exe, about = litellm_exe(spec)
        if exe is None:
            skipped[LL2] = about
            print(f"litellm: SKIPPED — {about}", flush=True)
        else:
            peer = about
            print(f"litellm: {peer}", flush=True)
    else:
        skipped[LL2] = "--no-litellm"
    busy = warn_if_busy()
    meter = CpuMeter()
    started = time.monotonic()
    errors: dict[str, str] = {}

    def on_error(name: str, err: str) -> None:
        errors.setdefault(name, err)
        print(f"  {name}: ERROR {err}", flush=True)

    with Procs() as procs:
        mock_port = free_port()
        procs.start("mock", ["taskset", "-c", cores, sys.executable,
                             str(Path(__file__).resolve().parent / "mock_upstream.py"),
                             "--port", str(mock_port)], log=RESULTS / "mock-workers.log")
        if not wait_port(mock_port):
            sys.exit("bench: the mock upstream did not start; see bench/results/mock-workers.log")
        mock = f"http://127.0.0.1:{mock_port}"
        servers = {GW1: gateway(procs, "scale-1w", mock_port, 1, cores),
                   GW2: gateway(procs, "scale-2w", mock_port, 2, cores)}
        if exe is not None:
            servers[LL2] = LiteLLM(procs, exe, mock_port, 2, cores)
        targets: dict[str, Server] = {}
        for name, srv in servers.items():
            try:
                srv.ready()
                own_port(srv)
                verify(name, srv.base + PATHS["chat"])
                targets[name] = srv
            except (RuntimeError, OSError) as e:
                on_error(name, f"not timed: {e}")
                srv.stop()
        verify("mock", mock + PATHS["chat"])
        print(f"verified: {', '.join(targets)} answer 200 with the mock's text ({HELLO!r})",
              flush=True)
        body = _body_file(request_body("chat", MODEL, False))
        mock_rps = wrk_rps(mock + PATHS["chat"], body, 2, s.conns, cores)
        print(f"mock upstream alone (unpinned): {mock_rps:.0f} req/s", flush=True)
        raw = measure(s, targets, procs.started["mock"].pid, cores, on_error)
    cpu = meter.stop()
    table, out = report(raw, errors, skipped)
    elapsed = time.monotonic() - started
    print()
    print(f"--workers, unpinned, wrk -c{s.conns} for {s.seconds} s per target; median "
          f"(min–max) over {s.reps} repetition(s):")
    print(out)
    path = write_results("workers", {
        "settings": s.__dict__, "cores": cores, "litellm": peer or skipped.get(LL2, ""),
        "cpu_busy_before": busy, "cpu": cpu, "elapsed_s": elapsed, "mock_rps": mock_rps,
        "raw": raw, "errors": errors, "skipped": skipped, "summary": out}, table)
    print(f"machine: {100 * cpu['others']:.0f}% of all CPUs used by other processes during "
          f"the run (ours {100 * cpu['ours']:.0f}%, before the start {100 * busy:.0f}%)"
          + ("  — WARNING: a busy machine; figures are noisy" if cpu["others"] > 0.1 else ""))
    print(f"took {elapsed / 60:.1f} min; results: {path}")
    return 1 if errors else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repetition")
    p.add_argument("--seconds", type=int, default=4, help="each timed wrk run (default 4)")
    # As bench:llm's saturation runs. More connections only queue longer: LiteLLM's
    # answers would then pass wrk's 5 s timeout on a busy machine.
    p.add_argument("--conns", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--litellm-spec", default=LITELLM_SPEC,
                   help=f"what to install LiteLLM from (default {LITELLM_SPEC})")
    p.add_argument("--no-litellm", action="store_true", help="the gateway rows only")
    a = p.parse_args()
    if a.reps < 1 or a.seconds < 1 or a.conns < 1:
        sys.exit("bench: --reps, --seconds and --conns must be >= 1")
    s = Settings(reps=1 if a.quick else a.reps, seconds=a.seconds, conns=a.conns, warmup_s=1)
    try:
        sys.exit(run(s, a.litellm_spec, not a.no_litellm))
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; everything it started was stopped")
    except RuntimeError as e:
        sys.exit(f"bench: {e}")


if __name__ == "__main__":
    main()
