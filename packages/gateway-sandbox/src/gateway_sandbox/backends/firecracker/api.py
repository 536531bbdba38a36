"""Firecracker's REST API over its Unix socket (aiohttp ``UnixConnector``), the calls of
the v1.7 to v1.14 API spec this backend uses; every error carries Firecracker's
``fault_message``."""

from __future__ import annotations

from typing import Literal

import aiohttp
import msgspec

from gateway_sandbox.errors import BackendUnavailable

__all__ = [
    "Action",
    "BootSource",
    "Drive",
    "Entropy",
    "FirecrackerApi",
    "FirecrackerApiError",
    "InstanceInfo",
    "Logger",
    "MachineConfig",
    "MemBackend",
    "Metrics",
    "NetworkInterface",
    "NetworkOverride",
    "SnapshotCreate",
    "SnapshotLoad",
    "VmConfig",
    "VmState",
    "Vsock",
]

# The host part is ignored on a Unix socket; Firecracker only looks at the path.
_BASE = "http://localhost"


class BootSource(msgspec.Struct, kw_only=True, omit_defaults=True):
    kernel_image_path: str
    boot_args: str | None = None
    initrd_path: str | None = None


class Drive(msgspec.Struct, kw_only=True, omit_defaults=True):
    drive_id: str
    path_on_host: str
    is_root_device: bool
    is_read_only: bool = False


class MachineConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    vcpu_count: int
    mem_size_mib: int
    smt: bool = False


class Vsock(msgspec.Struct, kw_only=True, omit_defaults=True):
    guest_cid: int
    # Relative to the Firecracker process's working directory: a snapshot bakes this path
    # in, so clones started in their own directories each get their own socket.
    uds_path: str


class NetworkInterface(msgspec.Struct, kw_only=True, omit_defaults=True):
    iface_id: str
    host_dev_name: str
    guest_mac: str | None = None


class Logger(msgspec.Struct, kw_only=True, omit_defaults=True):
    log_path: str
    level: str = "Info"
    show_level: bool = True
    show_log_origin: bool = False


class Metrics(msgspec.Struct, kw_only=True):
    metrics_path: str


class Entropy(msgspec.Struct, kw_only=True):
    """The virtio-rng device: the guest's kernel pulls fresh host randomness through it."""


class Action(msgspec.Struct, kw_only=True):
    action_type: Literal["InstanceStart", "FlushMetrics", "SendCtrlAltDel"]


class VmState(msgspec.Struct, kw_only=True):
    state: Literal["Paused", "Resumed"]


class SnapshotCreate(msgspec.Struct, kw_only=True):
    snapshot_path: str
    mem_file_path: str
    snapshot_type: Literal["Full", "Diff"] = "Full"


class MemBackend(msgspec.Struct, kw_only=True):
    backend_path: str
    backend_type: Literal["File", "Uffd"] = "File"


class NetworkOverride(msgspec.Struct, kw_only=True):
    """A restored VM's interface on another tap than the one its snapshot names."""

    iface_id: str
    host_dev_name: str


class SnapshotLoad(msgspec.Struct, kw_only=True, omit_defaults=True):
    snapshot_path: str
    mem_backend: MemBackend
    resume_vm: bool = False
    # Left out when empty: releases before the field existed refuse unknown fields.
    network_overrides: list[NetworkOverride] = msgspec.field(default_factory=list)


class InstanceInfo(msgspec.Struct, kw_only=True):
    """``GET /``: the VM's id and state (``Not started``, ``Running``, ``Paused``)."""

    id: str
    state: str
    vmm_version: str = ""
    app_name: str = ""


class VmConfig(msgspec.Struct, kw_only=True):
    """``GET /vm/config``: what Firecracker holds (unknown fields tolerated across versions)."""

    boot_source: BootSource | None = msgspec.field(name="boot-source", default=None)
    drives: list[Drive] = msgspec.field(default_factory=list)
    machine_config: MachineConfig | None = msgspec.field(name="machine-config", default=None)
    network_interfaces: list[NetworkInterface] = msgspec.field(name="network-interfaces",
                                                                default_factory=list)
    vsock: Vsock | None = None


