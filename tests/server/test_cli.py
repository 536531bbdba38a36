"""The CLI refuses bad or unsafe configs at start with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_server.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_impossible_pool_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[sandbox.pool]\nmin_ready = 20\nmax_total = 10\n")
    r = run_cli("serve", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if "config error" in line]
    assert len(lines) == 1
    assert "sandbox.pool" in lines[0] and "min_ready = 20" in lines[0]


def test_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[server]\nhost = "0.0.0.0"\n')
    r = run_cli("serve", cwd=tmp_path)
    assert r.returncode == 2
    assert "api_keys" in r.stderr and "Traceback" not in r.stderr


def test_check_config_uses_example_when_no_config_toml(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    (tmp_path / "config.example.toml").write_text(example.read_text())
    r = run_cli("check-config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "config.example.toml: ok" in r.stdout
