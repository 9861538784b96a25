"""Shared fixtures: a real server process on temporary LMDB storage, on 127.0.0.1."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers on storage under tmp_path (the same path again after a restart)."""
    started: list[ServerProcess] = []

    def start(*extra_args: str, storage: str = "data") -> ServerProcess:
        server = ServerProcess(tmp_path / storage, extra_args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()
