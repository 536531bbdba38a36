"""Templates: a root built from Debian packages by the image builder is the jail's root
(its package imports, the host's Python lacks it), the build is cached by the recipe's hash
and atomic, a template that is not built is a 409 naming the build command, states are
reported, each template keeps its own warm pool, and Firecracker gets its ext4 image as the
root drive (against the real binary when FIRECRACKER_BIN is set)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path

import msgspec
import pytest

from gateway_core.config.sandbox import (
    RuntimeName,
    SandboxConfig,
    TemplateConfig,
    TemplatePoolConfig,
)
from gateway_core.errors import InvalidRequest
from gateway_sandbox import BackendUnavailable, SandboxManager
from gateway_sandbox.image import BuildError, find_image
from gateway_sandbox.image.template import (
    TemplateImage,
    TemplateRecipe,
    build_lock_path,
    build_template,
    template_key,
    templates_root,
)
from gateway_sandbox.runtimes import RUNTIMES
from gateway_sandbox.templates import TemplateNotBuilt
from tests.sandbox.conftest import make_config
from tests.sandbox.template_fixture import TINY, TINY_MARKER, build_tiny, template_cache

# The first test may build the tiny template (a debootstrap when nothing is cached: ~80 s).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def tiny_template() -> TemplateImage:
    return build_tiny()


@pytest.fixture
def host_lacks_termcolor() -> None:
    # The host's own Python (what the default template runs) lacks the package.
    host = subprocess.run(["/usr/bin/python3", "-c", "import termcolor"],
                          capture_output=True, timeout=30, check=False)
    assert host.returncode != 0, "this host has termcolor: the test would prove nothing"


def _config(state_dir: Path, templates: dict[str, TemplateConfig], **pool: object
            ) -> SandboxConfig:
    return msgspec.structs.replace(make_config(state_dir, **{"min_ready": 0, **pool}),
                                   templates=templates,
                                   image_cache_dir=str(template_cache()))


def _missing() -> TemplateConfig:
    # A recipe nobody built: its files hold a fresh random value.
    return TemplateConfig(apt=["python3-toolz"],
                          files={"/etc/never-built": secrets.token_hex(8)})


async def _started(cfg: SandboxConfig) -> SandboxManager:
    m = SandboxManager.from_config(cfg)
    try:
        await m.start()
    except BackendUnavailable as exc:
        pytest.skip(f"bubblewrap jails are unavailable here: {exc.message}")
    return m


def test_runtime_names_in_the_config_are_the_runtime_table() -> None:
    assert set(typing.get_args(RuntimeName)) == set(RUNTIMES)


async def test_the_template_is_the_jails_root(tiny_template: TemplateImage, state_dir: Path,
                                              host_lacks_termcolor: None) -> None:
    m = await _started(_config(state_dir, {"tiny": TINY}))
    try:
        sb = await m.create("python", template="tiny")
        assert sb.info().template == "tiny"
        probe = ("import termcolor, os\n"
                 "print(termcolor.__file__)\n"
                 f"print(open({TINY_MARKER!r}).read(), end='')\n"
                 "open('/work/ok', 'w').write('w'); open('/tmp/ok', 'w').write('t')\n"
                 "try:\n    open('/usr/new-file', 'w')\nexcept OSError as e:\n"
                 "    print('read-only', e.errno)\n")
        result = await sb.execute(probe)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "/usr/lib/python3/dist-packages/termcolor.py"
        assert lines[1] == "tiny template"
        assert lines[2].startswith("read-only")
        # The same create without a template is today's jail: no termcolor there.
        plain = await m.create("python")
        assert plain.info().template == "default"
        result = await plain.execute("import termcolor")
        assert result.exit_code != 0 and "ModuleNotFoundError" in result.stderr
        # A runtime the template does not offer is the caller's error.
        with pytest.raises(InvalidRequest) as exc:
            await sb.execute("console.log(1)", runtime="node")
        assert exc.value.param == "runtime" and "does not offer" in exc.value.message
    finally:
        await asyncio.wait_for(m.aclose(), 60)


async def test_not_built_unknown_and_unoffered(tiny_template: TemplateImage,
                                               state_dir: Path) -> None:
    m = await _started(_config(state_dir, {"tiny": TINY, "later": _missing()}))
    try:
        with pytest.raises(TemplateNotBuilt) as not_built:
            await m.create("python", template="later")
        assert not_built.value.status == 409 and not_built.value.param == "template"
        assert "agentic-gateway sandbox build-image --template later" in \
            not_built.value.message
        with pytest.raises(InvalidRequest) as unknown:
            await m.create("python", template="nope")
        assert unknown.value.status == 400 and unknown.value.param == "template"
        with pytest.raises(InvalidRequest) as unoffered:
            await m.create("node", template="tiny")
        assert unoffered.value.param == "runtime"
        assert m.stats().active == 0
    finally:
        await asyncio.wait_for(m.aclose(), 60)


async def test_template_states(tiny_template: TemplateImage, state_dir: Path) -> None:
    later = _missing()
    m = await _started(_config(state_dir, {"tiny": TINY, "later": later}))
    try:
        infos = {t.name: t for t in m.template_infos()}
        assert list(infos) == ["default", "later", "tiny"]
        assert infos["default"].state == "built" and infos["default"].base == "host"
        tiny = infos["tiny"]
        assert (tiny.state, tiny.apt, tiny.files, tiny.runtimes) == \
            ("built", ["python3-termcolor"], [TINY_MARKER], ["python"])
        assert tiny.recipe_hash == tiny_template.key
        assert tiny.built_at and tiny.image_bytes and tiny.root_bytes
        assert tiny.image_bytes == os.stat(tiny_template.rootfs).st_blocks * 512
        assert tiny.build_command is None
        assert infos["later"].state == "missing"
        assert infos["later"].build_command == \
            "agentic-gateway sandbox build-image --template later"
        # A build holds its recipe's lock while it runs: that is "building".
        key = template_key(TemplateRecipe.from_config("later", later))
        lock = build_lock_path(template_cache(), key)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            states = {t.name: t.state for t in m.template_infos()}
            assert states["later"] == "building"
            with pytest.raises(TemplateNotBuilt) as exc:
                await m.create("python", template="later")
            assert "is being built" in exc.value.message
        finally:
            os.close(fd)
            lock.unlink()
        assert {t.name: t.state for t in m.template_infos()}["later"] == "missing"
    finally:
        await asyncio.wait_for(m.aclose(), 60)


async def test_each_template_keeps_its_own_warm_pool(tiny_template: TemplateImage,
                                                     state_dir: Path) -> None:
    tiny = msgspec.structs.replace(TINY, pool=TemplatePoolConfig(min_ready=1))
    m = await _started(_config(state_dir, {"tiny": tiny}, max_total=3))
    try:
        assert await m.wait_pool_ready(1, timeout_s=60, template="tiny")
        stats = m.stats()
        assert stats.template_pools_ready == {"tiny": 1} and stats.pool_ready == 0
        pooled = m._template_pools["tiny"].ready[0].guest.id
        sb = await m.create("python", template="tiny")
        assert sb.id == pooled  # handed out warm
        assert (await sb.execute("import termcolor; print('ok')")).stdout == "ok\n"
        # The pool refills itself; the default pool (min_ready 0) stays empty.
        assert await m.wait_pool_ready(1, timeout_s=60, template="tiny")
        assert m.stats().pool_ready == 0
        info = {t.name: t for t in m.template_infos()}["tiny"]
        assert (info.pool.min_ready, info.pool.ready) == (1, 1)
    finally:
        await asyncio.wait_for(m.aclose(), 60)
    assert m.stats().template_pools_ready == {"tiny": 0}


async def test_a_full_gateway_evicts_another_templates_warm_guest(
        tiny_template: TemplateImage, state_dir: Path) -> None:
    tiny = msgspec.structs.replace(TINY, pool=TemplatePoolConfig(min_ready=1))
    m = await _started(_config(state_dir, {"tiny": tiny}, max_total=1))
    try:
        assert await m.wait_pool_ready(1, timeout_s=60, template="tiny")
        # The one slot is tiny's warm guest; a default create takes it over.
        sb = await m.create("python")
        assert sb.info().template == "default"
        assert m.stats().template_pools_ready == {"tiny": 0}
    finally:
        await asyncio.wait_for(m.aclose(), 60)


def test_the_build_is_cached_by_the_recipe_hash(tiny_template: TemplateImage) -> None:
    again = build_template(template_cache(), TemplateRecipe.from_config("other-name", TINY))
    # Another name, the same recipe: the same build, not a new one.
    assert again.key == tiny_template.key
    assert again.manifest.built_at == tiny_template.manifest.built_at
    changed = TemplateRecipe.from_config(
        "tiny", msgspec.structs.replace(TINY, files={TINY_MARKER: "changed\n"}))
    assert template_key(changed) != tiny_template.key


def test_a_failed_build_leaves_no_image(tiny_template: TemplateImage) -> None:
    cache = template_cache()
    bad = TemplateRecipe.from_config("bad", TemplateConfig(
        apt=["agw-no-such-package"], files={"/etc/x": secrets.token_hex(8)}))
    key = template_key(bad)
    with pytest.raises(BuildError) as exc:
        build_template(cache, bad)
    build_lock_path(cache, key).unlink(missing_ok=True)  # a random recipe: not kept
    assert "agw-no-such-package" in str(exc.value) and "log:" in str(exc.value)
    left = [p.name for p in templates_root(cache).iterdir()
            if p.name.startswith(f"template-{key}") and not p.name.endswith(".lock")]
    assert left == []


def test_the_ext4_image_holds_the_template(tiny_template: TemplateImage) -> None:
    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) is not installed")

    def debugfs(request: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["debugfs", "-R", request, str(tiny_template.rootfs)],
                              capture_output=True, text=True, timeout=60, check=False)

    assert debugfs(f"cat {TINY_MARKER}").stdout == "tiny template\n"
    listing = debugfs("ls -l /usr/lib/python3/dist-packages").stdout
    assert "termcolor.py" in listing
    # The guest's init and agent are in it, as in the default rootfs.
    assert "gateway-init" in debugfs("ls -l /usr/sbin").stdout
    assert "agent.py" in debugfs("ls -l /opt/gateway-agent").stdout


@pytest.fixture
def fc_bin() -> str:
    path = os.environ.get("FIRECRACKER_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("FIRECRACKER_BIN is not set to an executable: this test needs the real "
                    "Firecracker binary")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("Firecracker needs a read-write /dev/kvm")
    return path


async def test_firecracker_boots_the_templates_ext4_as_its_root_drive(
        fc_bin: str, tiny_template: TemplateImage) -> None:
    from gateway_sandbox.backends.firecracker import FirecrackerBackend

    image = find_image()
    if image is None:
        pytest.skip("no guest kernel built: run `python -m gateway_sandbox.image build`")
    state = Path(tempfile.mkdtemp(prefix="fct", dir="/tmp"))  # short: socket paths
    cfg = SandboxConfig(backend="firecracker", state_dir=str(state), firecracker_path=fc_bin,
                        kernel_path=str(image.kernel), rootfs_path=str(image.rootfs),
                        firecracker_require_hardware_kvm=False, firecracker_snapshots=False)
    backend = FirecrackerBackend(cfg)
    await backend.start()
    try:
        vm = await backend.launch("tpl", rootfs=str(tiny_template.rootfs))
        try:
            assert vm.api is not None
            config = await vm.api.vm_config()
            assert [(d.drive_id, d.path_on_host, d.is_root_device, d.is_read_only)
                    for d in config.drives] == \
                [("rootfs", str(tiny_template.rootfs), True, True)]
            assert (await vm.api.instance_info()).state == "Running"
        finally:
            await vm.stop()
    finally:
        await backend.aclose()
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
async def test_pip_requirements_are_installed_at_build_time(state_dir: Path) -> None:
    cache = template_cache()
    config = TemplateConfig(pip=["tomli-w==1.0.0"])
    recipe = TemplateRecipe.from_config("piptpl", config)
    try:
        image = build_template(cache, recipe)
    except BuildError as exc:
        if "not reachable" in str(exc) or "needs root" in str(exc):
            pytest.skip(f"cannot build a pip template here: {exc}")
        raise
    # Nothing of the build's (lent) CA bundle is left in the root.
    assert list((image.root_dir / "run/agent").iterdir()) == []
    m = await _started(_config(state_dir, {"piptpl": config}))
    try:
        sb = await m.create("python", template="piptpl")
        result = await sb.execute("import tomli_w; print(tomli_w.__file__)")
        assert result.stdout == \
            "/usr/local/lib/python3.11/dist-packages/tomli_w/__init__.py\n", result.stderr
    finally:
        await asyncio.wait_for(m.aclose(), 60)


def test_a_file_through_a_symlink_of_the_root_is_refused(tiny_template: TemplateImage) -> None:
    # /var/run -> /run in Debian: followed on the build host, the file would land outside.
    recipe = TemplateRecipe.from_config("link", TemplateConfig(
        files={"/var/run/agw-escape": secrets.token_hex(8)}))
    with pytest.raises(BuildError, match="passes through /var/run, a symlink"):
        build_template(template_cache(), recipe)
    assert not Path("/run/agw-escape").exists()
    key = template_key(recipe)
    build_lock_path(template_cache(), key).unlink(missing_ok=True)  # a random recipe
    assert not any(p.name.startswith(f"template-{key}") and not p.name.endswith(".lock")
                   for p in templates_root(template_cache()).iterdir())


async def test_a_template_sandbox_reaches_allowed_hosts_through_the_proxy(
        tiny_template: TemplateImage, state_dir: Path) -> None:
    """Templates and egress together: the template's root, the proxy's allow-list."""
    from gateway_sandbox.egress import EgressProxy
    from tests.fakes.egress_upstreams import ALLOWED, DENIED, upstreams
    from tests.sandbox.test_egress import FETCH, Recorder, egress_config, run_py

    egress = egress_config()
    cfg = msgspec.structs.replace(_config(state_dir, {"tiny": TINY}), egress=egress)
    with tempfile.TemporaryDirectory() as d, upstreams(Path(d)) as servers:
        proxy = EgressProxy(egress, Recorder())
        await proxy.start()
        m = SandboxManager.from_config(cfg, egress=proxy)
        try:
            try:
                await m.start()
            except BackendUnavailable as exc:
                pytest.skip(f"bubblewrap jails are unavailable here: {exc.message}")
            sb = await m.create("python", template="tiny", network=[ALLOWED])
            assert sb.info().template == "tiny"
            out = await run_py(sb, FETCH + f"""
import termcolor
print(json.dumps({{"ok": fetch("http://{ALLOWED}:{servers.http_allowed}/"),
                  "no": fetch("http://{DENIED}:{servers.http_denied}/")}}))
""")
            ok, no = out["ok"], out["no"]
            assert isinstance(ok, dict) and isinstance(no, dict)
            assert ok["status"] == 200 and no["status"] == 403
        finally:
            await asyncio.wait_for(m.aclose(), 60)
            await proxy.aclose()
