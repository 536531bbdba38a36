#!/usr/bin/env python3
"""The guest agent: runs code for the host over one byte stream. Standard library only, one
file, so it runs in any guest image (`python3 agent.py --unix PATH | --vsock PORT | --tty DEV |
--stdio`).

Frames both ways: 4-byte big-endian length, then one UTF-8 JSON object. On connect the agent
sends ``{"type": "hello", "protocol": 1, ...}``. Requests carry ``id`` and ``op``:

* ``ping`` -> ``pong``
* ``execute`` {runtime: {name, file, build: [argv]|null, run: [argv], env}, code, env, stdin,
  timeout_s, stream, max_output_bytes, rlimits} -> ``chunk`` frames {stream, data} when
  streaming, then one ``result`` {stdout, stderr, exit_code, duration_ms, timed_out,
  truncated}. ``{file}``, ``{dir}`` and ``{workdir}`` in argv are replaced. The host sends the
  runtime entry, so the agent has no runtime table of its own.
* ``cancel`` {target} -> kills that execution's process group (its result follows)
* ``write_file`` {path, data (base64), mode, append} -> ``written`` {size}
* ``read_file`` {path, max_bytes, offset?} -> ``file`` {data (base64), size, total, eof}
  (with ``offset``: one chunk of a streamed download; without: the whole file or too_large)
* ``list`` {path, depth} -> ``entries``; ``stat`` {path} -> ``entry``; ``remove`` {path,
  recursive}, ``mkdir`` {path}, ``move`` {src, dst, overwrite} -> ``ok`` / ``entry``
* ``context_create`` {context, language, argv, cwd, env}, ``context_delete``,
  ``context_restart``, ``context_interrupt`` {context} -> ``ok``; ``context_exec`` {context,
  code, timeout_s, grace_s, stream, max_output_bytes} -> chunks, then ``cell`` {stdout,
  stderr, results: [{mime, data, bundle, value}], error: {name, value, traceback}|null,
  restarted, ...}: ``bundle`` numbers the MIME bundle (one displayed object) each item is
  part of, ``value`` marks the bundle of the cell's last expression.
  A context is a long-lived interpreter (``cell_runner`` below, or Node's ``vm``); a timeout
  or interrupt sends it SIGINT, and one that ignores that is killed after ``grace_s`` and
  started afresh (``restarted``).
* ``proc_start`` {cmd, cwd, env, stdin, timeout_s} -> ``proc`` {pid, ...}: a background
  ``/bin/sh -c``; ``proc_list`` -> ``procs``; ``proc_get`` {pid} -> ``proc`` with output so
  far; ``proc_follow`` {pid} -> output so far and live as chunks, then ``proc`` at exit
  (``cancel`` stops following); ``proc_stdin`` {pid, data, eof}; ``proc_signal`` {pid, signal}
* ``egress_start`` {port, unix | vsock_port} -> ``ok``: listen on 127.0.0.1:port (bringing
  ``lo`` up if it is down) and forward each connection, bytes unchanged, to the gateway's
  egress proxy on the Unix socket ``unix`` or the host's vsock port ``vsock_port``

Failures answer ``error`` {code, message}. A malformed frame closes that connection only.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any, Callable, ClassVar, Dict, List, Optional, Set

__all__ = [
    "Agent",
    "Capture",
    "Connection",
    "EgressForwarder",
    "Execution",
    "JSON",
    "MAX_FRAME",
    "Malformed",
    "OpError",
    "PROTOCOL_VERSION",
    "main",
]

JSON = Dict[str, Any]

PROTOCOL_VERSION = 2
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class Malformed(Exception):
    """The peer sent something that is not a frame of this protocol."""


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Connection:
    """One peer: frames in on ``rfile``, frames out on ``wfile`` (serialised by a lock)."""

    live: ClassVar[Set[Connection]] = set()

    def __init__(self, rfile: IO[bytes], wfile: IO[bytes], agent: Agent) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.agent = agent
        self.lock = threading.Lock()
        self.closed = False
        self.running: Dict[int, Execution] = {}
        self.cells: Dict[int, Context] = {}  # request id -> context running that cell
        self.following: Dict[int, Proc] = {}  # request id -> background command followed

    def send(self, obj: JSON) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        with self.lock:
            if self.closed:
                return
            try:
                self.wfile.write(_HEADER.pack(len(data)) + data)
                self.wfile.flush()
            except (OSError, ValueError):
                self.closed = True

    def read_exact(self, n: int) -> Optional[bytes]:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.rfile.read(n - len(buf))
            if not chunk:
                if buf:
                    raise Malformed("stream ended inside a frame")
                return None
            buf += chunk
        return bytes(buf)

    def read_frame(self) -> Optional[JSON]:
        head = self.read_exact(4)
        if head is None:
            return None
        (length,) = _HEADER.unpack(head)
        if length > self.agent.max_frame:
            raise Malformed("frame of %d bytes is over the limit" % length)
        body = self.read_exact(length)
        if body is None:
            raise Malformed("stream ended inside a frame")
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise Malformed("frame is not JSON: %s" % exc) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
            raise Malformed("frame is not an object with an 'op'")
        if not isinstance(obj.get("id"), int):
            raise Malformed("frame has no integer 'id'")
        return obj

    def serve(self) -> None:
        Connection.live.add(self)
        self.send({"type": "hello", "protocol": PROTOCOL_VERSION,
                   "agent": "gateway-sandbox-agent", "pid": os.getpid()})
        try:
            while True:
                try:
                    req = self.read_frame()
                except Malformed as exc:
                    self.send({"id": None, "type": "error", "code": "malformed_frame",
                               "message": str(exc)})
                    return
                except OSError:
                    return
                if req is None:
                    return
                self.dispatch(req)
        finally:
            self.close()

    def close(self) -> None:
        Connection.live.discard(self)
        with self.lock:
            self.closed = True
        # A host that went away no longer wants its executions.
        for execution in list(self.running.values()):
            execution.cancel()
        for ctx in list(self.cells.values()):
            ctx.interrupt()
        for proc in list(self.following.values()):
            proc.unfollow(self)

    def run_cell(self, ctx: Context, req: JSON) -> None:
        try:
            result = ctx.execute(self, req)
        except OpError as exc:
            result = {"type": "error", "code": exc.code, "message": exc.message}
        except (KeyError, TypeError, ValueError, OSError) as exc:
            result = {"type": "error", "code": "execute_failed",
                      "message": "%s: %s" % (type(exc).__name__, exc)}
        result["id"] = req["id"]
        self.cells.pop(req["id"], None)
        self.send(result)

    def dispatch(self, req: JSON) -> None:
        rid = req["id"]
        op = req["op"]
        try:
            if op == "ping":
                self.send({"id": rid, "type": "pong"})
            elif op == "execute":
                execution = Execution(self, req)
                self.running[rid] = execution
                threading.Thread(target=execution.run, daemon=True).start()
            elif op == "cancel":
                target_id = req.get("target")
                if isinstance(target_id, int):
                    target = self.running.get(target_id)
                    if target is not None:
                        target.cancel()
                    ctx = self.cells.get(target_id)
                    if ctx is not None:
                        ctx.interrupt()
                    followed = self.following.pop(target_id, None)
                    if followed is not None:
                        followed.unfollow(self)
                self.send({"id": rid, "type": "ok"})
            elif op == "context_exec":
                ctx = self.agent.context(req["context"])
                self.cells[rid] = ctx
                threading.Thread(target=self.run_cell, args=(ctx, req), daemon=True).start()
            elif op == "proc_follow":
                proc = self.agent.proc(req["pid"])
                self.following[rid] = proc
                proc.follow(self, rid)
            elif op in Agent.OPS:
                reply = getattr(self.agent, "op_" + op)(req)
                reply["id"] = rid
                reply.setdefault("type", "ok")
                self.send(reply)
            else:
                raise OpError("unknown_op", "unknown op %r" % op)
        except OpError as exc:
            self.send({"id": rid, "type": "error", "code": exc.code, "message": exc.message})
        except (KeyError, TypeError, ValueError) as exc:
            self.send({"id": rid, "type": "error", "code": "bad_request",
                       "message": "bad %s request: %s" % (op, exc)})
        except OSError as exc:
            self.send({"id": rid, "type": "error", "code": "io_error",
                       "message": "%s failed: %s" % (op, exc.strerror or exc)})


class Capture:
    """Reads one pipe to its end; keeps at most ``limit`` bytes and streams them if asked."""

    def __init__(self, conn: Connection, rid: int, name: str, fd: int, limit: int,
                 shared: bytearray, stream: bool) -> None:
        self.conn = conn
        self.rid = rid
        self.name = name
        self.fd = fd
        self.limit = limit
        self.shared = shared  # the bytes kept so far for this stream, across build and run
        self.stream = stream
        self.truncated = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.thread = threading.Thread(target=self.pump, daemon=True)
        self.thread.start()

    def pump(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                room = self.limit - len(self.shared)
                if room <= 0:
                    # Keep draining so the writer never blocks, but drop what is over the cap.
                    self.truncated = True
                    continue
                if len(chunk) > room:
                    chunk = chunk[:room]
                    self.truncated = True
                self.shared += chunk
                if self.stream:
                    text = self.decoder.decode(chunk)
                    if text:
                        self.conn.send({"id": self.rid, "type": "chunk", "stream": self.name,
                                        "data": text})
        finally:
            if self.stream:
                rest = self.decoder.decode(b"", final=True)
                if rest:
                    self.conn.send({"id": self.rid, "type": "chunk", "stream": self.name,
                                    "data": rest})
            os.close(self.fd)


def _rlimit_setter(rlimits: Optional[Dict[str, int]]) -> Optional[Callable[[], None]]:
    import resource

    table = {"cpu": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC,
             "fsize": resource.RLIMIT_FSIZE, "data": resource.RLIMIT_DATA,
             "nofile": resource.RLIMIT_NOFILE}
    pairs = [(table[k], int(v)) for k, v in (rlimits or {}).items() if k in table and v]

    def apply() -> None:
        for res, value in pairs:
            _soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))

    return apply if pairs else None


class Execution:
    def __init__(self, conn: Connection, req: JSON) -> None:
        self.conn = conn
        self.req = req
        self.rid = req["id"]
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.cancelled = False
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            proc = self.proc
        if proc is not None:
            _kill_group(proc)

    def run(self) -> None:
        result: JSON
        try:
            result = self._run()
        except OpError as exc:
            result = {"type": "error", "code": exc.code, "message": exc.message}
        except (KeyError, TypeError, ValueError, OSError) as exc:
            result = {"type": "error", "code": "execute_failed",
                      "message": "%s: %s" % (type(exc).__name__, exc)}
        result["id"] = self.rid
        self.conn.running.pop(self.rid, None)
        self.conn.send(result)

    def _run(self) -> JSON:
        agent = self.conn.agent
        req = self.req
        runtime = req["runtime"]
        timeout = float(req.get("timeout_s") or 30.0)
        limit = int(req.get("max_output_bytes") or 1024 * 1024)
        stream = bool(req.get("stream"))
        started = time.monotonic()
        deadline = started + timeout
        tmp = tempfile.mkdtemp(prefix="exec-", dir=agent.tmpdir)
        try:
            path = os.path.join(tmp, os.path.basename(runtime["file"]))
            with open(path, "w", encoding="utf-8") as f:
                f.write(req["code"])
            subst = {"file": path, "dir": tmp, "workdir": agent.workdir, "code": req["code"]}
            env = dict(agent.base_env)
            env.update(runtime.get("env") or {})
            env.update(req.get("env") or {})
            out, err = bytearray(), bytearray()
            truncated = False
            timed_out = False
            exit_code = 0
            steps: List[Any] = []
            if runtime.get("build"):
                steps.append((runtime["build"], None))
            steps.append((runtime["run"], req.get("stdin")))
            for argv, stdin in steps:
                argv = [a.format(**subst) for a in argv]
                exit_code, step_timed_out, step_trunc = self._step(
                    argv, env, stdin, deadline, out, err, limit, stream, req.get("rlimits"))
                truncated = truncated or step_trunc
                if step_timed_out:
                    timed_out = True
                    break
                if exit_code != 0 or self.cancelled:
                    break
            return {"type": "result",
                    "stdout": out.decode("utf-8", "replace"),
                    "stderr": err.decode("utf-8", "replace"),
                    "exit_code": exit_code,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                    "timed_out": timed_out, "truncated": truncated,
                    "cancelled": self.cancelled}
        finally:
            _rmtree(tmp)

    def _step(self, argv: List[str], env: Dict[str, str], stdin: Optional[str],
              deadline: float, out: bytearray, err: bytearray, limit: int, stream: bool,
              rlimits: Optional[Dict[str, int]]) -> Any:
        with self.lock:
            if self.cancelled:
                return 130, False, False
            try:
                proc = subprocess.Popen(
                    argv, cwd=self.conn.agent.cwd(self.req.get("cwd")), env=env,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True, preexec_fn=_rlimit_setter(rlimits))
            except OSError as exc:
                # A missing toolchain reads like a shell's "command not found".
                err += ("%s: %s\n" % (argv[0], exc.strerror)).encode()
                return 127, False, False
            self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        caps = [Capture(self.conn, self.rid, "stdout", os.dup(proc.stdout.fileno()), limit,
                        out, stream),
                Capture(self.conn, self.rid, "stderr", os.dup(proc.stderr.fileno()), limit,
                        err, stream)]
        proc.stdout.close()
        proc.stderr.close()
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        timed_out = False
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
        # Whatever the program left running in its group goes too (and on timeout, all of it).
        _kill_group(proc)
        proc.wait()
        for cap in caps:
            # A grandchild that escaped the group may hold the pipe; don't wait for it forever.
            cap.thread.join(timeout=2.0)
        with self.lock:
            self.proc = None
        code = proc.returncode
        if code < 0:
            code = 128 - code
        return code, timed_out, any(c.truncated for c in caps)


def _feed(pipe: IO[bytes], text: str) -> None:
    try:
        pipe.write(text.encode("utf-8"))
    except (BrokenPipeError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)



# ---- persistent contexts (notebook-style cells in a long-lived interpreter) ----

_CELL_ERROR_CAP = 64 * 1024


def cell_runner(fd_in: int, fd_out: int, token: str) -> int:
    """The Python side of a context: reads one JSON cell per line on ``fd_in``, runs it in one
    namespace that lives as long as this process, and answers one JSON line on ``fd_out``.
    Started by the agent as ``python3 -u agent.py --cell-runner IN OUT TOKEN``."""
    import ast
    import asyncio
    import builtins
    import linecache
    import traceback

    rfile = os.fdopen(fd_in, "rb")
    wfile = os.fdopen(fd_out, "wb", buffering=0)
    # The cell's directory, not the agent's, comes first on sys.path (as in a REPL).
    sys.path[0] = ""
    ns: Dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sentinel = ("\0%s\0" % token).encode()
    results: List[JSON] = []  # this cell's, display()ed and its value

    def display(*objs: Any) -> None:
        for obj in objs:
            results.append(_mime_bundle(obj))

    for count, line in enumerate(rfile, 1):
        results.clear()
        error: Optional[JSON] = None
        value_at: Optional[int] = None  # which bundle is the cell's value
        ns["display"] = display
        filename = "<cell-%d>" % count
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                req = json.loads(line)
                code = req["code"]
                linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
                value = _run_cell(ast, loop, code, filename, ns)
                if value is not None:
                    ns["_"] = value
                    value_at = len(results)
                    results.append(_mime_bundle(value))
                results.extend(_figures())
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        except BaseException as exc:  # noqa: BLE001 - a cell's every failure is its result
            tb = exc.__traceback__
            # Drop the runner's own frames: the traceback starts at the cell.
            while tb is not None and tb.tb_frame.f_code.co_filename != filename:
                tb = tb.tb_next
            if isinstance(exc, SyntaxError):
                lines = traceback.format_exception_only(type(exc), exc)
            else:
                lines = traceback.format_exception(type(exc), exc, tb)
            error = {"name": type(exc).__name__, "value": str(exc),
                     "traceback": "".join(lines)[-_CELL_ERROR_CAP:]}
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.write(fd, sentinel)
        reply = {"results": list(results), "error": error, "execution_count": count,
                 "value": value_at}
        wfile.write((json.dumps(reply) + "\n").encode())
    return 0


def _run_cell(ast: Any, loop: Any, code: str, filename: str, ns: Dict[str, Any]) -> Any:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    for node, mode in ((tree, "exec"), (last, "eval")):
        if node is None:
            continue
        compiled = compile(node, filename, mode, flags=flags, dont_inherit=True)
        value = eval(compiled, ns)
        if compiled.co_flags & 0x80:  # CO_COROUTINE: the cell awaited at top level
            value = loop.run_until_complete(value)
        if mode == "eval":
            return value
    return None


_REPRS = (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
          ("image/svg+xml", "_repr_svg_"), ("image/png", "_repr_png_"),
          ("image/jpeg", "_repr_jpeg_"), ("text/latex", "_repr_latex_"),
          ("application/json", "_repr_json_"))


def _mime_bundle(obj: Any) -> JSON:
    """``{"text/plain": repr, ...}`` from the object's IPython-style ``_repr_*_`` methods."""
    bundle: JSON = {}
    for mime, attr in _REPRS:
        method = getattr(obj, attr, None)
        if method is None or isinstance(obj, type):
            continue
        try:
            data = method()
        except Exception:  # noqa: BLE001 - a broken repr only loses that representation
            continue
        if data is None:
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode("ascii")
        elif mime == "application/json" and not isinstance(data, str):
            data = json.dumps(data)
        bundle[mime] = data
    try:
        bundle["text/plain"] = repr(obj)
    except Exception as exc:  # noqa: BLE001
        bundle["text/plain"] = "<repr failed: %s>" % exc
    return bundle


