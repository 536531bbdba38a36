"""Each distribution installs from its folder into a fresh virtualenv and imports with no
sibling it does not depend on. Siblings are installed by path, never from an index."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"

# distribution -> (siblings it needs, import name, siblings that must NOT be importable)
CASES = {
    "gateway-core": ([], "gateway_core", ["gateway_llm", "gateway_sandbox", "gateway_server"]),
    "gateway-llm": (["gateway-core"], "gateway_llm", ["gateway_sandbox", "gateway_server"]),
    "gateway-sandbox": (["gateway-core"], "gateway_sandbox", ["gateway_llm", "gateway_server"]),
    "gateway-server": (["gateway-core", "gateway-llm", "gateway-sandbox"], "gateway_server", []),
}


def _venv(path: Path) -> Path:
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(path)], check=True,
                       timeout=120)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def _install(python: Path, paths: list[Path]) -> None:
    uv = shutil.which("uv")
    args = [str(p) for p in paths]
    if uv:
        cmd = [uv, "pip", "install", "-q", "--python", str(python), *args]
    else:
        cmd = [str(python), "-m", "pip", "install", "-q", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("dist", sorted(CASES))
def test_installs_and_imports_alone(dist: str, tmp_path: Path) -> None:
    needs, module, absent = CASES[dist]
    python = _venv(tmp_path / "venv")
    # Siblings first, by path, so nothing named gateway-* is ever looked up on an index.
    _install(python, [PACKAGES / n for n in needs] + [PACKAGES / dist])
    check = (
        f"import importlib.util, {module}\n"
        f"assert {module}.__version__\n"
        f"absent = [m for m in {absent!r} if importlib.util.find_spec(m)]\n"
        "assert not absent, absent\n"
        f"import os; assert os.path.exists(os.path.join(os.path.dirname({module}.__file__), "
        "'py.typed'))\n"
    )
    r = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
