"""Egress allow-list entries: a host name (``pypi.org``) or a ``*.`` wildcard
(``*.githubusercontent.com``); how a host matches one, and whether one entry lies within
another (the config's cap). Pure functions, shared by the config check and the proxy."""

from __future__ import annotations

import re

__all__ = ["HostPattern", "matches_any", "normalize_host", "parse_pattern", "within_any"]

# RFC 1123 labels (letters, digits, inner hyphens; underscores are seen in the wild, e.g.
# `_dmarc`, but never in the names HTTP clients connect to), at most 63 each.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_host(host: str) -> str | None:
    """``host`` lower-cased without a trailing dot, or None when it is not a DNS host name
    (an IP literal, an empty label, a character outside letters, digits and hyphens). A
    name must have a dot or be a single label; an all-digit last label (an IPv4 address
    in disguise) is refused."""
    h = host.lower()
    if h.endswith("."):
        h = h[:-1]
    if not h or len(h) > 253:
        return None
    labels = h.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None
    return h


class HostPattern:
    """One allow-list entry: an exact name, or ``*.suffix`` (any name below ``suffix``,
    not ``suffix`` itself)."""

    __slots__ = ("name", "wildcard")

    def __init__(self, name: str, wildcard: bool) -> None:
        self.name = name
        self.wildcard = wildcard

    def __str__(self) -> str:
        return f"*.{self.name}" if self.wildcard else self.name

    def __repr__(self) -> str:
        return f"HostPattern({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostPattern) and (self.name, self.wildcard) == \
            (other.name, other.wildcard)

    def __hash__(self) -> int:
        return hash((self.name, self.wildcard))

    def matches(self, host: str) -> bool:
        """Whether the normalized ``host`` is this entry's name or (wildcard) below it."""
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name

    def within(self, cap: HostPattern) -> bool:
        """Whether every host this entry matches is matched by ``cap``."""
        if not cap.wildcard:
            return not self.wildcard and self.name == cap.name
        # `*.a.example.com` and `a.example.com` lie within `*.example.com`.
        return self.name.endswith("." + cap.name)


def parse_pattern(entry: str) -> HostPattern | None:
    """The entry as a pattern, or None when it is neither a host name nor ``*.`` followed
    by one (``*`` alone, ``a.*.b``, ``*a.b``, URLs and IP addresses are refused)."""
    if entry.startswith("*."):
        name = normalize_host(entry[2:])
        return None if name is None else HostPattern(name, True)
    name = normalize_host(entry)
    return None if name is None else HostPattern(name, False)


def matches_any(host: str, patterns: list[HostPattern] | tuple[HostPattern, ...]) -> bool:
    return any(p.matches(host) for p in patterns)


def within_any(pattern: HostPattern, caps: list[HostPattern] | tuple[HostPattern, ...]) -> bool:
    return any(pattern.within(c) for c in caps)