def _figures() -> List[JSON]:
    """Open matplotlib figures as PNGs (then closed), when the cell used pyplot."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    import io

    out: List[JSON] = []
    for num in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png")
        out.append({"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                    "text/plain": "<Figure %d>" % num})
    plt.close("all")
    return out


NODE_RUNNER = r"""
const vm = require('vm'), fs = require('fs'), util = require('util'),
      readline = require('readline'), Module = require('module');
const [token, fdIn, fdOut] = process.argv.slice(1);
const sentinel = '\0' + token + '\0';
const req = Module.createRequire(process.cwd() + '/');
const sandbox = {require: req, console, process, Buffer, URL, TextEncoder, TextDecoder,
  setTimeout, setInterval, setImmediate, clearTimeout, clearInterval, clearImmediate,
  queueMicrotask, structuredClone, fetch: globalThis.fetch, module: {exports: {}}};
sandbox.exports = sandbox.module.exports;
const ctx = vm.createContext(sandbox);
let interrupt = null, count = 0;
process.on('SIGINT', () => { if (interrupt) interrupt(); });
function wrapAsync(code) {
  // Top-level await: run the cell as an async function whose top-level declarations are
  // turned into assignments on the context's global, and whose last line is returned.
  const body = code.replace(/^(const|let|var)\s+(?=[A-Za-z_$][\w$]*\s*=)/gm, '');
  const lines = body.trimEnd().split('\n');
  const last = lines.pop().replace(/;\s*$/, '');
  const tries = [`(async () => {\n${lines.join('\n')}\nreturn (${last});\n})()`,
                 `(async () => {\n${body}\n})()`];
  for (const src of tries) {
    try { return new vm.Script(src, {filename: `<cell-${count}>`, lineOffset: -1}); }
    catch (e) { if (src === tries[tries.length - 1]) throw e; }
  }
}
async function run(code) {
  let script;
  try { script = new vm.Script(code, {filename: `<cell-${count}>`}); }
  catch (e) {
    if (!(e instanceof SyntaxError) || !/\bawait\b/.test(code)) throw e;
    script = wrapAsync(code);
    const p = script.runInContext(ctx, {breakOnSigint: true});
    return await new Promise((resolve, reject) => {
      interrupt = () => { const err = new Error('Interrupted'); err.name = 'Interrupted';
                          reject(err); };
      p.then(resolve, reject);
    });
  }
  return script.runInContext(ctx, {breakOnSigint: true});
}
let chain = Promise.resolve();
const rl = readline.createInterface({input: fs.createReadStream(null, {fd: +fdIn})});
rl.on('line', (line) => { chain = chain.then(async () => {
  count += 1;
  const out = {results: [], error: null, execution_count: count};
  try {
    const value = await run(JSON.parse(line).code);
    if (value !== undefined) {
      sandbox._ = value;
      out.value = out.results.length;
      out.results.push({'text/plain': util.inspect(value)});
    }
  } catch (e) {
    // Errors thrown in the context come from its own realm: no instanceof here.
    const err = (e !== null && (typeof e === 'object' || typeof e === 'function'))
      ? e : {name: 'Error', message: String(e)};
    out.error = {name: err.name || 'Error', value: String(err.message ?? e),
                 traceback: String(err.stack || err)};
  }
  interrupt = null;
  try { fs.writeSync(1, sentinel); } catch (e) {}
  try { fs.writeSync(2, sentinel); } catch (e) {}
  fs.writeSync(+fdOut, JSON.stringify(out) + '\n');
}); });
rl.on('close', () => process.exit(0));
"""


class _CellOutput:
    """Reads one of a context's output pipes for its whole life; hands what it reads to the
    cell running at the time, and notices the runner's end-of-cell mark."""

    def __init__(self, ctx: Context, name: str, fd: int, sentinel: bytes) -> None:
        self.ctx = ctx
        self.name = name
        self.fd = fd
        self.sentinel = sentinel
        self.marked = threading.Event()
        threading.Thread(target=self.pump, daemon=True).start()

    def pump(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                pending += chunk
                while True:
                    at = pending.find(self.sentinel)
                    if at < 0:
                        break
                    self.ctx.output(self.name, pending[:at])
                    pending = pending[at + len(self.sentinel):]
                    self.marked.set()
                # Hold back what could be the start of a mark split across reads.
                keep = 0
                for n in range(min(len(pending), len(self.sentinel) - 1), 0, -1):
                    if self.sentinel.startswith(pending[-n:]):
                        keep = n
                        break
                if len(pending) > keep:
                    self.ctx.output(self.name, pending[:len(pending) - keep])
                    pending = pending[len(pending) - keep:]
        finally:
            if pending:
                self.ctx.output(self.name, pending)
            self.marked.set()
            with contextlib.suppress(OSError):
                os.close(self.fd)


class _Cell:
    def __init__(self, conn: Connection, rid: int, stream: bool, limit: int) -> None:
        self.conn = conn
        self.rid = rid
        self.stream = stream
        self.limit = limit
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.decoders = {k: codecs.getincrementaldecoder("utf-8")("replace") for k in self.out}
        self.truncated = False


class Context:
    """One long-lived interpreter (Python cell runner or Node ``vm``) and its namespace."""

    def __init__(self, agent: Agent, cid: str, language: str, argv: List[str],
                 cwd: str, env: Dict[str, str]) -> None:
        self.agent = agent
        self.id = cid
        self.language = language
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.lock = threading.Lock()  # one cell at a time
        self.state_lock = threading.Lock()
        self.cell: Optional[_Cell] = None
        self.events: Any = None
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.restarts = 0
        self.start()

    def start(self) -> None:
        import queue

        token = "cell-end-" + os.urandom(8).hex()
        to_runner_r, to_runner_w = os.pipe()
        from_runner_r, from_runner_w = os.pipe()
        subst = {"agent": os.path.abspath(__file__), "in": str(to_runner_r),
                 "out": str(from_runner_w), "token": token, "node_runner": NODE_RUNNER}
        argv = [a.format(**subst) for a in self.argv]
        try:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(to_runner_r, from_runner_w),
                                    start_new_session=True)
        except OSError as exc:
            for fd in (to_runner_r, to_runner_w, from_runner_r, from_runner_w):
                os.close(fd)
            raise OpError("context_failed", "cannot start %s: %s" % (argv[0], exc.strerror)) \
                from None
        os.close(to_runner_r)
        os.close(from_runner_w)
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.to_runner = os.fdopen(to_runner_w, "wb", buffering=0)
        self.events = queue.Queue()
        sentinel = ("\0%s\0" % token).encode()
        self.outputs = [_CellOutput(self, "stdout", os.dup(proc.stdout.fileno()), sentinel),
                        _CellOutput(self, "stderr", os.dup(proc.stderr.fileno()), sentinel)]
        proc.stdout.close()
        proc.stderr.close()
        events = self.events

        def replies() -> None:
            with os.fdopen(from_runner_r, "rb") as f:
                for line in f:
                    try:
                        events.put(("reply", json.loads(line)))
                    except ValueError:
                        continue
            events.put(("exited", None))

        threading.Thread(target=replies, daemon=True).start()

    def output(self, name: str, data: bytes) -> None:
        cell = self.cell
        if cell is None or not data:
            return  # printed between cells (a thread of an earlier one): nobody to tell
        kept = cell.out[name]
        room = cell.limit - len(kept)
        if room <= 0:
            cell.truncated = True
            return
        if len(data) > room:
            data = data[:room]
            cell.truncated = True
        kept += data
        if cell.stream:
            text = cell.decoders[name].decode(data)
            if text:
                cell.conn.send({"id": cell.rid, "type": "chunk", "stream": name, "data": text})

    def interrupt(self) -> None:
        events = self.events
        if events is not None:
            events.put(("interrupt", None))

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.to_runner.close()
        proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.start()

    def execute(self, conn: Connection, req: JSON) -> JSON:
        import queue

        timeout = float(req.get("timeout_s") or 30.0)
        grace = float(req.get("grace_s") or 2.0)
        cell = _Cell(conn, req["id"], bool(req.get("stream")),
                     int(req.get("max_output_bytes") or 1024 * 1024))
        if not self.lock.acquire(timeout=timeout):
            raise OpError("context_busy", "context %s is running another cell" % self.id)
        try:
            started = time.monotonic()
            if self.proc is None or self.proc.poll() is not None:
                self.restart()
            # Drain what an earlier cell's interrupt or exit left behind.
            while True:
                try:
                    self.events.get_nowait()
                except queue.Empty:
                    break
            for out in self.outputs:
                out.marked.clear()
            self.cell = cell
            timed_out = interrupted = restarted = False
            reply: Optional[JSON] = None
            with contextlib.suppress(OSError):  # a dead runner's exit is on the queue
                self.to_runner.write((json.dumps({"code": req["code"]}) + "\n").encode())
            deadline = started + timeout
            kill_at: Optional[float] = None
            while reply is None:
                now = time.monotonic()
                wait_until = kill_at if kill_at is not None else deadline
                try:
                    kind, obj = self.events.get(timeout=max(0.0, wait_until - now))
                except queue.Empty:
                    if kill_at is None:
                        # Timed out: interrupt the cell (KeyboardInterrupt), state survives.
                        timed_out = True
                        self._signal(signal.SIGINT)
                        kill_at = time.monotonic() + grace
                        continue
                    # It ignored the interrupt: a fresh interpreter replaces it.
                    self.restart()
                    restarted = True
                    break
                if kind == "reply":
                    reply = obj
                elif kind == "interrupt" and kill_at is None:
                    interrupted = True
                    self._signal(signal.SIGINT)
                    kill_at = time.monotonic() + grace
                elif kind == "exited":
                    self.restart()
                    restarted = True
                    break
            if reply is not None:
                for out in self.outputs:
                    out.marked.wait(timeout=2.0)
            self.cell = None
            for name in ("stdout", "stderr"):
                rest = cell.decoders[name].decode(b"", final=True)
                if rest and cell.stream:
                    conn.send({"id": cell.rid, "type": "chunk", "stream": name, "data": rest})
            error = reply.get("error") if reply else None
            if reply is None:
                why = ("it did not stop within %.1f s of an interrupt" % grace
                       if timed_out or interrupted else "its interpreter exited")
                error = {"name": "ContextRestarted",
                         "value": "The context was restarted: %s; its state is lost." % why,
                         "traceback": ""}
            bundles = (reply.get("results") or []) if reply else []
            value_at = reply.get("value") if reply else None
            return {"type": "cell", "stdout": cell.out["stdout"].decode("utf-8", "replace"),
                    "stderr": cell.out["stderr"].decode("utf-8", "replace"),
                    "exit_code": 0 if error is None else 1,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                    "timed_out": timed_out, "truncated": cell.truncated,
                    "results": [{"mime": m, "data": d, "bundle": i, "value": i == value_at}
                                for i, bundle in enumerate(bundles)
                                for m, d in bundle.items()],
                    "error": error, "restarted": restarted, "interrupted": interrupted,
                    "execution_count": int(reply.get("execution_count") or 0) if reply else 0}
        finally:
            self.cell = None
            self.lock.release()


