"""What a sandbox needs from the gateway that made it: its limits, input checks, runtimes
and the observer. The manager builds one and hands it to every Sandbox (no back-reference)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway_core.config.sandbox import SandboxConfig, SandboxLimits
from gateway_core.errors import InvalidRequest, PayloadTooLarge
from gateway_core.sandbox_types import Resources
from gateway_sandbox.observer import NullObserver, SandboxObserver
from gateway_sandbox.runtimes import RUNTIMES, Runtime

__all__ = ["SandboxPolicy"]


class SandboxPolicy:
    def __init__(self, cfg: SandboxConfig, observer: SandboxObserver | None = None) -> None:
        self.cfg = cfg
        self.limits: SandboxLimits = cfg.limits
        self.idle_ttl_s = cfg.idle_ttl_s
        self.max_lifetime_s = cfg.max_lifetime_s
        self.max_paused_s = cfg.max_paused_s
        self.observer: SandboxObserver = observer or NullObserver()
        # Runtime name -> None when usable, else why not (filled when the backend starts).
        self.runtimes: dict[str, str | None] = {}
        # The same per template other than the default (filled when it is first used).
        self.template_runtimes: dict[str, dict[str, str | None]] = {}

    def resolve_runtime(self, name: str, param: str = "runtime",
                        template: str = "default") -> Runtime:
        rt = RUNTIMES.get(name)
        if rt is None:
            raise InvalidRequest(f"Unknown {param} {name!r}; expected one of "
                                 f"{', '.join(sorted(RUNTIMES))}.", param=param)
        if template != "default":
            offered = self.template_runtimes.get(template, {})
            if name not in offered:
                have = ", ".join(n for n, why in offered.items() if why is None) or "none"
                raise InvalidRequest(f"Template {template!r} does not offer {param} {name!r}; "
                                     f"it offers: {have}.", param=param,
                                     code="runtime_unavailable")
            why = offered[name]
        else:
            why = self.runtimes.get(name)
        if why is not None:
            raise InvalidRequest(f"{param.capitalize()} {name!r} is not available on this "
                                 f"gateway: {why}.", param=param, code="runtime_unavailable")
        return rt

    def check_code(self, code: str, param: str = "code") -> None:
        if not code.strip():
            raise InvalidRequest(f"{param} must not be empty.", param=param)
        if "\0" in code:
            raise InvalidRequest(f"{param} must not contain NUL bytes.", param=param)
        if len(code.encode()) > self.limits.max_code_bytes:
            raise PayloadTooLarge(f"{param} is over {self.limits.max_code_bytes} bytes.",
                                  param=param)

    def check_exec_timeout(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            return self.limits.default_exec_timeout_s
        if not 0 < timeout_s <= self.limits.max_exec_timeout_s:
            raise InvalidRequest(f"timeout_s must be > 0 and <= "
                                 f"{self.limits.max_exec_timeout_s}.", param="timeout_s")
        return float(timeout_s)

    def check_lifetime(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            return self.max_lifetime_s
        if not 0 < timeout_s <= self.max_lifetime_s:
            raise InvalidRequest(f"timeout_s must be > 0 and <= {self.max_lifetime_s}.",
                                 param="timeout_s")
        return float(timeout_s)

    def check_stdin(self, stdin: str | None) -> None:
        if stdin is not None and len(stdin.encode()) > self.limits.max_upload_bytes:
            raise PayloadTooLarge(f"stdin is over {self.limits.max_upload_bytes} bytes.",
                                  param="stdin")

    def check_env(self, env: Mapping[str, str] | None) -> None:
        for key, value in (env or {}).items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise InvalidRequest(f"env has an invalid variable name or value: {key!r}.",
                                     param="env")

    def default_resources(self) -> Resources:
        return Resources(cpus=float(self.cfg.vcpus), memory_mb=self.limits.memory_mb,
                         disk_mb=self.limits.disk_mb)

    def check_resources(self, cpus: float | None, memory_mb: int | None,
                        disk_mb: int | None) -> Resources:
        d = self.default_resources()
        lim = self.limits
        for name, value, cap in (("cpus", cpus, lim.max_cpus),
                                 ("memory_mb", memory_mb, lim.max_memory_mb),
                                 ("disk_mb", disk_mb, lim.max_disk_mb)):
            if value is not None and not 0 < value <= cap:
                raise InvalidRequest(f"{name} must be > 0 and <= {cap} (this gateway's cap).",
                                     param=name)
        return Resources(cpus=float(cpus) if cpus is not None else d.cpus,
                         memory_mb=memory_mb or d.memory_mb, disk_mb=disk_mb or d.disk_mb)

    def exec_rlimits(self, resources: Resources | None = None) -> dict[str, int]:
        """Limits the agent applies to every execution, whatever the backend (the process
        backend also sets them on the whole jail; a VM's agent runs without them otherwise)."""
        lim = self.limits
        memory = resources.memory_mb if resources is not None else lim.memory_mb
        return {"cpu": lim.cpu_time_s, "nproc": lim.max_processes,
                "fsize": lim.max_file_mb * 1024 * 1024, "data": memory * 1024 * 1024}
