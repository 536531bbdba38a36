"""The egress proxy: one Unix socket per sandbox (so every connection is attributed to its
sandbox), HTTP forward requests and CONNECT tunnels to the hosts on that sandbox's
allow-list, TLS never terminated (a tunnel's ClientHello must name the CONNECT host),
resolved addresses checked before connecting, every decision logged and counted, open
connections and bytes capped per sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import structlog

from gateway_core.config.sandbox import EgressConfig
from gateway_core.errors import InvalidRequest, PermissionDenied
from gateway_core.host_patterns import (
    HostPattern,
    matches_any,
    normalize_host,
    parse_pattern,
    within_any,
)
from gateway_sandbox.egress.addresses import forbidden_reason
from gateway_sandbox.egress.heads import BadRequest, ProxyRequest, parse_head, response
from gateway_sandbox.egress.tls import (
    ClientClosed,
    NotClientHello,
    parse_sni,
    read_client_hello,
)

__all__ = ["GATEWAY_HOST", "Decision", "EgressObserver", "EgressProxy", "NullEgressObserver",
           "SandboxEgress"]

#: The name under which a sandbox reaches the gateway's own API through the proxy (plain
#: HTTP only: the hop is the proxy's socket and the host's loopback, never a network), when
#: the application routes it (``EgressProxy.gateway``); the key the request carries decides.
GATEWAY_HOST = "gateway.sandbox.internal"

log = structlog.get_logger("gateway_sandbox.egress")

#: allowed: relayed; denied: the host, its address or the tunnel's SNI was refused;
#: capped: the sandbox is over its connection or byte cap; error: bad request or the
#: upstream could not be reached.
Decision = Literal["allowed", "denied", "capped", "error"]
_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
_SUN_PATH_MAX = 107


class EgressObserver(Protocol):
    def on_egress(self, decision: str) -> None:
        """One connection was decided (see :data:`Decision`)."""
        ...

    def on_egress_bytes(self, sent: int, received: int) -> None:
        """A relayed connection ended: bytes the sandbox sent and received through it."""
        ...


class NullEgressObserver:
    def on_egress(self, decision: str) -> None:
        return None

    def on_egress_bytes(self, sent: int, received: int) -> None:
        return None


class _Refused(Exception):
    def __init__(self, decision: Decision, status: int, reason: str, body: str) -> None:
        super().__init__(body)
        self.decision: Decision = decision
        self.status = status
        self.reason = reason
        self.body = body


class _Conn:
    """One connection's account, for its log line."""

    def __init__(self) -> None:
        self.kind = "-"
        self.host = ""
        self.port = 0
        self.address = ""
        self.sent = 0
        self.received = 0
        self.last = time.monotonic()


