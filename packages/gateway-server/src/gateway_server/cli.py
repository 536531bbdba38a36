"""``agentic-gateway``: serve the gateway with hypercorn, check a config, build the
sandbox guest image."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gateway_core.config import Config, ConfigError, load_config

__all__ = ["build_image", "build_templates", "check_config", "keys", "main", "serve"]


def _find_config(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for candidate in (Path("config.toml"), Path("config.example.toml")):
        if candidate.is_file():
            return candidate
    raise ConfigError("no --config given and neither ./config.toml nor ./config.example.toml "
                      "exists")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(config: Config) -> None:
    s = config.server
    if not s.api_keys and not s.admin_keys and not s.allow_unauthenticated \
            and not _is_loopback(s.host):
        raise ConfigError(
            f"`server.host` = {s.host!r}: refusing to listen on a non-loopback address "
            "without API keys. Set server.api_keys = [\"${GATEWAY_API_KEY}\"] (and export "
            "GATEWAY_API_KEY), bind to 127.0.0.1, or set server.allow_unauthenticated = true "
            "if something in front of the gateway does the auth."
        )


def _warn(message: str) -> None:
    print(f"agentic-gateway: warning: {message}", file=sys.stderr)


def serve(args: argparse.Namespace) -> int:
    path = _find_config(args.config)
    config = load_config(path)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: expected >= 1")
        config.server.workers = args.workers
    _check_exposure(config)
    s = config.server
    print(f"agentic-gateway: loaded config from {path.resolve()}", file=sys.stderr)

    metrics_dir: str | None = None
    if s.workers > 1:
        # Prometheus multiprocess mode: must be set before any worker imports
        # prometheus_client, and start empty or old counts come back.
        metrics_dir = tempfile.mkdtemp(prefix="agentic-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        if config.rate_limit.enabled and config.rate_limit.backend == "memory":
            _warn(f"{s.workers} workers with rate_limit.backend = \"memory\": each worker "
                  "keeps its own budget, so providers may see up to "
                  f"{s.workers}x the configured limits. Use backend = \"redis\" to share one.")
        if config.sandbox.enabled:
            _warn(f"{s.workers} workers with [sandbox] enabled: a sandbox lives in the worker "
                  "that created it and each request goes to any worker, so a sandbox's own "
                  "requests answer 404 on the others. Serve sandboxes from an instance with "
                  "--workers 1 (and [sandbox] enabled = false on the multi-worker one).")
    os.environ["AGENTIC_GATEWAY_CONFIG"] = str(path.resolve())
    # The workers load the file again: what the command line changed goes with it.
    os.environ["AGENTIC_GATEWAY_LISTEN"] = f"{s.host} {s.port}"
    if config.key_store is not None:
        # Migrate once here, before workers start (each would otherwise race to).
        _migrate(config)

    from hypercorn.config import Config as HypercornConfig
    from hypercorn.run import run

    hc = HypercornConfig()
    host = f"[{s.host}]" if ":" in s.host and not s.host.startswith("[") else s.host
    hc.bind = [f"{host}:{s.port}"]
    hc.application_path = "gateway_server.asgi:app"
    # workers = 0 serves in this process (no supervisor) — the common single-worker case.
    hc.workers = 0 if s.workers == 1 else s.workers
    hc.worker_class = "uvloop" if _has_uvloop() else "asyncio"
    hc.graceful_timeout = s.graceful_timeout_s
    hc.keep_alive_timeout = s.keep_alive_timeout_s
    hc.accesslog = None  # the gateway writes its own access line
    hc.errorlog = "-"
    try:
        return run(hc)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _migrate(config: Config) -> None:
    import asyncio

    from gateway_server.access.database import Database

    storage = config.key_store
    assert storage is not None

    async def migrate() -> None:
        db = Database(storage.url)
        try:
            await db.start()
        finally:
            await db.aclose()

    try:
        asyncio.run(migrate())
    except Exception as exc:  # noqa: BLE001 - any driver's error: say it in one line
        raise ConfigError(f"storage.url: cannot open or migrate the database: "
                          f"{type(exc).__name__}: {exc}") from None


def keys(args: argparse.Namespace) -> int:
    from gateway_server.access.cli import run

    return run(load_config(_find_config(args.config)), args)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def check_config(args: argparse.Namespace) -> int:
    path = _find_config(args.config)
    config = load_config(path)
    _check_exposure(config)
    print(f"{path}: ok ({len(config.llm.providers)} providers, "
          f"{len(config.llm.models)} models)")
    return 0


def build_image(args: argparse.Namespace) -> int:
    if args.template or args.all:
        return build_templates(args)
    from gateway_sandbox.image import main as image_main

    argv = ["build"]
    if args.out:
        argv += ["--out", args.out]
    return image_main(argv)


def build_templates(args: argparse.Namespace) -> int:
    """``build-image --template NAME`` / ``--all``: the config's templates, each one cached
    by its recipe's hash (a second run is instant)."""
    from gateway_sandbox.image import BuildError, default_cache_dir
    from gateway_sandbox.image.template import TemplateRecipe, build_template

    path = _find_config(args.config)
    sb = load_config(path).sandbox
    names = sorted(sb.templates) if args.all else [args.template]
    for name in names:
        if name not in sb.templates:
            known = ", ".join(sorted(sb.templates)) or "none"
            raise ConfigError(f"{path}: no [sandbox.templates.{name}] (configured: {known})")
    cache = Path(args.out or sb.image_cache_dir or default_cache_dir()).absolute()
    for name in names:
        try:
            image = build_template(cache, TemplateRecipe.from_config(name, sb.templates[name]))
        except BuildError as exc:
            print(f"build-image: {exc}", file=sys.stderr)
            return 1
        m = image.manifest
        print(f"{name}: built {image.key} ({m.root_bytes // 1024**2} MiB root, "
              f"{m.image_bytes // 1024**2} MiB ext4; built in {m.build_seconds:.0f} s): "
              f"{image.root_dir.parent}")
    if not names:
        print(f"{path}: no templates configured", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentic-gateway",
                                     description="LLM gateway and code sandboxes for agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the gateway with hypercorn")
    p.add_argument("--config", help="TOML config (default: ./config.toml, then "
                   "./config.example.toml)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(func=serve)
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("--config")
    p.set_defaults(func=check_config)
    p = sub.add_parser("sandbox", help="sandbox tools")
    sandbox_sub = p.add_subparsers(dest="sandbox_command", required=True)
    b = sandbox_sub.add_parser("build-image", help="build the Firecracker guest kernel and "
                               "rootfs from Debian packages")
    b.add_argument("--out", help="cache directory for the image (templates: default "
                   "sandbox.image_cache_dir)")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--template", metavar="NAME",
                       help="build the root of [sandbox.templates.NAME] instead")
    which.add_argument("--all", action="store_true", help="build every configured template")
    b.add_argument("--config", help="TOML config holding the templates (default: "
                   "./config.toml, then ./config.example.toml)")
    b.set_defaults(func=build_image)
    from gateway_server.access.cli import add_parsers

    add_parsers(sub, "TOML config (its [storage] and [rate_limit] redis are used)")
    for name in ("keys", "teams", "usage"):
        sub.choices[name].set_defaults(func=keys)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"agentic-gateway: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
