"""A real PostgreSQL server on a free loopback port in a temporary directory, trust auth
for one user, stopped by pg_ctl and removed. As root (CI) the server runs as the
``postgres`` system user that Debian's package creates: PostgreSQL refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.gateway_process import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = ""
        self.user = "gateway"
        self._run_as: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        return [*self._run_as, *args]

    def start(self) -> PostgresServer:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="gw-pg-")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root without a 'postgres' user to run PostgreSQL")
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._run_as = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}",
                            "--init-groups", "--"]
        data = os.path.join(self.dir, "data")
        subprocess.run(self._cmd(initdb, "-D", data, "-U", self.user, "-A", "trust",
                                 "--no-sync", "-E", "UTF8"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(self._cmd(pg_ctl, "-D", data, "-o", options, "-l",
                                 os.path.join(self.dir, "log"), "-w", "-t", "30", "start"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def halt(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again, same port)."""
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(self._cmd(pg_ctl, "-D", os.path.join(self.dir, "data"), "-m", "fast",
                                 "-w", "stop"), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def resume(self) -> None:
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(self._cmd(pg_ctl, "-D", os.path.join(self.dir, "data"), "-o", options,
                                 "-l", os.path.join(self.dir, "log"), "-w", "-t", "30",
                                 "start"), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def stop(self) -> None:
        if not self.dir:
            return
        pg_ctl = _bin("pg_ctl")
        data = os.path.join(self.dir, "data")
        if pg_ctl is not None and os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(self._cmd(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = ""


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
