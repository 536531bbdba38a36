"""The ASGI entry point hypercorn's workers import: the app for the config file named by
AGENTIC_GATEWAY_CONFIG (set by ``agentic-gateway serve``, which validated it already)."""

from __future__ import annotations

import os

from gateway_core.config import load_config
from gateway_server.app import create_app
from gateway_server.logs import configure_logging

__all__ = ["CONFIG_ENV", "LISTEN_ENV", "app"]

CONFIG_ENV = "AGENTIC_GATEWAY_CONFIG"
LISTEN_ENV = "AGENTIC_GATEWAY_LISTEN"  # "host port" as served (the CLI's overrides)

_config = load_config(os.environ.get(CONFIG_ENV, "config.toml"))
if os.environ.get(LISTEN_ENV):
    _host, _, _port = os.environ[LISTEN_ENV].rpartition(" ")
    _config.server.host, _config.server.port = _host, int(_port)
configure_logging(_config.logging)
app = create_app(_config)
