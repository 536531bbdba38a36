"""gateway_server."""
from gateway_server.__about__ import __version__

__all__ = ["__version__"]
