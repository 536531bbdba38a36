"""Sandbox backends, one package per isolation kind (``process``: bubblewrap jails,
``firecracker``: microVMs), each implementing the ``Backend`` protocol of ``base``."""

# Nothing is re-exported here: `gateway_sandbox` exports `Backend` and `Guest`, and the
# manager imports the backend it selects from its own package.
__all__: list[str] = []
