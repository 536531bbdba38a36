"""Shared fixtures: nothing here fakes our own code; fixtures start real things."""

from __future__ import annotations

import pytest

from tests.gateway_process import free_port


@pytest.fixture
def port() -> int:
    return free_port()
