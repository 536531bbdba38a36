"""`python bench/sandbox_firecracker.py`: the Firecracker driver's own figures against the real
binary — spawn to API socket, configuration PUTs, InstanceStart, pause, Full snapshot, and
restore into a new process — which hold even where no guest can boot (a PVM host)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, Table, percentile, warn_if_busy, write_results
from gateway_sandbox.backends.firecracker.api import (
    BootSource,
    Drive,
    MachineConfig,
    Vsock,
)
from gateway_sandbox.backends.firecracker.backend import BOOT_ARGS
from gateway_sandbox.backends.firecracker.vm import FirecrackerVM
from gateway_sandbox.image import find_image


def _ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {Figure(ms).median:.1f} ms, p99 {percentile(ms, 99):.1f} ms (n={len(ms)})"


async def run(binary: str, runs: int, memory_mib: int, snapshots: int) -> int:
    image = find_image()
    if image is None:
        print("no guest image: run `python -m gateway_sandbox.image build` first",
              file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="fcb", dir="/tmp"))  # short: socket paths < 108 bytes
    figures: dict[str, list[float]] = {k: [] for k in (
        "spawn", "configure", "instance_start", "pause", "snapshot_create", "restore")}
    snap, mem = base / "vm.snap", base / "vm.mem"
    try:
        for i in range(runs):
            vm = FirecrackerVM(binary, base / f"b{i}")
            try:
                t0 = time.perf_counter()
                api = await vm.spawn(vm_id=f"b{i}")
                t1 = time.perf_counter()
                await vm.configure_logs()
                await api.boot_source(BootSource(kernel_image_path=str(image.kernel),
                                                 boot_args=BOOT_ARGS))
                await api.drive(Drive(drive_id="rootfs", path_on_host=str(image.rootfs),
                                      is_root_device=True, is_read_only=True))
                await api.machine_config(MachineConfig(vcpu_count=1, mem_size_mib=memory_mib))
                await api.vsock(Vsock(guest_cid=3, uds_path="v.sock"))
                t2 = time.perf_counter()
                await api.instance_start()
                t3 = time.perf_counter()
                figures["spawn"].append(t1 - t0)
                figures["configure"].append(t2 - t1)
                figures["instance_start"].append(t3 - t2)
                if i < snapshots:
                    await asyncio.sleep(0.2)  # let the guest get going (it may not get far)
                    t4 = time.perf_counter()
                    await api.pause()
                    t5 = time.perf_counter()
                    if snap.exists():
                        snap.unlink()
                        mem.unlink()
                    await api.snapshot_create(str(snap), str(mem))
                    figures["pause"].append(t5 - t4)
                    figures["snapshot_create"].append(time.perf_counter() - t5)
            finally:
                await vm.stop()
        for i in range(runs):
            vm = FirecrackerVM(binary, base / f"r{i}")
            try:
                t0 = time.perf_counter()
                api = await vm.spawn(vm_id=f"r{i}")
                await vm.configure_logs()
                await api.snapshot_load(str(snap), str(mem), resume=True)
                figures["restore"].append(time.perf_counter() - t0)
            finally:
                await vm.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table = Table(f"Firecracker driver, {memory_mib} MiB 1 vCPU guest, {runs} runs")
    table.add("spawn -> API socket accepts", "", _ms(figures["spawn"]))
    table.add("logger+metrics+boot-source+drive+machine-config+vsock PUTs", "",
              _ms(figures["configure"]))
    table.add("InstanceStart", "", _ms(figures["instance_start"]))
    table.add("pause", "", _ms(figures["pause"]))
    table.add(f"snapshot create (Full, {memory_mib} MiB)", "", _ms(figures["snapshot_create"]))
    table.add("restore: spawn -> snapshot loaded and resumed", "tens of ms",
              _ms(figures["restore"]))
    print()
    print(table.render())
    path = write_results("sandbox-firecracker", {"binary": binary, "memory_mib": memory_mib,
                                                 "seconds": figures}, table)
    print(f"\nwritten to {path}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--firecracker", default=os.environ.get("FIRECRACKER_BIN"),
                   help="the Firecracker binary (default $FIRECRACKER_BIN)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--memory-mib", type=int, default=256)
    p.add_argument("--snapshots", type=int, default=5, help="how many snapshots to time")
    a = p.parse_args()
    if not a.firecracker or not os.access(a.firecracker, os.X_OK):
        sys.exit("set --firecracker or FIRECRACKER_BIN to the Firecracker binary")
    warn_if_busy()
    sys.exit(asyncio.run(run(a.firecracker, max(1, a.runs), a.memory_mib,
                             max(1, a.snapshots))))


if __name__ == "__main__":
    main()
