"""The server name a TLS ClientHello asks for (its SNI extension), read from the first
bytes a client sends in a CONNECT tunnel; the proxy never terminates TLS.
(RFC 8446 section 4.1.2, RFC 6066 section 3.)"""

from __future__ import annotations

import asyncio

__all__ = ["MAX_HELLO_BYTES", "ClientClosed", "NotClientHello", "parse_sni", "read_client_hello"]

#: A ClientHello larger than this (over several records) is refused.
MAX_HELLO_BYTES = 64 * 1024
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0


class NotClientHello(ValueError):
    """The bytes are not (the start of) a TLS ClientHello, or it is malformed."""


class ClientClosed(NotClientHello):
    """The client closed the tunnel before sending a whole ClientHello."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NotClientHello("truncated ClientHello")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))


def _handshake_bytes(data: bytes) -> tuple[bytes, int | None]:
    """The handshake layer carried by the TLS records at the start of ``data``, and the
    ClientHello's full length once its header is in (None before)."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        ctype, major = data[pos], data[pos + 1]
        if ctype != _HANDSHAKE or major != 3:
            raise NotClientHello("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise NotClientHello("bad TLS record length")
        out += data[pos + 5:pos + 5 + length]
        if pos + 5 + length > len(data):
            break
        pos += 5 + length
    if len(out) >= 4:
        if out[0] != _CLIENT_HELLO:
            raise NotClientHello("the first handshake message is not a ClientHello")
        return bytes(out), 4 + int.from_bytes(out[1:4], "big")
    return bytes(out), None


def parse_sni(data: bytes) -> str | None:
    """The host name in the ClientHello at the start of ``data`` (lower-cased), or None
    when it carries no server_name. Raises NotClientHello when ``data`` is not a whole
    ClientHello."""
    hs, total = _handshake_bytes(data)
    if total is None or len(hs) < total:
        raise NotClientHello("truncated ClientHello")
    c = _Cursor(hs[4:total])
    c.take(2 + 32)  # legacy_version, random
    c.vector(1)  # legacy_session_id
    c.vector(2)  # cipher_suites
    c.vector(1)  # legacy_compression_methods
    if c.pos == len(c.data):
        return None  # no extensions at all
    ext = _Cursor(c.vector(2))
    while ext.pos < len(ext.data):
        etype = ext.uint(2)
        body = ext.vector(2)
        if etype != _SERVER_NAME:
            continue
        names = _Cursor(_Cursor(body).vector(2))
        while names.pos < len(names.data):
            kind = names.uint(1)
            name = names.vector(2)
            if kind == _HOST_NAME:
                try:
                    return name.decode("ascii").lower().rstrip(".")
                except UnicodeDecodeError:
                    raise NotClientHello("server_name is not ASCII") from None
        return None
    return None


async def read_client_hello(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Read from ``reader`` until it holds one whole ClientHello (bounded in size and time);
    returns every byte read, to forward unchanged. Raises NotClientHello or TimeoutError."""
    buf = bytearray()
    async with asyncio.timeout(timeout_s):
        while True:
            chunk = await reader.read(MAX_HELLO_BYTES)
            if not chunk:
                raise ClientClosed("the client closed the tunnel before a ClientHello")
            buf += chunk
            hs, total = _handshake_bytes(bytes(buf))
            if total is not None and len(hs) >= total:
                return bytes(buf)
            if len(buf) > MAX_HELLO_BYTES:
                raise NotClientHello(f"ClientHello over {MAX_HELLO_BYTES} bytes")
