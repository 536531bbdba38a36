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
* ``write_file`` {path, data (base64), mode} -> ``written`` {size}
* ``read_file`` {path, max_bytes} -> ``file`` {data (base64), size}

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
    "Execution",
    "JSON",
    "MAX_FRAME",
    "Malformed",
    "OpError",
    "PROTOCOL_VERSION",
    "main",
]

JSON = Dict[str, Any]

PROTOCOL_VERSION = 1
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
                target = self.running.get(target_id) if isinstance(target_id, int) else None
                if target is not None:
                    target.cancel()
                self.send({"id": rid, "type": "ok"})
            elif op == "write_file":
                self.send(self.agent.write_file(rid, req))
            elif op == "read_file":
                self.send(self.agent.read_file(rid, req))
            else:
                raise OpError("unknown_op", "unknown op %r" % op)
        except OpError as exc:
            self.send({"id": rid, "type": "error", "code": exc.code, "message": exc.message})
        except (KeyError, TypeError, ValueError) as exc:
            self.send({"id": rid, "type": "error", "code": "bad_request",
                       "message": "bad %s request: %s" % (op, exc)})


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
            subst = {"file": path, "dir": tmp, "workdir": agent.workdir}
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
                    argv, cwd=self.conn.agent.workdir, env=env,
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


class Agent:
    def __init__(self, workdir: str, tmpdir: str, max_frame: int) -> None:
        self.workdir = os.path.realpath(workdir)
        self.tmpdir = tmpdir
        self.max_frame = max_frame
        self.base_env = dict(os.environ)
        self.base_env.setdefault("HOME", self.workdir)

    def resolve(self, path: Any) -> str:
        """Confine ``path`` to the work dir, following symlinks before judging."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise OpError("invalid_path", "path must be a non-empty string")
        full = path if os.path.isabs(path) else os.path.join(self.workdir, path)
        real = os.path.realpath(full)
        if real != self.workdir and not real.startswith(self.workdir + os.sep):
            raise OpError("invalid_path", "path %r is outside the work directory" % path)
        if real == self.workdir:
            raise OpError("invalid_path", "path %r is the work directory itself" % path)
        return real

    def write_file(self, rid: int, req: JSON) -> JSON:
        real = self.resolve(req["path"])
        data = base64.b64decode(req.get("data") or "")
        os.makedirs(os.path.dirname(real), exist_ok=True)
        mode = int(req.get("mode") or 0o644)
        try:
            fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        except IsADirectoryError:
            raise OpError("invalid_path", "path %r is a directory" % req["path"]) from None
        except OSError as exc:
            raise OpError("io_error", "cannot write %r: %s" % (req["path"], exc.strerror)) \
                from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return {"id": rid, "type": "written", "size": len(data)}

    def read_file(self, rid: int, req: JSON) -> JSON:
        real = self.resolve(req["path"])
        max_bytes = int(req.get("max_bytes") or MAX_FRAME // 2)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise OpError("not_found", "no file at %r" % req["path"]) from None
        except OSError as exc:
            raise OpError("io_error", "cannot read %r: %s" % (req["path"], exc.strerror)) \
                from None
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(real):
                raise OpError("invalid_path", "path %r is not a regular file" % req["path"])
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise OpError("too_large", "file %r is over %d bytes" % (req["path"], max_bytes))
        return {"id": rid, "type": "file", "size": len(data),
                "data": base64.b64encode(data).decode("ascii")}


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