# ---- background commands ----

class Proc:
    """A shell command running in the background: output kept (capped), followers told."""

    def __init__(self, agent: Agent, req: JSON) -> None:
        self.agent = agent
        self.cmd = req["cmd"]
        self.limit = int(req.get("max_output_bytes") or 1024 * 1024)
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False
        self.exit_code: Optional[int] = None
        self.started_at = time.time()
        self.lock = threading.Lock()
        self.followers: Dict[Any, int] = {}  # Connection -> request id
        self.done = threading.Event()
        env = dict(agent.base_env)
        env.update(req.get("env") or {})
        stdin = req.get("stdin")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", self.cmd], cwd=agent.cwd(req.get("cwd")), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_rlimit_setter(req.get("rlimits")))
        self.pid = self.proc.pid
        assert self.proc.stdin is not None
        self.stdin: Optional[IO[bytes]] = self.proc.stdin
        if stdin:
            self.write_stdin(stdin.encode("utf-8"), eof=False)
        self.pumps = [threading.Thread(target=self.pump, args=(name, pipe), daemon=True)
                      for name, pipe in (("stdout", self.proc.stdout),
                                         ("stderr", self.proc.stderr))]
        for t in self.pumps:
            t.start()
        threading.Thread(target=self.wait, args=(req.get("timeout_s"),), daemon=True).start()

    def pump(self, name: str, pipe: IO[bytes]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd = pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                kept = self.out[name]
                room = self.limit - len(kept)
                if room <= 0:
                    self.truncated = True
                    continue
                if len(chunk) > room:
                    chunk = chunk[:room]
                    self.truncated = True
                kept += chunk
                text = decoder.decode(chunk)
                followers = list(self.followers.items())
            for conn, rid in followers:
                if text:
                    conn.send({"id": rid, "type": "chunk", "stream": name, "data": text})
        pipe.close()

    def wait(self, timeout_s: Optional[float]) -> None:
        try:
            self.proc.wait(timeout=float(timeout_s) if timeout_s else None)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        for t in self.pumps:
            t.join(timeout=2.0)
        with self.lock:
            code = self.proc.returncode
            self.exit_code = 128 - code if code < 0 else code
            followers = list(self.followers.items())
            self.followers.clear()
        self.done.set()
        for conn, rid in followers:
            conn.send(self.status(rid, output=False))

    def write_stdin(self, data: bytes, eof: bool) -> None:
        if self.stdin is None:
            raise OpError("stdin_closed", "process %d's stdin is closed" % self.pid)
        try:
            if data:
                self.stdin.write(data)
                self.stdin.flush()
            if eof:
                self.stdin.close()
                self.stdin = None
        except (BrokenPipeError, OSError):
            self.stdin = None
            raise OpError("stdin_closed", "process %d no longer reads its stdin" % self.pid) \
                from None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def status(self, rid: int, output: bool = True) -> JSON:
        with self.lock:
            out: JSON = {"id": rid, "type": "proc", "pid": self.pid, "cmd": self.cmd,
                         "status": "running" if self.exit_code is None else "exited",
                         "exit_code": self.exit_code, "started_at": self.started_at,
                         "truncated": self.truncated}
            if output:
                out["stdout"] = self.out["stdout"].decode("utf-8", "replace")
                out["stderr"] = self.out["stderr"].decode("utf-8", "replace")
        return out

    def follow(self, conn: Connection, rid: int) -> None:
        """Send what was printed so far, then live chunks, then the final status."""
        with self.lock:
            for name in ("stdout", "stderr"):
                if self.out[name]:
                    conn.send({"id": rid, "type": "chunk", "stream": name,
                               "data": self.out[name].decode("utf-8", "replace")})
            if self.exit_code is None:
                self.followers[conn] = rid
                return
        conn.send(self.status(rid, output=False))

    def unfollow(self, conn: Connection) -> None:
        with self.lock:
            self.followers.pop(conn, None)


class Agent:
    #: Ops answered at once by ``op_<name>(req) -> reply`` (the rest need a thread or a
    #: connection: execute, context_exec, proc_follow, cancel, ping).
    OPS = frozenset(("write_file", "read_file", "list", "stat", "remove", "mkdir", "move",
                     "context_create", "context_delete", "context_restart",
                     "context_interrupt", "proc_start", "proc_list", "proc_get", "proc_stdin",
                     "proc_signal", "egress_start"))
    MAX_FINISHED = 256  # exited background commands kept for their status
    live: ClassVar[Set[Agent]] = set()

    def __init__(self, workdir: str, tmpdir: str, max_frame: int) -> None:
        self.workdir = os.path.realpath(workdir)
        self.tmpdir = tmpdir
        self.max_frame = max_frame
        self.base_env = dict(os.environ)
        self.base_env.setdefault("HOME", self.workdir)
        self.contexts: Dict[str, Context] = {}
        self.procs: Dict[int, Proc] = {}
        self.lock = threading.Lock()
        self.egress = None  # type: Optional[EgressForwarder]
        Agent.live.add(self)

    def resolve(self, path: Any, allow_root: bool = False) -> str:
        """Confine ``path`` to the work dir, following symlinks before judging."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise OpError("invalid_path", "path must be a non-empty string")
        full = path if os.path.isabs(path) else os.path.join(self.workdir, path)
        real = os.path.realpath(full)
        if real != self.workdir and not real.startswith(self.workdir + os.sep):
            raise OpError("invalid_path", "path %r is outside the work directory" % path)
        if real == self.workdir and not allow_root:
            raise OpError("invalid_path", "path %r is the work directory itself" % path)
        return real

    def cwd(self, path: Any) -> str:
        if not path:
            return self.workdir
        full = path if os.path.isabs(path) else os.path.join(self.workdir, path)
        if not os.path.isdir(full):
            raise OpError("invalid_cwd", "cwd %r is not a directory in the sandbox" % path)
        return full

    def rel(self, real: str) -> str:
        return os.path.relpath(real, self.workdir)

    # ---- files ----

    def op_write_file(self, req: JSON) -> JSON:
        real = self.resolve(req["path"])
        data = base64.b64decode(req.get("data") or "")
        os.makedirs(os.path.dirname(real), exist_ok=True)
        mode = int(req.get("mode") or 0o644)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        flags |= os.O_APPEND if req.get("append") else os.O_TRUNC
        try:
            fd = os.open(real, flags, mode)
        except IsADirectoryError:
            raise OpError("invalid_path", "path %r is a directory" % req["path"]) from None
        except OSError as exc:
            raise _io_error("write", req["path"], exc) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                size = f.tell()
        except OSError as exc:
            raise _io_error("write", req["path"], exc) from None
        return {"type": "written", "size": size}

    def op_read_file(self, req: JSON) -> JSON:
        real = self.resolve(req["path"])
        max_bytes = int(req.get("max_bytes") or MAX_FRAME // 2)
        offset = int(req.get("offset") or 0)
        chunked = req.get("offset") is not None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise OpError("not_found", "no file at %r" % req["path"]) from None
        except OSError as exc:
            raise _io_error("read", req["path"], exc) from None
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(real):
                raise OpError("invalid_path", "path %r is not a regular file" % req["path"])
            total = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(max_bytes if chunked else max_bytes + 1)
        if not chunked and len(data) > max_bytes:
            raise OpError("too_large", "file %r is over %d bytes" % (req["path"], max_bytes))
        return {"type": "file", "size": len(data), "total": total,
                "eof": offset + len(data) >= total or len(data) < max_bytes,
                "data": base64.b64encode(data).decode("ascii")}

    def entry(self, real: str) -> JSON:
        st = os.lstat(real)
        import stat as st_mod

        kind = ("dir" if st_mod.S_ISDIR(st.st_mode) else
                "file" if st_mod.S_ISREG(st.st_mode) else
                "symlink" if st_mod.S_ISLNK(st.st_mode) else "other")
        out: JSON = {"name": os.path.basename(real), "path": self.rel(real), "type": kind,
                     "size": st.st_size, "mode": st_mod.S_IMODE(st.st_mode),
                     "mtime": st.st_mtime}
        if kind == "symlink":
            out["target"] = os.readlink(real)
        return out

    def _stat_target(self, req: JSON, allow_root: bool) -> str:
        path = req["path"]
        full = path if os.path.isabs(path) else os.path.join(self.workdir, path)
        # A symlink itself is described (lstat); only its parent must be confined.
        try:
            parent = self.resolve(os.path.dirname(full) or ".", allow_root=True)
        except OpError:
            raise OpError("invalid_path", "path %r is outside the work directory" % path) \
                from None
        real = os.path.join(parent, os.path.basename(full)) if os.path.basename(full) \
            else parent
        if os.path.basename(full) in ("", ".") or real == self.workdir:
            real = self.resolve(path, allow_root=allow_root)
        if not os.path.lexists(real):
            raise OpError("not_found", "nothing at %r" % path)
        return real

    def op_stat(self, req: JSON) -> JSON:
        real = self._stat_target(req, allow_root=True)
        return {"type": "entry", "entry": self.entry(real)}

    def op_list(self, req: JSON) -> JSON:
        top = self.resolve(req.get("path") or ".", allow_root=True)
        depth = max(1, int(req.get("depth") or 1))
        limit = int(req.get("limit") or 10000)
        if not os.path.isdir(top):
            raise OpError("not_a_directory", "path %r is not a directory" % req.get("path"))
        items: List[JSON] = []
        frontier = [(top, 1)]
        truncated = False
        while frontier:
            d, level = frontier.pop(0)
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for name in names:
                full = os.path.join(d, name)
                try:
                    e = self.entry(full)
                except OSError:
                    continue
                if len(items) >= limit:
                    truncated = True
                    break
                items.append(e)
                if e["type"] == "dir" and level < depth:
                    frontier.append((full, level + 1))
        return {"type": "entries", "entries": items, "truncated": truncated}

    def op_remove(self, req: JSON) -> JSON:
        real = self._stat_target(req, allow_root=False)
        if os.path.isdir(real) and not os.path.islink(real):
            if not req.get("recursive"):
                try:
                    os.rmdir(real)
                except OSError as exc:
                    raise OpError("not_empty", "directory %r is not empty; pass recursive"
                                  % req["path"]) if exc.errno == 39 \
                        else _io_error("remove", req["path"], exc) from None
            else:
                import shutil

                shutil.rmtree(real)
        else:
            os.unlink(real)
        return {}

    def op_mkdir(self, req: JSON) -> JSON:
        real = self.resolve(req["path"])
        existed = os.path.isdir(real)
        try:
            if req.get("parents", True):
                os.makedirs(real, exist_ok=True)
            elif not existed:
                os.mkdir(real)
        except FileExistsError:
            raise OpError("exists", "%r exists and is not a directory" % req["path"]) from None
        except FileNotFoundError:
            raise OpError("not_found", "the parent of %r does not exist" % req["path"]) \
                from None
        return {"created": not existed}

    def op_move(self, req: JSON) -> JSON:
        src = self._stat_target({"path": req["src"]}, allow_root=False)
        dst = self.resolve(req["dst"])
        if os.path.lexists(dst) and not req.get("overwrite"):
            raise OpError("exists", "%r exists; pass overwrite" % req["dst"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
        return {"type": "entry", "entry": self.entry(dst)}

    # ---- contexts ----

    def context(self, cid: Any) -> Context:
        ctx = self.contexts.get(cid) if isinstance(cid, str) else None
        if ctx is None:
            raise OpError("unknown_context", "no context %r" % cid)
        return ctx

    def op_context_create(self, req: JSON) -> JSON:
        cid = req["context"]
        with self.lock:
            if cid in self.contexts:
                raise OpError("exists", "context %r exists" % cid)
        env = dict(self.base_env)
        env.update(req.get("env") or {})
        ctx = Context(self, cid, req["language"], list(req["argv"]), self.cwd(req.get("cwd")),
                      env)
        with self.lock:
            self.contexts[cid] = ctx
        return {"pid": ctx.proc.pid if ctx.proc else 0}

    def op_context_delete(self, req: JSON) -> JSON:
        with self.lock:
            ctx = self.contexts.pop(req["context"], None)
        if ctx is None:
            raise OpError("unknown_context", "no context %r" % req["context"])
        ctx.kill()
        return {}

    def op_context_restart(self, req: JSON) -> JSON:
        ctx = self.context(req["context"])
        ctx.interrupt()
        with ctx.lock:
            ctx.restart()
        return {"pid": ctx.proc.pid if ctx.proc else 0}

    def op_context_interrupt(self, req: JSON) -> JSON:
        ctx = self.context(req["context"])
        running = ctx.cell is not None
        ctx.interrupt()
        return {"running": running}

    # ---- background commands ----

    def proc(self, pid: Any) -> Proc:
        proc = self.procs.get(pid) if isinstance(pid, int) else None
        if proc is None:
            raise OpError("unknown_pid", "no background command with pid %r" % pid)
        return proc

    def op_proc_start(self, req: JSON) -> JSON:
        try:
            proc = Proc(self, req)
        except OSError as exc:
            raise OpError("spawn_failed", "cannot start /bin/sh: %s" % exc.strerror) from None
        with self.lock:
            self.procs[proc.pid] = proc
            done = [p for p in self.procs.values() if p.exit_code is not None]
            for old in done[:max(0, len(done) - self.MAX_FINISHED)]:
                self.procs.pop(old.pid, None)
        return {"type": "proc", "pid": proc.pid, "cmd": proc.cmd, "status": "running",
                "exit_code": None, "started_at": proc.started_at, "truncated": False}

    def op_proc_list(self, req: JSON) -> JSON:
        with self.lock:
            procs = list(self.procs.values())
        return {"type": "procs", "procs": [p.status(0, output=False) for p in procs]}

    def op_proc_get(self, req: JSON) -> JSON:
        proc = self.proc(req["pid"])
        if req.get("wait_s"):
            proc.done.wait(timeout=float(req["wait_s"]))
        return proc.status(0)

    def op_proc_stdin(self, req: JSON) -> JSON:
        self.proc(req["pid"]).write_stdin(base64.b64decode(req.get("data") or ""),
                                           bool(req.get("eof")))
        return {}

    def op_proc_signal(self, req: JSON) -> JSON:
        name = str(req["signal"]).upper()
        sig = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
        if not isinstance(sig, signal.Signals):
            raise OpError("bad_signal", "unknown signal %r" % req["signal"])
        self.proc(req["pid"]).signal(sig)
        return {}


    # ---- egress ----

    def op_egress_start(self, req: JSON) -> JSON:
        port = req["port"]
        unix = req.get("unix")
        vsock_port = req.get("vsock_port")
        if not isinstance(port, int) or (unix is None) == (vsock_port is None):
            raise OpError("bad_request", "egress_start needs a port and one of unix, "
                          "vsock_port")
        with self.lock:
            if self.egress is None:
                forwarder = EgressForwarder(port, unix, vsock_port)
                forwarder.start()
                self.egress = forwarder
        return {}


def _loopback_up() -> None:
    """Set ``lo`` up (a VM's init may leave it down); the kernel then gives it 127.0.0.1."""
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, ifr)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


class EgressForwarder:
    """127.0.0.1:port inside the guest -> the gateway's egress proxy. The proxy decides;
    this only carries bytes (so code inside may point HTTP_PROXY at loopback)."""

    def __init__(self, port: int, unix: Optional[str], vsock_port: Optional[int]) -> None:
        self.port = port
        self.unix = unix
        self.vsock_port = vsock_port
        self.sock = None  # type: Optional[socket.socket]

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            if exc.errno != 99:  # EADDRNOTAVAIL: no 127.0.0.1 yet
                sock.close()
                raise
            _loopback_up()
            sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.sock = sock
        threading.Thread(target=self._accept, daemon=True).start()

    def _upstream(self) -> socket.socket:
        if self.unix is not None:
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = self.unix  # type: Any
        else:
            up = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            target = (socket.VMADDR_CID_HOST, self.vsock_port)
        try:
            up.connect(target)
        except OSError:
            up.close()
            raise
        return up

    def _accept(self) -> None:
        assert self.sock is not None
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                threading.Thread(target=self._handle, args=(client,), daemon=True).start()
            except RuntimeError:  # no more threads (the sandbox's process limit): drop it
                client.close()

    def _handle(self, client: socket.socket) -> None:
        try:
            up = self._upstream()
        except OSError as exc:
            body = ("egress proxy unreachable from the sandbox: %s\n" % exc).encode()
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                               % len(body) + body)
            client.close()
            return
        other = threading.Thread(target=_pump, args=(up, client), daemon=True)
        try:
            other.start()
        except RuntimeError:
            client.close()
            up.close()
            return
        _pump(client, up)
        other.join()
        client.close()
        up.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF (then half-close ``dst``) or an error (then shut both down)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _io_error(what: str, path: str, exc: OSError) -> OpError:
    if exc.errno == 28:
        return OpError("no_space", "cannot %s %r: no space left in the sandbox (disk_mb)"
                       % (what, path))
    return OpError("io_error", "cannot %s %r: %s" % (what, path, exc.strerror))


