"""The Agentic Gateway service: create_app(config) and the ``agentic-gateway`` CLI."""

from gateway_server.__about__ import __version__
from gateway_server.app import create_app

__all__ = ["__version__", "create_app"]
