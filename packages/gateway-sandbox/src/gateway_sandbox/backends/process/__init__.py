"""The process backend: ``backend`` (bubblewrap jails running the guest agent) and
``cgroups`` (their resource limits and freezer)."""

from gateway_sandbox.backends.process.backend import ProcessBackend, ProcessGuest

__all__ = ["ProcessBackend", "ProcessGuest"]
