"""Host side of the agent protocol: length-prefixed JSON frames over one byte stream, with
requests multiplexed by id so a file read can pass a running execution."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Literal

import msgspec

from gateway_sandbox.runtimes import Runtime

__all__ = [
    "AgentClient",
    "Cancel",
    "Chunk",
    "EgressStart",
    "ConnectionLost",
    "Error",
    "Execute",
    "FileData",
    "Hello",
    "MAX_FRAME",
    "Ok",
    "PROTOCOL_VERSION",
    "Ping",
    "Pong",
    "ReadFile",
    "Reply",
    "Request",
    "Result",
    "WriteFile",
    "Written",
    "encode_frame",
    "read_reply",
]

PROTOCOL_VERSION = 2
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


# ---- requests (host -> agent) ----

class Ping(msgspec.Struct, tag_field="op", tag="ping", kw_only=True):
    id: int


class Cancel(msgspec.Struct, tag_field="op", tag="cancel", kw_only=True):
    id: int
    target: int


class Execute(msgspec.Struct, tag_field="op", tag="execute", kw_only=True):
    id: int
    runtime: Runtime
    code: str
    timeout_s: float
    max_output_bytes: int
    env: dict[str, str] = msgspec.field(default_factory=dict)
    stdin: str | None = None
    stream: bool = False
    rlimits: dict[str, int] = msgspec.field(default_factory=dict)
    cwd: str | None = None


class WriteFile(msgspec.Struct, tag_field="op", tag="write_file", kw_only=True):
    id: int
    path: str
    data: bytes  # base64 in JSON, as msgspec encodes bytes
    mode: int = 0o644
    append: bool = False


class ReadFile(msgspec.Struct, tag_field="op", tag="read_file", kw_only=True):
    id: int
    path: str
    max_bytes: int
    # Set: one chunk of a streamed download from here (never too_large).
    offset: int | None = None


class ListDir(msgspec.Struct, tag_field="op", tag="list", kw_only=True):
    id: int
    path: str
    depth: int = 1
    limit: int = 10000


class Stat(msgspec.Struct, tag_field="op", tag="stat", kw_only=True):
    id: int
    path: str


class Remove(msgspec.Struct, tag_field="op", tag="remove", kw_only=True):
    id: int
    path: str
    recursive: bool = False


class MakeDir(msgspec.Struct, tag_field="op", tag="mkdir", kw_only=True):
    id: int
    path: str
    parents: bool = True


class Move(msgspec.Struct, tag_field="op", tag="move", kw_only=True):
    id: int
    src: str
    dst: str
    overwrite: bool = False


class ContextCreate(msgspec.Struct, tag_field="op", tag="context_create", kw_only=True):
    id: int
    context: str
    language: str
    # ``{agent}``, ``{in}``, ``{out}``, ``{token}``, ``{node_runner}`` are replaced.
    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)


class ContextOp(msgspec.Struct, tag_field="op", kw_only=True):
    id: int
    context: str


class ContextDelete(ContextOp, tag="context_delete"):
    pass


class ContextRestart(ContextOp, tag="context_restart"):
    pass


class ContextInterrupt(ContextOp, tag="context_interrupt"):
    pass


class ContextExec(msgspec.Struct, tag_field="op", tag="context_exec", kw_only=True):
    id: int
    context: str
    code: str
    timeout_s: float
    grace_s: float
    max_output_bytes: int
    stream: bool = False


class ProcStart(msgspec.Struct, tag_field="op", tag="proc_start", kw_only=True):
    id: int
    cmd: str
    max_output_bytes: int
    cwd: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    stdin: str | None = None
    timeout_s: float | None = None
    rlimits: dict[str, int] = msgspec.field(default_factory=dict)


class ProcList(msgspec.Struct, tag_field="op", tag="proc_list", kw_only=True):
    id: int


class ProcGet(msgspec.Struct, tag_field="op", tag="proc_get", kw_only=True):
    id: int
    pid: int
    wait_s: float | None = None


class ProcFollow(msgspec.Struct, tag_field="op", tag="proc_follow", kw_only=True):
    id: int
    pid: int


class ProcStdin(msgspec.Struct, tag_field="op", tag="proc_stdin", kw_only=True):
    id: int
    pid: int
    data: bytes
    eof: bool = False


class ProcSignal(msgspec.Struct, tag_field="op", tag="proc_signal", kw_only=True):
    id: int
    pid: int
    signal: str


class EgressStart(msgspec.Struct, tag_field="op", tag="egress_start", kw_only=True):
    """Listen on the guest's loopback ``port`` and forward each connection to the egress
    proxy: the Unix socket ``unix`` (a jail) or the host's vsock ``vsock_port`` (a VM)."""

    id: int
    port: int
    unix: str | None = None
    vsock_port: int | None = None


