"""The Firecracker backend: ``backend`` (guests, pause/resume, the warm-start snapshot),
``vm`` (one Firecracker process), ``api`` (its REST API), ``vsock`` (reaching the guest agent)
and ``jailer`` (running it chrooted)."""

from gateway_sandbox.backends.firecracker.backend import (
    FirecrackerBackend,
    FirecrackerGuest,
    firecracker_status,
    hardware_kvm,
)

__all__ = ["FirecrackerBackend", "FirecrackerGuest", "firecracker_status", "hardware_kvm"]
