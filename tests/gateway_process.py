"""Runs the real CLI (``agentic-gateway serve``: hypercorn serving the app) in a subprocess
on a free loopback port, for end-to-end tests. Stopped with SIGTERM, by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(self, config_toml: str, *, workers: int = 1, env: dict[str, str] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-e2e-"))
        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(config_toml)
        self.log_path = self.dir / "gateway.log"
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        cmd = [sys.executable, "-m", "gateway_server.cli", "serve", "--config",
               str(self.config_path), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the process runs
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.dir)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready within {self.start_timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._log.close()
        return proc.returncode

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
