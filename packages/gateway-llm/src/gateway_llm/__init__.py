"""gateway_llm."""
from gateway_llm.__about__ import __version__

__all__ = ["__version__"]
