"""The proxy's view of an HTTP request head: CONNECT ``host:port`` or an absolute-form
``GET http://host[:port]/path`` (RFC 9112 section 3.2), and the head it sends upstream."""

from __future__ import annotations

import urllib.parse

__all__ = ["BadRequest", "ProxyRequest", "parse_head", "response"]

# Hop-by-hop and proxy-only headers never go upstream (RFC 9110 section 7.6.1).
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                  "proxy-authenticate", "te", "trailer", "upgrade"})


class BadRequest(ValueError):
    """A head the proxy cannot serve; the message is the 400's body."""


class ProxyRequest:
    """``method`` and ``host``/``port`` to reach; for a forward request also the origin-form
    target and the headers (hop-by-hop ones dropped)."""

    def __init__(self, method: str, host: str, port: int, target: str, version: str,
                 headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.host = host
        self.port = port
        self.target = target
        self.version = version
        self.headers = headers

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"

    def upstream_head(self) -> bytes:
        """The request as the origin server gets it: origin-form target, ``Host`` from the
        URL that was checked (a different Host header would reach another site on a shared
        address: domain fronting), one request per connection (``Connection: close``)."""
        lines = [f"{self.method} {self.target} {self.version}",
                 f"Host: {self.host}" + ("" if self.port == 80 else f":{self.port}")]
        for name, value in self.headers:
            lower = name.lower()
            if lower in _HOP or lower == "host":
                continue
            lines.append(f"{name}: {value}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadRequest(f"bad port {text!r}")
    return int(text)


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a request head (up to and including the blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest("undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0][:200]!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:200]!r}")
        headers.append((name, value.strip()))
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not host:
            raise BadRequest(f"CONNECT needs host:port, got {target[:200]!r}")
        return ProxyRequest(method, host.strip("[]"), _port(port), target, version, headers)
    url = urllib.parse.urlsplit(target)
    if url.scheme == "https":
        raise BadRequest("https:// URLs go through CONNECT (set HTTPS_PROXY), not a forward "
                         "request")
    if url.scheme != "http" or not url.netloc:
        raise BadRequest(f"a forward proxy request needs an absolute http:// URL, got "
                         f"{target[:200]!r}")
    if "@" in url.netloc:
        raise BadRequest("credentials in the URL are not forwarded")
    try:
        url_port = url.port or 80
    except ValueError:
        raise BadRequest(f"bad port in {url.netloc[:200]!r}") from None
    origin = url.path or "/"
    if url.query:
        origin += "?" + url.query
    return ProxyRequest(method, url.hostname or "", url_port, origin, version, headers)


def response(status: int, reason: str, body: str) -> bytes:
    """A complete, closing response with a plain-text body (what the code inside reads)."""
    data = body.encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
            "X-Gateway-Egress: refused\r\n\r\n").encode() + data
