"""Alembic migrations of the key and usage store, run at start (see database.py)."""

__all__: list[str] = []