class SandboxEgress:
    """One sandbox's egress: its listening socket, allow-list, counters and connections."""

    def __init__(self, proxy: EgressProxy, sandbox_id: str,
                 allow: tuple[HostPattern, ...]) -> None:
        self._proxy = proxy
        self.sandbox_id = sandbox_id
        self.allow = allow
        self.open = 0
        self.connections = 0
        self.bytes = 0
        self.path: Path | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def allow_list(self) -> list[str]:
        return [str(p) for p in self.allow]

    async def listen(self, path: Path, uid: int | None = None) -> None:
        """(Re)bind the sandbox's socket at ``path`` (a new one replaces the old one;
        connections already open stay)."""
        if len(str(path)) > _SUN_PATH_MAX:
            raise OSError(f"egress socket path {path} is over {_SUN_PATH_MAX} bytes")
        await self._close_server()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(path),
                                                       limit=_MAX_HEAD)
        # The directory around it is the sandbox's own (0700, its uid): only it gets here.
        os.chmod(path, 0o666)
        if uid is not None:
            with contextlib.suppress(OSError):
                os.chown(path, uid, uid)
        self.path = path

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    async def aclose(self) -> None:
        """Stop listening, cut every open connection, remove the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._proxy._forget(self)
        await self._close_server()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn()
        upstream: asyncio.StreamWriter | None = None
        cfg = self._proxy.cfg
        decision: Decision = "error"
        why = ""
        # Counted from accept, so connections still sending their head count too.
        self.open += 1
        try:
            try:
                if self.open > 2 * cfg.max_connections + 8:
                    # A flood: not even the head is read (the client may see a reset).
                    raise _Refused("capped", 0, "", f"over {self.open - 1} connections at "
                                   f"once (cap {cfg.max_connections})")
                # The head is read first, also when refusing: closing on an unread request
                # would reset the connection before the client reads the 403.
                req = await self._read_request(reader)
                conn.kind = "connect" if req.is_connect else "http"
                conn.host, conn.port = req.host, req.port
                if self.open > cfg.max_connections:
                    raise _Refused("capped", 403, "Forbidden",
                                   f"egress refused: this sandbox already has "
                                   f"{self.open - 1} open connections (the cap is "
                                   f"{cfg.max_connections}); close one and retry.\n")
                if self.bytes >= cfg.max_bytes:
                    raise _Refused("capped", 403, "Forbidden",
                                   f"egress refused: this sandbox has used its egress "
                                   f"allowance of {cfg.max_bytes} bytes.\n")
                self.connections += 1
                name, addresses, port = await self._decide(req)
                conn.host = name
                up_reader, upstream, conn.address = await self._connect(addresses, port)
                if req.is_connect:
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    first = await self._client_hello(reader, name)
                else:
                    # A body that came with the head is still in ``reader``: the relay
                    # sends it on.
                    first = req.upstream_head()
                decision = "allowed"
                self._proxy.observer.on_egress(decision)
                conn.sent += len(first)
                self.bytes += len(first)
                upstream.write(first)
                await upstream.drain()
                why = await self._relay(conn, reader, writer, up_reader, upstream)
            except _Refused as refused:
                decision, why = refused.decision, refused.body.strip()
                self._proxy.observer.on_egress(decision)
                if refused.status:
                    with contextlib.suppress(OSError, ConnectionError):
                        writer.write(response(refused.status, refused.reason, refused.body))
                        await writer.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
            why = why or f"{type(exc).__name__}: {exc}"
        finally:
            self.open -= 1
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            if decision == "allowed":
                self._proxy.observer.on_egress_bytes(conn.sent, conn.received)
            log.info("sandbox_egress", sandbox=self.sandbox_id, decision=decision,
                     kind=conn.kind, host=conn.host, port=conn.port, address=conn.address,
                     sent=conn.sent, received=conn.received, reason=why or None)

    async def _read_request(self, reader: asyncio.StreamReader) -> ProxyRequest:
        timeout = self._proxy.cfg.connect_timeout_s
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.LimitOverrunError:
            raise _Refused("error", 431, "Request Header Fields Too Large",
                           f"egress refused: the request head is over {_MAX_HEAD} bytes.\n") \
                from None
        except asyncio.IncompleteReadError as exc:
            raise _Refused("error", 0, "", "the client closed before a request") from exc
        except TimeoutError:
            raise _Refused("error", 408, "Request Timeout",
                           "egress refused: no request head in time.\n") from None
        try:
            return parse_head(head)
        except BadRequest as exc:
            raise _Refused("error", 400, "Bad Request", f"egress refused: {exc}.\n") from None

    async def _decide(self, req: ProxyRequest) -> tuple[str, list[str], int]:
        """The normalized host, the addresses and port to try, or _Refused (a readable
        403)."""
        name = normalize_host(req.host)
        gateway = self._proxy.gateway
        if gateway is not None and name == GATEWAY_HOST and not req.is_connect \
                and matches_any(name, self.allow):
            # Only sandboxes whose list names it (those given a key); the key decides.
            return name, [gateway[0]], gateway[1]
        if name is None:
            raise _Refused("denied", 403, "Forbidden",
                           f"egress denied: {req.host!r} is not a host name; this sandbox "
                           "may only reach the host names it was allowed.\n")
        if not matches_any(name, self.allow):
            raise _Refused("denied", 403, "Forbidden",
                           f"egress denied: host {name} is not allowed for this sandbox "
                           f"(allowed: {', '.join(self.allow_list)}).\n")
        addresses = await self._proxy.resolve(name, req.port)
        if not addresses:
            raise _Refused("error", 502, "Bad Gateway",
                           f"egress failed: host {name} does not resolve.\n")
        if not self._proxy.cfg.allow_private_for_tests:
            for address in addresses:
                kind = forbidden_reason(address)
                if kind is not None:
                    raise _Refused("denied", 403, "Forbidden",
                                   f"egress denied: host {name} resolves to a {kind} address "
                                   f"({address}), which sandboxes may not reach.\n")
        return name, addresses, req.port

    async def _connect(self, addresses: Sequence[str], port: int,
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        last = ""
        for address in addresses:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=_CHUNK),
                    self._proxy.cfg.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                last = f"{address}: {exc or type(exc).__name__}"
                continue
            return r, w, address
        raise _Refused("error", 502, "Bad Gateway",
                       f"egress failed: cannot connect to port {port} ({last}).\n")

    async def _client_hello(self, reader: asyncio.StreamReader, name: str) -> bytes:
        try:
            hello = await read_client_hello(reader, self._proxy.cfg.connect_timeout_s)
            sni = parse_sni(hello)
        except ClientClosed as exc:
            raise _Refused("error", 0, "", f"tunnel to {name}: {exc}") from None
        except (NotClientHello, TimeoutError) as exc:
            # The tunnel is already up: no HTTP answer can be given, only a close.
            raise _Refused("denied", 0, "", f"tunnel to {name} refused: the first bytes "
                           f"are not a TLS ClientHello ({exc or 'timeout'})") from None
        if sni != name:
            raise _Refused("denied", 0, "", f"tunnel to {name} refused: its TLS ClientHello "
                           f"names {sni or 'no server'} (SNI must match the CONNECT host)")
        return hello

    async def _relay(self, conn: _Conn, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                     upstream: asyncio.StreamWriter) -> str:
        """Copy both ways until either side closes, the sandbox crosses max_bytes, or no
        byte moved for idle_timeout_s; returns why it ended."""
        cfg = self._proxy.cfg
        ended = ""

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, out: bool) -> None:
            nonlocal ended
            while True:
                try:
                    data = await asyncio.wait_for(src.read(_CHUNK), cfg.idle_timeout_s)
                except TimeoutError:
                    if time.monotonic() - conn.last < cfg.idle_timeout_s:
                        continue
                    ended = ended or "idle timeout"
                    return
                if not data:
                    if dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                conn.last = time.monotonic()
                left = cfg.max_bytes - self.bytes
                over = len(data) > left
                if over:  # relay up to the cap exactly, then cut
                    data = data[:max(left, 0)]
                if out:
                    conn.sent += len(data)
                else:
                    conn.received += len(data)
                self.bytes += len(data)
                if data:
                    dst.write(data)
                    await dst.drain()
                if over:
                    ended = ended or f"over the sandbox's egress cap of {cfg.max_bytes} bytes"
                    return

        up = asyncio.ensure_future(pump(reader, upstream, True))
        down = asyncio.ensure_future(pump(up_reader, writer, False))
        try:
            # The sandbox half-closing its side is normal (a request sent); the relay ends
            # when the upstream is done, or on a cap or error either way.
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and up.exception() is None and not ended:
                await down
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        return ended


class EgressProxy:
    """Owned by the application: ``start()`` at start-up, ``aclose()`` at shutdown (after
    the sandboxes). ``attach`` gives a sandbox its own socket with its allow-list."""

    def __init__(self, cfg: EgressConfig, observer: EgressObserver | None = None) -> None:
        if cfg.resolve is not None and not cfg.allow_private_for_tests:
            raise ValueError("[sandbox.egress] resolve is for tests only; it needs "
                             "allow_private_for_tests = true")
        self.cfg = cfg
        self.observer: EgressObserver = observer or NullEgressObserver()
        self.cap: tuple[HostPattern, ...] | None = None
        if cfg.allow_cap is not None:
            self.cap = tuple(self._parse_all(cfg.allow_cap, "sandbox.egress.allow_cap"))
        self.default_allow = tuple(self._parse_all(cfg.default_allow,
                                                   "sandbox.egress.default_allow"))
        self._sandboxes: dict[str, SandboxEgress] = {}
        self._started = False
        # (address, port) of the gateway's own API, reached as http://GATEWAY_HOST/ from
        # every sandbox with egress; None: not routed.
        self.gateway: tuple[str, int] | None = None

    @staticmethod
    def _parse_all(entries: Sequence[str], param: str) -> list[HostPattern]:
        out: list[HostPattern] = []
        for i, entry in enumerate(entries):
            pattern = parse_pattern(entry) if isinstance(entry, str) else None
            if pattern is None:
                raise InvalidRequest(
                    f"{param}[{i}] = {entry!r} is not a host name or a '*.' wildcard "
                    "(e.g. 'pypi.org', '*.githubusercontent.com').", param=f"{param}[{i}]",
                    code="invalid_egress_host")
            if pattern not in out:
                out.append(pattern)
        return out

    async def start(self) -> None:
        self._started = True
        log.info("egress_proxy_started", default_allow=[str(p) for p in self.default_allow],
                 allow_cap=None if self.cap is None else [str(p) for p in self.cap],
                 max_connections=self.cfg.max_connections, max_bytes=self.cfg.max_bytes)

    async def aclose(self) -> None:
        self._started = False
        await asyncio.gather(*(s.aclose() for s in list(self._sandboxes.values())),
                             return_exceptions=True)

    def check_allow(self, entries: Sequence[str] | None,
                    param: str = "network.allow") -> tuple[HostPattern, ...]:
        """A create's allow-list (None: the config's default), parsed and within the cap;
        a bad entry is a 400 and one beyond the cap a 403, each naming ``param[i]``."""
        if entries is None:
            return self.default_allow
        if len(entries) > self.cfg.max_allow_entries:
            raise InvalidRequest(f"{param} has {len(entries)} entries; this gateway takes at "
                                 f"most {self.cfg.max_allow_entries}.", param=param)
        patterns = self._parse_all(entries, param)
        if self.cap is not None:
            for i, pattern in enumerate(patterns):
                if str(pattern) == GATEWAY_HOST and self.gateway is not None:
                    continue  # the gateway itself, not a host on the internet
                if not within_any(pattern, self.cap):
                    raise PermissionDenied(
                        f"{param}[{i}] = {str(pattern)!r} is beyond what this gateway lets a "
                        f"sandbox reach (allow_cap: {', '.join(str(c) for c in self.cap)}).",
                        param=f"{param}[{i}]", code="egress_not_permitted")
        return tuple(patterns)

    async def attach(self, sandbox_id: str, allow: tuple[HostPattern, ...], path: Path,
                     uid: int | None = None) -> SandboxEgress:
        """Listen for ``sandbox_id`` at ``path``; close the returned object to detach."""
        if not self._started:
            raise RuntimeError("the egress proxy is not running")
        old = self._sandboxes.pop(sandbox_id, None)
        if old is not None:
            await old.aclose()
        egress = SandboxEgress(self, sandbox_id, allow)
        await egress.listen(path, uid)
        self._sandboxes[sandbox_id] = egress
        log.info("sandbox_egress_attached", sandbox=sandbox_id, allow=egress.allow_list)
        return egress

    def _forget(self, egress: SandboxEgress) -> None:
        if self._sandboxes.get(egress.sandbox_id) is egress:
            del self._sandboxes[egress.sandbox_id]

    async def resolve(self, name: str, port: int) -> list[str]:
        """The addresses ``name`` resolves to (the test override first), deduplicated."""
        if self.cfg.resolve is not None and name in self.cfg.resolve:
            return [self.cfg.resolve[name]]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, port, type=socket.SOCK_STREAM),
                self.cfg.connect_timeout_s)
        except (OSError, TimeoutError):
            return []
        out: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in out:
                out.append(address)
        return out

    def describe(self) -> dict[str, object]:
        return {"enabled": True, "sandboxes": len(self._sandboxes),
                "default_allow": [str(p) for p in self.default_allow],
                "allow_cap": None if self.cap is None else [str(p) for p in self.cap],
                "max_connections": self.cfg.max_connections, "max_bytes": self.cfg.max_bytes}