Request = (Ping | Cancel | Execute | WriteFile | ReadFile | ListDir | Stat | Remove | MakeDir
           | Move | ContextCreate | ContextDelete | ContextRestart | ContextInterrupt
           | ContextExec | ProcStart | ProcList | ProcGet | ProcFollow | ProcStdin | ProcSignal
           | EgressStart)


# ---- replies (agent -> host) ----

class Hello(msgspec.Struct, tag_field="type", tag="hello", kw_only=True):
    protocol: int
    agent: str = ""
    pid: int = 0


class Pong(msgspec.Struct, tag_field="type", tag="pong", kw_only=True):
    id: int


class Ok(msgspec.Struct, tag_field="type", tag="ok", kw_only=True):
    id: int
    created: bool | None = None  # mkdir
    running: bool | None = None  # context_interrupt
    pid: int | None = None  # context_create / restart


class Chunk(msgspec.Struct, tag_field="type", tag="chunk", kw_only=True):
    id: int
    stream: Literal["stdout", "stderr"]
    data: str


class Result(msgspec.Struct, tag_field="type", tag="result", kw_only=True):
    id: int
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    truncated: bool
    cancelled: bool = False


class Written(msgspec.Struct, tag_field="type", tag="written", kw_only=True):
    id: int
    size: int


class FileData(msgspec.Struct, tag_field="type", tag="file", kw_only=True):
    id: int
    data: bytes
    size: int
    total: int = 0
    eof: bool = True


class Entry(msgspec.Struct, kw_only=True):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float
    target: str | None = None


class EntryReply(msgspec.Struct, tag_field="type", tag="entry", kw_only=True):
    id: int
    entry: Entry


class Entries(msgspec.Struct, tag_field="type", tag="entries", kw_only=True):
    id: int
    entries: list[Entry]
    truncated: bool = False


class CellError(msgspec.Struct, kw_only=True):
    name: str
    value: str
    traceback: str


class CellOutput(msgspec.Struct, kw_only=True):
    mime: str
    data: str
    bundle: int = 0  # the MIME bundle (one displayed object) this representation is of
    value: bool = False  # of the bundle of the cell's last expression


class Cell(msgspec.Struct, tag_field="type", tag="cell", kw_only=True):
    id: int
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    truncated: bool
    results: list[CellOutput]
    error: CellError | None
    restarted: bool
    interrupted: bool = False
    execution_count: int = 0


class ProcInfo(msgspec.Struct, tag_field="type", tag="proc", kw_only=True):
    id: int
    pid: int
    cmd: str
    status: Literal["running", "exited"]
    exit_code: int | None
    started_at: float
    truncated: bool
    stdout: str | None = None
    stderr: str | None = None


class ProcInfoItem(msgspec.Struct, kw_only=True):
    pid: int
    cmd: str
    status: Literal["running", "exited"]
    exit_code: int | None
    started_at: float
    truncated: bool
    id: int = 0
    type: str = "proc"


class Procs(msgspec.Struct, tag_field="type", tag="procs", kw_only=True):
    id: int
    procs: list[ProcInfoItem]


class Error(msgspec.Struct, tag_field="type", tag="error", kw_only=True):
    id: int | None
    code: str
    message: str


Reply = (Hello | Pong | Ok | Chunk | Result | Written | FileData | EntryReply | Entries | Cell
         | ProcInfo | Procs | Error)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Reply] = msgspec.json.Decoder(Reply)


