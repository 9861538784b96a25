"""Fixtures for the Python client's tests: the address of a real server."""

import pytest

from tests.support.server_process import ServerProcess


@pytest.fixture
def url(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"
