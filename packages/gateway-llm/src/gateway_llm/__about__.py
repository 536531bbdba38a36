"""The distribution's version, read by hatch (`[tool.hatch.version]`)."""

__version__ = "0.1.0"
