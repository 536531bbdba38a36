"""Alembic's environment: runs on the connection the gateway hands it (never a URL of its
own), inside the gateway's own transaction."""

from __future__ import annotations

from alembic import context

from gateway_server.access.schema import metadata

__all__: list[str] = []

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
