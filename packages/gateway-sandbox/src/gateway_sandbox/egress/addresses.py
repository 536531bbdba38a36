"""Which resolved addresses the egress proxy may connect to: public unicast only, never
private, loopback, link-local, multicast, unspecified or otherwise reserved space."""

from __future__ import annotations

import ipaddress

__all__ = ["forbidden_reason"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden_reason(address: str | IPAddress) -> str | None:
    """None when ``address`` is a public unicast address, else what it is ("loopback",
    "private", ...). An IPv4-mapped or 6to4/Teredo-wrapped IPv6 address is judged by the
    IPv4 address inside it. Text that is not an IP address is "invalid"."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return forbidden_reason(inner)
    # Order matters: 127/8 is also "private" in Python's table; name the narrower kind.
    for reason, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                         ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                         ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return reason
    if not ip.is_global:
        # Shared address space (100.64/10) and the like: not reachable on the internet.
        return "non-global"
    return None
