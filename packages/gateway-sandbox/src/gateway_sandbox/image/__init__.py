"""The guest image builder: ``python -m gateway_sandbox.image build [--out DIR]`` (also
``agentic-gateway sandbox build-image``) makes the Firecracker guest kernel and rootfs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway_sandbox.image.builder import (
    BuildError,
    GuestImage,
    build,
    check_prerequisites,
    default_cache_dir,
    find_image,
)
from gateway_sandbox.image.recipe import OPTIONAL_RUNTIMES, Recipe

__all__ = ["BuildError", "GuestImage", "Recipe", "build", "check_prerequisites",
           "default_cache_dir", "find_image", "main"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway_sandbox.image",
                                description="Build the Firecracker guest kernel and rootfs "
                                            "from Debian packages.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("build", "build the image (cached by recipe hash)"),
                        ("check", "only check the prerequisites")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--out", help=f"cache directory (default {default_cache_dir()})")
        c.add_argument("--with", dest="runtimes", action="append", default=[],
                       choices=sorted(OPTIONAL_RUNTIMES),
                       help="add a runtime's Debian package to the rootfs (repeatable)")
        c.add_argument("--suite", default=Recipe().suite)
        c.add_argument("--mirror", default=Recipe().mirror)
    args = p.parse_args(argv)
    out = Path(args.out).absolute() if args.out else default_cache_dir()
    recipe = Recipe.with_runtimes(args.runtimes, suite=args.suite, mirror=args.mirror)
    if args.command == "check":
        missing = check_prerequisites(out, recipe, need_kernel=True, need_rootfs=True)
        for m in missing:
            print(f"missing: {m}", file=sys.stderr)
        return 1 if missing else 0
    try:
        image = build(out, recipe)
    except BuildError as exc:
        print(f"build-image: {exc}", file=sys.stderr)
        return 1
    print(f"kernel_path = \"{image.kernel}\"")
    print(f"rootfs_path = \"{image.rootfs}\"")
    if image.root_dir is not None:
        print(f"# process backend, optional: process_rootfs_dir = \"{image.root_dir}\"")
    return 0
