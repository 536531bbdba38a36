"""A tiny template built once per recipe hash (python3-termcolor, which this host's Python
lacks, and a marker file) in a cache the jails' uids can reach; skipped with the reason when
it cannot be built here (not root, no debootstrap, the Debian mirror unreachable)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway_core.config.sandbox import TemplateConfig
from gateway_sandbox.image import BuildError, check_prerequisites
from gateway_sandbox.image.template import (
    TemplateImage,
    TemplateRecipe,
    build_template,
    find_template,
)

__all__ = ["TINY", "TINY_MARKER", "build_tiny", "template_cache"]

TINY_MARKER = "/etc/agw-template-marker"
#: The recipe the tests build: one small pure-Python Debian package and one file.
TINY = TemplateConfig(apt=["python3-termcolor"], files={TINY_MARKER: "tiny template\n"})


def template_cache() -> Path:
    """$GATEWAY_TEMPLATE_CACHE, else /var/cache/agentic-gateway/guest-image: not under
    /root, whose mode would hide it from the jails' unprivileged uids. Kept between runs."""
    return Path(os.environ.get("GATEWAY_TEMPLATE_CACHE")
                or "/var/cache/agentic-gateway/guest-image")


def build_tiny() -> TemplateImage:
    """The tiny template, built now unless it is in the cache (for a session fixture)."""
    cache = template_cache()
    recipe = TemplateRecipe.from_config("tiny", TINY)
    found = find_template(cache, recipe)
    if found is not None:
        return found
    missing = check_prerequisites(cache, recipe.base_recipe(), need_kernel=False,
                                  need_rootfs=True)
    if missing:
        pytest.skip("cannot build the test template: " + "; ".join(missing))
    began = time.monotonic()
    try:
        image = build_template(cache, recipe)
    except BuildError as exc:
        pytest.fail(f"the test template did not build: {exc}")
    print(f"tiny template built in {time.monotonic() - began:.1f} s")
    return image
