"""Opening the configured storage engine: what the writer writes to, and what the server
reads through (`StoreReads`).

The PostgreSQL engine's modules, and psycopg with them (about 0.13 s to import), are
imported only when that engine is configured: a broker on LMDB boots without them.
"""

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from overhop.config.sections import StorageConfig
from overhop.storage.reads import LmdbReads, StoreReads
from overhop.storage.store import Store, StoreOpenError

if TYPE_CHECKING:
    from overhop.storage.postgres.store import PgStore


async def open_engine(storage: StorageConfig, path: Path, node_id: str = ""
                      ) -> "tuple[Store | PgStore, StoreReads]":
    """The engine's store (handed to the `Writer`) and its reads; `StoreOpenError` (one
    line) when it cannot be used. `node_id`: this broker's name in a cluster (postgres)."""
    if storage.engine == "postgres":
        import psycopg

        from overhop.storage.postgres.reads import PgReads
        from overhop.storage.postgres.store import PgStore, first_line

        # Connecting may take up to the connect timeout: off the loop, though nothing is
        # served yet, so that signals are still handled.
        pg = await asyncio.to_thread(PgStore, storage.postgres.dsn, node_id)
        try:
            reads = await PgReads.open(pg, storage.postgres.pool_size)
        except psycopg.Error as exc:
            pg.close()
            raise StoreOpenError(
                f"cannot connect to PostgreSQL at {pg.described}: {first_line(exc)}") from None
        return pg, reads
    store = Store(path, map_size=storage.initial_map_size_bytes, sync=storage.sync)
    return store, LmdbReads(store)
