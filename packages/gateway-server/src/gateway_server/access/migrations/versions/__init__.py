"""Alembic revisions, oldest first."""

__all__: list[str] = []
