"""Both storage engines behind the writer seam, for the storage contract tests.

`open_storage` opens an engine the way the server does (`engines.open_engine`), starts its
real writer process through the server's `Writer`, and hands the test the writer and the
engine's `StoreReads`: LMDB in a temporary directory, PostgreSQL in a fresh database of the
session's throwaway server (`tests/support/postgres.py`). Nothing is mocked.

A test module takes the `storage_target` fixture (parametrized over both engines) and runs
its body with `run_on(target, body)`.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from overhop.config.sections import JobsConfig, PostgresConfig, StorageConfig
from overhop.errors import ErrorCode, RequestError
from overhop.storage.engines import open_engine
from overhop.storage.operations.base import Operation
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Write, Writer

T = TypeVar("T")
ENGINES = ("lmdb", "postgres")


@dataclass(frozen=True)
class StorageTarget:
    """Where one test's storage lives: the engine, its data directory (LMDB) or DSN."""

    engine: str
    path: Path
    dsn: str


@dataclass
class Storage:
    """An open engine: its writer (the seam) and its reads."""

    engine: str
    writer: Writer
    reads: StoreReads

    def submit(self, op: Operation[T]) -> Write[T]:
        return self.writer.submit(op)

    async def do(self, op: Operation[T]) -> T:
        """The operation's result once durable; its visible point gave the same."""
        write = self.writer.submit(op)
        visible = write.visible
        result = await write.durable
        assert visible.done() and visible.result() == result
        return result

    async def refused(self, op: Operation[Any]) -> ErrorCode:
        """The refusal's code; the operation must be refused at both points."""
        write = self.writer.submit(op)
        visible = write.visible
        with pytest.raises(RequestError) as durable:
            await write.durable
        failure = visible.exception()
        assert isinstance(failure, RequestError) and failure.code == durable.value.code
        return durable.value.code


@asynccontextmanager
async def open_storage(target: StorageTarget, *, sync: bool = True, max_batch: int = 64,
                       jobs: JobsConfig | None = None, node_id: str = "",
                       lease_ms: int = 10_000) -> AsyncIterator[Storage]:
    """The engine opened as a server opens it; with `node_id` (PostgreSQL), as one broker
    of a cluster whose writer fences every write by queue ownership."""
    config = StorageConfig(engine=target.engine, path=str(target.path), sync=sync,
                           initial_map_size_bytes=1 << 24, max_map_size_bytes=1 << 28,
                           reserved_headroom_bytes=1 << 20, max_batch_operations=max_batch,
                           postgres=PostgresConfig(dsn=target.dsn, pool_size=2))
    store, reads = await open_engine(config, target.path, node_id)
    writer = Writer(store, asyncio.get_running_loop(), sync=sync, max_batch=max_batch,
                    max_map_size=config.max_map_size_bytes,
                    reserved_headroom=config.reserved_headroom_bytes,
                    jobs=jobs or JobsConfig(), cluster_lease_ms=lease_ms)
    try:
        await writer.start()
        yield Storage(target.engine, writer, reads)
    finally:
        await writer.stop()
        await reads.close()


def run_on(target: StorageTarget, body: Callable[[Storage], Awaitable[None]], *,
           sync: bool = True, jobs: JobsConfig | None = None) -> None:
    """Run `body` against a freshly opened engine, in its own event loop."""
    async def main() -> None:
        async with open_storage(target, sync=sync, jobs=jobs) as storage:
            await body(storage)

    asyncio.run(main())


@pytest.fixture(params=ENGINES)
def storage_target(request: pytest.FixtureRequest, tmp_path: Path) -> StorageTarget:
    """Each engine in turn: a fresh data directory, or a fresh database."""
    engine = str(request.param)
    dsn = ""
    if engine == "postgres":
        dsn = request.getfixturevalue("postgres_server").new_database()
    return StorageTarget(engine, tmp_path / "data", dsn)
