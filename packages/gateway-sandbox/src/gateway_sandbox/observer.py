"""The hook through which an application measures sandboxes (the library has no metrics or
traces of its own); the server implements it with Prometheus and OpenTelemetry."""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["Lifecycle", "NullObserver", "Outcome", "SandboxObserver", "StartKind"]

StartKind = Literal["warm", "cold"]
#: ok (exit 0), error (non-zero exit), timeout, cancelled, failed (the guest died or failed).
Outcome = Literal["ok", "error", "timeout", "cancelled", "failed"]
Lifecycle = Literal["pause", "resume"]


class SandboxObserver(Protocol):
    def on_start(self, backend: str, kind: str, seconds: float, *, sandbox_id: str,
                 runtime: str) -> None:
        """A sandbox was handed out: ``kind`` is "warm" (from the pool) or "cold"."""
        ...

    def on_execute(self, runtime: str, outcome: str, seconds: float, *, sandbox_id: str,
                   exit_code: int | None, timed_out: bool) -> None:
        """An execution ended with ``outcome`` (see :data:`Outcome`); ``runtime`` is
        "command" for a foreground shell command. ``exit_code`` is None when it did not
        finish (cancelled, failed)."""
        ...

    def on_lifecycle(self, action: str, outcome: str, seconds: float, *,
                     sandbox_id: str) -> None:
        """A pause or resume (see :data:`Lifecycle`) ended: ``outcome`` "ok" or the
        error's type name."""
        ...


class NullObserver:
    def on_start(self, backend: str, kind: str, seconds: float, *, sandbox_id: str,
                 runtime: str) -> None:
        return None

    def on_execute(self, runtime: str, outcome: str, seconds: float, *, sandbox_id: str,
                   exit_code: int | None, timed_out: bool) -> None:
        return None

    def on_lifecycle(self, action: str, outcome: str, seconds: float, *,
                     sandbox_id: str) -> None:
        return None
