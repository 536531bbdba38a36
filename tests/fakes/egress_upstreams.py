"""Small loopback servers for the egress tests: two HTTP servers (one per test host name),
an HTTPS one with a self-signed certificate for both names, and a tiny package index
(PEP 503 simple pages and one wheel) on the HTTP one."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import io
import ssl
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ALLOWED", "DENIED", "Upstreams", "make_wheel", "self_signed", "upstreams"]

ALLOWED = "allowed.test"
DENIED = "denied.test"
BIG_BYTES = 64 * 1024


def make_wheel(name: str = "tinypkg", version: str = "0.1") -> tuple[str, bytes]:
    """A minimal pure-Python wheel (PEP 427): one module, METADATA, WHEEL, RECORD."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            .encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


def self_signed(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate (it is its own CA) for ``names``: (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "egress-test"
    label = "?"
    wheel: tuple[str, bytes] = ("", b"")

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        name, data = self.wheel
        if self.path == "/big":
            self._send(200, b"x" * BIG_BYTES)
        elif self.path.rstrip("/") == "/simple":
            self._send(200, b'<html><body><a href="/simple/tinypkg/">tinypkg</a></body></html>',
                       "text/html")
        elif self.path.rstrip("/") == "/simple/tinypkg":
            digest = hashlib.sha256(data).hexdigest()
            self._send(200, f'<html><body><a href="/files/{name}#sha256={digest}">{name}</a>'
                            "</body></html>".encode(), "text/html")
        elif self.path == f"/files/{name}":
            self._send(200, data, "application/octet-stream")
        else:
            host = self.headers.get("Host", "")
            self._send(200, f"hello from {self.label} (Host: {host}, path {self.path})"
                       .encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._send(200, b"posted " + self.rfile.read(length))


class Upstreams:
    def __init__(self, http_allowed: int, http_denied: int, https: int, ca: Path) -> None:
        self.http_allowed = http_allowed
        self.http_denied = http_denied
        self.https = https
        self.ca = ca


@contextmanager
def upstreams(directory: Path) -> Iterator[Upstreams]:
    """Start the three servers on free loopback ports (threads); stop them at exit."""
    wheel = make_wheel()
    servers: list[http.server.ThreadingHTTPServer] = []
    for label in ("allowed", "denied", "tls"):
        handler = type(f"Handler_{label}", (_Handler,), {"label": label, "wheel": wheel})
        servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))
    cert, key = self_signed(directory, [ALLOWED, DENIED])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls = servers[2]
    # The handshake happens in the handler thread, not in the accept loop.
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True,
                                 do_handshake_on_connect=False)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield Upstreams(servers[0].server_address[1], servers[1].server_address[1],
                        servers[2].server_address[1], cert)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(10)
