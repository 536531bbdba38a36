"""The hook through which an application measures sandboxes (the library has no metrics of
its own); the server implements it with Prometheus."""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["NullObserver", "Outcome", "SandboxObserver", "StartKind"]

StartKind = Literal["warm", "cold"]
#: ok (exit 0), error (non-zero exit), timeout, cancelled, failed (the guest died or failed).
Outcome = Literal["ok", "error", "timeout", "cancelled", "failed"]


class SandboxObserver(Protocol):
    def on_start(self, backend: str, kind: str, seconds: float) -> None:
        """A sandbox was handed out: ``kind`` is "warm" (from the pool) or "cold"."""
        ...

    def on_execute(self, runtime: str, outcome: str, seconds: float) -> None:
        """An execution ended with ``outcome`` (see :data:`Outcome`)."""
        ...


class NullObserver:
    def on_start(self, backend: str, kind: str, seconds: float) -> None:
        return None

    def on_execute(self, runtime: str, outcome: str, seconds: float) -> None:
        return None