def _reap_orphans() -> None:
    """As a namespace's pid 1 the agent inherits every orphan; reap the dead ones that are
    not its own executions (those are waited for by their Popen)."""
    while True:
        time.sleep(1.0)
        try:
            with open("/proc/1/task/1/children") as children:
                kids = children.read().split()
        except OSError:
            return
        own = set()
        for conn in list(Connection.live):
            for execution in list(conn.running.values()):
                if execution.proc is not None:
                    own.add(execution.proc.pid)
        for agent in list(Agent.live):
            own.update(agent.procs)
            for ctx in list(agent.contexts.values()):
                if ctx.proc is not None:
                    own.add(ctx.proc.pid)
        for kid in kids:
            pid = int(kid)
            if pid in own:
                continue
            try:
                with open("/proc/%d/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    os.waitpid(pid, os.WNOHANG)
            except (OSError, ChildProcessError, IndexError):
                pass


def _serve_socket(agent: Agent, sock: socket.socket) -> None:
    sock.listen(8)
    while True:
        client, _ = sock.accept()

        def handle(c: socket.socket = client) -> None:
            rfile = c.makefile("rb")
            wfile = c.makefile("wb")
            try:
                Connection(rfile, wfile, agent).serve()
            finally:
                for f in (rfile, wfile):
                    with contextlib.suppress(OSError):
                        f.close()
                c.close()

        threading.Thread(target=handle, daemon=True).start()


def _serve_tty(agent: Agent, device: str) -> None:
    import termios
    import tty

    while True:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error:
            pass  # not a real tty (a FIFO or a virtio port): nothing to configure
        rfile = os.fdopen(fd, "rb", buffering=0, closefd=False)
        wfile = os.fdopen(fd, "wb", buffering=0, closefd=False)
        try:
            Connection(rfile, wfile, agent).serve()
        finally:
            os.close(fd)
        # The device stays; a new connection starts with a fresh hello.
        time.sleep(0.2)


def main(argv: Optional[List[str]] = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--cell-runner"]:
        return cell_runner(int(args_in[1]), int(args_in[2]), args_in[3])
    p = argparse.ArgumentParser(description="gateway-sandbox guest agent")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--stdio", action="store_true", help="one connection on stdin/stdout")
    how.add_argument("--unix", metavar="PATH", help="listen on a Unix socket")
    how.add_argument("--vsock", metavar="PORT", type=int, help="listen on a vsock port")
    how.add_argument("--tty", metavar="DEVICE", help="serve over a serial device")
    p.add_argument("--workdir", default=os.getcwd())
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    p.add_argument("--max-frame", type=int, default=MAX_FRAME)
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    agent = Agent(args.workdir, args.tmpdir, args.max_frame)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if os.getpid() == 1:
        threading.Thread(target=_reap_orphans, daemon=True).start()
    if args.stdio:
        rfile = os.fdopen(os.dup(0), "rb", buffering=0)
        wfile = os.fdopen(os.dup(1), "wb", buffering=0)
        # Children must not inherit the protocol stream as their stdin/stdout.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        Connection(rfile, wfile, agent).serve()
    elif args.unix:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.unix)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.unix + ".tmp")
        # Appear under the final name only once listening, so the host never connects early.
        sock.listen(8)
        os.rename(args.unix + ".tmp", args.unix)
        _serve_socket(agent, sock)
    elif args.vsock is not None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.bind((socket.VMADDR_CID_ANY, args.vsock))
        _serve_socket(agent, sock)
    else:
        _serve_tty(agent, args.tty)
    return 0


if __name__ == "__main__":
    sys.exit(main())
