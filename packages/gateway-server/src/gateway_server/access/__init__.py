"""Virtual keys, teams, budgets and usage records: the key store (hashed keys, cached per
worker, invalidated over Redis), the usage recorder (batched writes to SQLite or
PostgreSQL) and the access control that composes them for the app."""

from gateway_server.access.control import AccessControl
from gateway_server.access.records import KeySpec, KeyUpdate, Principal, TeamSpec, TeamUpdate

__all__ = ["AccessControl", "KeySpec", "KeyUpdate", "Principal", "TeamSpec", "TeamUpdate"]
