"""gateway_sandbox."""
from gateway_sandbox.__about__ import __version__

__all__ = ["__version__"]
