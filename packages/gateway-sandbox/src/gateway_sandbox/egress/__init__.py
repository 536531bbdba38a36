"""Egress for sandboxes: an HTTP/CONNECT proxy the gateway runs, one Unix socket per
sandbox, domain allow-lists, address checks, SNI checks, caps, logs and counts."""

from gateway_sandbox.egress.addresses import forbidden_reason
from gateway_sandbox.egress.proxy import (
    GATEWAY_HOST,
    Decision,
    EgressObserver,
    EgressProxy,
    NullEgressObserver,
    SandboxEgress,
)
from gateway_sandbox.egress.tls import NotClientHello, parse_sni

__all__ = [
    "GATEWAY_HOST",
    "Decision",
    "EgressObserver",
    "EgressProxy",
    "NotClientHello",
    "NullEgressObserver",
    "SandboxEgress",
    "forbidden_reason",
    "parse_sni",
]
