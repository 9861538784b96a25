"""Shared fixtures: a real server process on temporary LMDB storage, on 127.0.0.1."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import postgres_dsn, postgres_server
from tests.support.server_process import ServerProcess

__all__ = ["postgres_dsn", "postgres_server"]  # fixtures, shared with every test module


@pytest.fixture
def storage_engine() -> str:
    """The engine servers started by `start_server` use; a module that imports
    `tests.support.postgres.storage_engine` runs on both."""
    return "lmdb"


@pytest.fixture
def start_server(tmp_path: Path, storage_engine: str, request: pytest.FixtureRequest
                 ) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers on storage under tmp_path (the same path again after a restart; on
    PostgreSQL, the same fresh database per storage name)."""
    started: list[ServerProcess] = []
    databases: dict[str, str] = {}

    def start(*extra_args: str, storage: str = "data") -> ServerProcess:
        if storage_engine == "postgres":
            if storage not in databases:
                databases[storage] = request.getfixturevalue("postgres_server").new_database()
            extra_args = ("--storage.engine", "postgres",
                          "--storage.postgres.dsn", databases[storage], *extra_args)
        server = ServerProcess(tmp_path / storage, extra_args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()