class _Fault(msgspec.Struct):
    fault_message: str = ""


_encoder = msgspec.json.Encoder()
_fault = msgspec.json.Decoder(_Fault)
_vm_config = msgspec.json.Decoder(VmConfig)
_instance_info = msgspec.json.Decoder(InstanceInfo)


class FirecrackerApiError(BackendUnavailable):
    """Firecracker refused a call; the message is its ``fault_message``."""

    def __init__(self, method: str, path: str, status: int, fault: str) -> None:
        super().__init__(f"Firecracker {method} {path} failed ({status}): {fault}")
        self.fault_message = fault
        self.http_status = status


class FirecrackerApi:
    """One Firecracker process's API. ``async with FirecrackerApi(sock) as api:``."""

    def __init__(self, socket_path: str, *, timeout_s: float = 10.0) -> None:
        self.socket_path = socket_path
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path),
            timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> FirecrackerApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: msgspec.Struct | None = None) -> bytes:
        data = _encoder.encode(body) if body is not None else None
        try:
            async with self._session.request(
                    method, _BASE + path, data=data,
                    headers={"Content-Type": "application/json",
                             "Accept": "application/json"}) as resp:
                payload = await resp.read()
                if resp.status >= 300:
                    try:
                        fault = _fault.decode(payload).fault_message
                    except msgspec.DecodeError:
                        fault = payload.decode(errors="replace")
                    raise FirecrackerApiError(method, path, resp.status, fault)
                return payload
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"Firecracker API {method} {path} unreachable: {exc!r}") from exc

    async def put(self, path: str, body: msgspec.Struct) -> None:
        await self._call("PUT", path, body)

    async def boot_source(self, cfg: BootSource) -> None:
        await self.put("/boot-source", cfg)

    async def drive(self, cfg: Drive) -> None:
        await self.put(f"/drives/{cfg.drive_id}", cfg)

    async def machine_config(self, cfg: MachineConfig) -> None:
        await self.put("/machine-config", cfg)

    async def vsock(self, cfg: Vsock) -> None:
        await self.put("/vsock", cfg)

    async def network_interface(self, cfg: NetworkInterface) -> None:
        await self.put(f"/network-interfaces/{cfg.iface_id}", cfg)

    async def logger(self, cfg: Logger) -> None:
        await self.put("/logger", cfg)

    async def metrics(self, cfg: Metrics) -> None:
        await self.put("/metrics", cfg)

    async def entropy(self) -> None:
        await self.put("/entropy", Entropy())

    async def instance_start(self) -> None:
        await self.put("/actions", Action(action_type="InstanceStart"))

    async def pause(self) -> None:
        await self._call("PATCH", "/vm", VmState(state="Paused"))

    async def resume(self) -> None:
        await self._call("PATCH", "/vm", VmState(state="Resumed"))

    async def snapshot_create(self, snapshot_path: str, mem_file_path: str) -> None:
        await self.put("/snapshot/create",
                       SnapshotCreate(snapshot_path=snapshot_path, mem_file_path=mem_file_path))

    async def snapshot_load(self, snapshot_path: str, mem_file_path: str, *, resume: bool,
                            network_overrides: list[NetworkOverride] | None = None) -> None:
        await self.put("/snapshot/load", SnapshotLoad(
            snapshot_path=snapshot_path, mem_backend=MemBackend(backend_path=mem_file_path),
            resume_vm=resume, network_overrides=network_overrides or []))

    async def vm_config(self) -> VmConfig:
        return _vm_config.decode(await self._call("GET", "/vm/config"))

    async def instance_info(self) -> InstanceInfo:
        return _instance_info.decode(await self._call("GET", "/"))