class ConnectionLost(Exception):
    """The agent's stream ended or carried something that is not a frame."""


def encode_frame(msg: Request) -> bytes:
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body)) + body


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    try:
        head = await reader.readexactly(4)
        (length,) = _HEADER.unpack(head)
        if length > MAX_FRAME:
            raise ConnectionLost(f"frame of {length} bytes is over the limit")
        return _decoder.decode(await reader.readexactly(length))
    except asyncio.IncompleteReadError as exc:
        raise ConnectionLost("the agent closed the stream") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConnectionLost(f"malformed frame from the agent: {exc}") from exc
    except OSError as exc:
        raise ConnectionLost(f"the agent's stream failed: {exc}") from exc


class AgentClient:
    """One connection to a guest agent. ``connect`` waits for the hello; a background task
    routes replies to the request that is waiting for them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 hello: Hello) -> None:
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self._next_id = 0
        self._waiting: dict[int, asyncio.Queue[Reply | ConnectionLost]] = {}
        self._write_lock = asyncio.Lock()
        self.lost: ConnectionLost | None = None
        self._task = asyncio.create_task(self._route())

    @classmethod
    async def connect(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      timeout_s: float = 10.0) -> AgentClient:
        try:
            first = await asyncio.wait_for(read_reply(reader), timeout_s)
        except BaseException:
            writer.close()
            raise
        if not isinstance(first, Hello):
            writer.close()
            raise ConnectionLost(f"expected a hello frame, got {type(first).__name__}")
        if first.protocol != PROTOCOL_VERSION:
            writer.close()
            raise ConnectionLost(f"agent speaks protocol {first.protocol}, "
                                 f"host speaks {PROTOCOL_VERSION}")
        return cls(reader, writer, first)

    @property
    def closed(self) -> bool:
        return self.lost is not None

    async def _route(self) -> None:
        try:
            while True:
                reply = await read_reply(self._reader)
                rid = getattr(reply, "id", None)
                queue = self._waiting.get(rid) if isinstance(rid, int) else None
                if queue is not None:
                    queue.put_nowait(reply)
                elif isinstance(reply, Error) and reply.id is None:
                    raise ConnectionLost(f"the agent dropped the connection: {reply.message}")
        except ConnectionLost as exc:
            self.lost = exc
        except asyncio.CancelledError:
            self.lost = ConnectionLost("the connection was closed")
            raise
        finally:
            if self.lost is None:
                self.lost = ConnectionLost("the connection was closed")
            for queue in self._waiting.values():
                queue.put_nowait(self.lost)
            self._writer.close()

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, msg: Request) -> asyncio.Queue[Reply | ConnectionLost]:
        """Send ``msg``; its replies (or the loss of the stream) arrive on the returned
        queue until ``forget(msg.id)``. (Plain methods rather than a context manager: an
        async generator holding one breaks when the loop closes generators at shutdown.)"""
        if self.lost is not None:
            raise self.lost
        queue: asyncio.Queue[Reply | ConnectionLost] = asyncio.Queue()
        self._waiting[msg.id] = queue
        try:
            async with self._write_lock:
                self._writer.write(encode_frame(msg))
                await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self.forget(msg.id)
            raise ConnectionLost(f"cannot write to the agent: {exc}") from exc
        except BaseException:
            self.forget(msg.id)
            raise
        return queue

    def forget(self, request_id: int) -> None:
        self._waiting.pop(request_id, None)

    async def call(self, msg: Request, timeout_s: float) -> Reply:
        """One request, one reply (not for execute, which may send chunks first)."""
        queue = await self.send(msg)
        try:
            reply = await asyncio.wait_for(queue.get(), timeout_s)
        finally:
            self.forget(msg.id)
        if isinstance(reply, ConnectionLost):
            raise reply
        return reply

    async def ping(self, timeout_s: float = 5.0) -> None:
        reply = await self.call(Ping(id=self.new_id()), timeout_s)
        if not isinstance(reply, Pong):
            raise ConnectionLost(f"expected pong, got {type(reply).__name__}")

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
