"""The guest's layout has one home (gateway_sandbox.guest_layout); the image's init script,
the image builder, the config default and the process backend must agree with it."""

from __future__ import annotations

from gateway_core.config.sandbox import SandboxConfig
from gateway_sandbox import guest_layout as layout
from gateway_sandbox.backends.process import backend as process
from gateway_sandbox.image import builder
from gateway_sandbox.image.recipe import INIT_SCRIPT


def test_init_script_agrees_with_the_layout() -> None:
    init = INIT_SCRIPT.read_text()
    assert f"python3 -I {layout.GUEST_AGENT} --vsock" in init
    assert f"--workdir {layout.GUEST_WORKDIR} --tmpdir {layout.GUEST_TMPDIR}" in init
    assert f"agent=vsock:{layout.AGENT_VSOCK_PORT}\n" in init
    assert f"[ -b {layout.WORK_DRIVE} ]" in init and \
        f"{layout.WORK_DRIVE} {layout.GUEST_WORKDIR}" in init
    assert f"cd {layout.GUEST_WORKDIR}\n" in init


def test_builder_backends_and_config_use_the_layout() -> None:
    assert "/" + builder.GUEST_AGENT == layout.GUEST_AGENT
    assert process.GUEST_WORKDIR == layout.GUEST_WORKDIR
    assert SandboxConfig().firecracker_agent_port == layout.AGENT_VSOCK_PORT
