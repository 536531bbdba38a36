"""The egress proxy's pure parts: allow-list entries and matching, the address checks, the
SNI in a real ClientHello (made by the ssl module), request heads, and the config checks."""

from __future__ import annotations

import ssl

import pytest

from gateway_core.config import ConfigError, parse_config
from gateway_core.host_patterns import matches_any, normalize_host, parse_pattern
from gateway_sandbox.egress import NotClientHello, forbidden_reason, parse_sni
from gateway_sandbox.egress.heads import BadRequest, parse_head


def client_hello(server_hostname: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl) for ``server_hostname``."""
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(("entry", "host", "expected"), [
    ("pypi.org", "pypi.org", True),
    ("pypi.org", "PyPI.org.", True),
    ("pypi.org", "evil-pypi.org", False),
    ("pypi.org", "pypi.org.evil.com", False),
    ("pypi.org", "files.pypi.org", False),
    ("*.githubusercontent.com", "raw.githubusercontent.com", True),
    ("*.githubusercontent.com", "a.b.githubusercontent.com", True),
    ("*.githubusercontent.com", "githubusercontent.com", False),
    ("*.githubusercontent.com", "evilgithubusercontent.com", False),
    ("*.test", "allowed.test", True),
])
def test_allow_list_matching(entry: str, host: str, expected: bool) -> None:
    pattern = parse_pattern(entry)
    assert pattern is not None
    name = normalize_host(host)
    assert name is not None
    assert matches_any(name, [pattern]) is expected


@pytest.mark.parametrize("entry", [
    "", "*", "*.", "a.*.b", "*a.b", "**.b", "http://pypi.org", "pypi.org:443", "pypi.org/x",
    "10.0.0.1", "[::1]", "::1", "-bad.org", "bad-.org", "a..b", "has space.org", "é.org",
    "a" * 64 + ".org", "x." * 127 + "org",
])
def test_allow_list_entries_refused(entry: str) -> None:
    assert parse_pattern(entry) is None


def test_pattern_within_a_cap() -> None:
    cap = parse_pattern("*.example.com")
    exact = parse_pattern("pypi.org")
    assert cap is not None and exact is not None
    for inside in ("a.example.com", "*.a.example.com"):
        p = parse_pattern(inside)
        assert p is not None and p.within(cap)
    for outside in ("example.com", "*.example.com.evil", "*.com", "pypi.org"):
        p = parse_pattern(outside)
        assert p is not None and not p.within(cap)
    wild = parse_pattern("*.pypi.org")
    assert wild is not None and not wild.within(exact)
    assert exact.within(exact)


@pytest.mark.parametrize(("address", "reason"), [
    ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("151.101.0.223", None),
    ("127.0.0.1", "loopback"), ("127.8.9.1", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1
    ("100.64.0.1", "non-global"), ("240.0.0.1", "private"), ("not-an-ip", "invalid"),
])
def test_address_checks(address: str, reason: str | None) -> None:
    assert forbidden_reason(address) == reason


def test_sni_from_a_real_client_hello() -> None:
    assert parse_sni(client_hello("allowed.test")) == "allowed.test"
    assert parse_sni(client_hello("Files.PythonHosted.org")) == "files.pythonhosted.org"
    assert parse_sni(client_hello(None)) is None


def test_sni_refuses_what_is_not_a_client_hello() -> None:
    hello = client_hello("allowed.test")
    with pytest.raises(NotClientHello):
        parse_sni(hello[:40])  # truncated
    with pytest.raises(NotClientHello):
        parse_sni(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    with pytest.raises(NotClientHello):
        parse_sni(b"\x17" + hello[1:])  # application data, not a handshake
    # The same hello split over two TLS records still parses.
    body = hello[5:]
    head = hello[:3]
    split = (head + (100).to_bytes(2, "big") + body[:100]
             + head + (len(body) - 100).to_bytes(2, "big") + body[100:])
    assert parse_sni(split) == "allowed.test"


def test_request_heads() -> None:
    req = parse_head(b"GET http://Allowed.test:8080/a/b?c=1 HTTP/1.1\r\nHost: allowed.test:8080"
                     b"\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: x\r\n"
                     b"Accept: */*\r\n\r\n")
    assert (req.method, req.host, req.port, req.target) == ("GET", "allowed.test", 8080,
                                                            "/a/b?c=1")
    up = req.upstream_head().decode()
    assert up.startswith("GET /a/b?c=1 HTTP/1.1\r\n")
    assert "Proxy-" not in up and "Connection: close\r\n" in up and "Accept: */*" in up
    assert up.count("Host:") == 1 and "Host: allowed.test:8080\r\n" in up
    # The Host header follows the URL that was checked, whatever the client said.
    fronted = parse_head(b"GET http://allowed.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert "Host: allowed.test\r\n" in fronted.upstream_head().decode()
    assert "other.test" not in fronted.upstream_head().decode()
    tunnel = parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n")
    assert tunnel.is_connect and (tunnel.host, tunnel.port) == ("pypi.org", 443)
    v6 = parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n")
    assert v6.host == "::1" and normalize_host(v6.host) is None
    for bad in (b"GET / HTTP/1.1\r\n\r\n", b"GET https://a.test/ HTTP/1.1\r\n\r\n",
                b"CONNECT a.test HTTP/1.1\r\n\r\n", b"CONNECT a.test:99999 HTTP/1.1\r\n\r\n",
                b"GET http://u:p@a.test/ HTTP/1.1\r\n\r\n", b"nonsense\r\n\r\n"):
        with pytest.raises(BadRequest):
            parse_head(bad)


def egress(**kw: object) -> dict[str, object]:
    return {"sandbox": {"egress": kw}}


def test_config_checks() -> None:
    cfg = parse_config(egress(default_allow=["pypi.org"], allow_cap=["pypi.org", "*.test"]))
    assert cfg.sandbox.egress.default_allow == ["pypi.org"]
    with pytest.raises(ConfigError, match=r"sandbox\.egress\.default_allow\[1\]"):
        parse_config(egress(default_allow=["pypi.org", "http://x"]))
    with pytest.raises(ConfigError, match=r"sandbox\.egress\.default_allow\[0\].*allow_cap"):
        parse_config(egress(default_allow=["github.com"], allow_cap=["pypi.org"]))
    with pytest.raises(ConfigError, match=r"sandbox\.egress\.resolve.*allow_private_for_tests"):
        parse_config(egress(resolve={"allowed.test": "127.0.0.1"}))
    with pytest.raises(ConfigError, match=r"sandbox\.egress\.resolve\.allowed\.test"):
        parse_config(egress(resolve={"allowed.test": "nowhere"}, allow_private_for_tests=True))
    ok = parse_config(egress(resolve={"allowed.test": "127.0.0.1"},
                             allow_private_for_tests=True))
    assert ok.sandbox.egress.resolve == {"allowed.test": "127.0.0.1"}
    with pytest.raises(ConfigError, match=r"sandbox\.egress\.max_connections"):
        parse_config(egress(max_connections=0))
