"""HTTP routes of the gateway, one module per API area."""

__all__: list[str] = []
