"""Templates over HTTP: GET /v1/templates (states and contents), POST /v1/sandboxes with a
template (its root in a real jail), 409 for one not built naming the build command, 400 for
an unknown one or a runtime it does not offer; E2B's templateID may name a template."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway_core.config import parse_config
from gateway_sandbox.image.template import TemplateImage
from tests.sandbox.template_fixture import TINY_MARKER, build_tiny, template_cache
from tests.server.test_sandboxes_api import error_of, serve_app

# The first test may build the tiny template (a debootstrap when nothing is cached: ~80 s).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def tiny_template() -> TemplateImage:
    return build_tiny()


@pytest.fixture
async def gateway(state_dir: Path, tiny_template: TemplateImage
                  ) -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config({
        "server": {"e2b": {"enabled": True}},
        "sandbox": {
            "backend": "process", "state_dir": str(state_dir),
            "image_cache_dir": str(template_cache()),
            "pool": {"min_ready": 0, "max_total": 3},
            "templates": {
                "tiny": {"apt": ["python3-termcolor"],
                         "files": {TINY_MARKER: "tiny template\n"}, "pool": {"min_ready": 1}},
                "later": {"apt": ["python3-toolz"],
                          "files": {"/etc/never-built": secrets.token_hex(8)}},
            },
        },
    })
    async for url in serve_app(config):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            ready = (await client.get("/health/ready")).json()
            if not ready["sandbox"]["available"]:
                pytest.skip(f"sandboxes unavailable here: {ready['sandbox']['reason']}")
            yield client


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="agw-tpl-test-"))
    os.chmod(d, 0o711)  # the jails run as their own uids
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


async def test_templates_are_listed_with_state_and_contents(
        gateway: httpx.AsyncClient, tiny_template: TemplateImage) -> None:
    r = await gateway.get("/v1/templates")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    by_name = {t["name"]: t for t in body["data"]}
    assert list(by_name) == ["default", "later", "tiny"]
    assert by_name["default"]["state"] == "built"
    tiny = by_name["tiny"]
    assert (tiny["state"], tiny["base"], tiny["apt"], tiny["pip"], tiny["files"],
            tiny["runtimes"]) == ("built", "debian-bookworm", ["python3-termcolor"], [],
                                  [TINY_MARKER], ["python"])
    assert tiny["recipe_hash"] == tiny_template.key
    assert tiny["image_bytes"] > 0 and tiny["root_bytes"] > 0 and tiny["built_at"] > 0
    assert tiny["pool"]["min_ready"] == 1
    later = by_name["later"]
    assert later["state"] == "missing" and later["built_at"] is None
    assert later["build_command"] == "agentic-gateway sandbox build-image --template later"


async def test_create_from_a_template_and_its_errors(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "template": "tiny"})
    assert r.status_code == 201, r.text
    sb = r.json()
    assert sb["template"] == "tiny"
    r = await gateway.post(f"/v1/sandboxes/{sb['id']}/execute",
                           json={"code": f"import termcolor; print(open({TINY_MARKER!r}).read())"})
    assert r.json()["stdout"] == "tiny template\n\n", r.text
    plain = (await gateway.post("/v1/sandboxes", json={"runtime": "python"})).json()
    assert plain["template"] == "default"

    r = await gateway.post("/v1/sandboxes", json={"runtime": "python", "template": "later"})
    assert r.status_code == 409
    err = error_of(r)
    assert (err["param"], err["code"]) == ("template", "template_not_built")
    assert "agentic-gateway sandbox build-image --template later" in str(err["message"])
    for body, param in (({"runtime": "python", "template": "nope"}, "template"),
                        ({"runtime": "python", "template": 7}, "template"),
                        ({"runtime": "node", "template": "tiny"}, "runtime")):
        r = await gateway.post("/v1/sandboxes", json=body)
        assert r.status_code == 400, body
        assert error_of(r)["param"] == param


async def test_e2b_template_id_may_name_a_template(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/e2b/v2/sandboxes", json={"templateID": "tiny"})
    assert r.status_code == 201, r.text
    assert r.json()["templateID"] == "tiny"
    listed = (await gateway.get("/e2b/v2/sandboxes", params={"template": "tiny"})).json()
    assert [s["sandboxID"] for s in listed] == [r.json()["sandboxID"]]
    r = await gateway.post("/e2b/v2/sandboxes", json={"templateID": "later"})
    assert r.status_code == 409
    assert "build-image --template later" in r.json()["message"]
    # The runtime names and aliases still work as before.
    r = await gateway.post("/e2b/v2/sandboxes", json={"templateID": "base"})
    assert r.status_code == 201 and r.json()["templateID"] == "python"
