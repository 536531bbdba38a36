"""The LLM tests' shared fixture: a real redis-server on a free port, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_fixture import RedisServer, redis_server


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server
