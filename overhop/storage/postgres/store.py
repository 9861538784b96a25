"""The server's hold on a PostgreSQL database: connect, take the server lock (shared, and
the node's own lock, in a cluster), create or check the schema. The connection stays open
for the server's life: it holds the locks.

Opening runs once at start, before the server serves anything (like opening the LMDB
store), so it may block; every read after that goes through `PgReads`, off the loop's
critical path.
"""

from typing import LiteralString

import psycopg
import psycopg.conninfo

from overhop.storage.postgres.schema import NODE_LOCK_CLASS, SERVER_LOCK, SchemaError, prepare
from overhop.storage.store import StoreLockedError, StoreOpenError

# How long start waits for the database before it gives up with one line.
CONNECT_TIMEOUT_S = 10


def describe(dsn: str) -> str:
    """The DSN without its password, for messages and STATUS."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unparsable DSN)"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PgStore:
    """This server's claim on the database (the server lock) and what opening checked."""

    def __init__(self, dsn: str, node_id: str = "") -> None:
        self.dsn = dsn
        self.node_id = node_id
        self.described = describe(dsn)
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise StoreOpenError(f"storage.postgres.dsn: {first_line(exc)}") from None
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                         application_name="overhop-server")
        except psycopg.Error as exc:
            raise StoreOpenError(
                f"cannot connect to PostgreSQL at {self.described}: {first_line(exc)}"
            ) from None
        try:
            self._lock()
            self.created = prepare(self._conn)
        except SchemaError as exc:
            self._conn.close()
            raise StoreOpenError(str(exc)) from None
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreOpenError(
                f"cannot use PostgreSQL at {self.described}: {first_line(exc)}") from None
        except BaseException:
            self._conn.close()
            raise

    def _lock(self) -> None:
        if not self.node_id:
            if not self._try("SELECT pg_try_advisory_lock(%s)", (SERVER_LOCK,)):
                raise StoreLockedError(
                    f"database {self.described} is in use by another overhop server (a "
                    "lone server owns its database; see docs/cluster.md for several)")
            return
        if not self._try("SELECT pg_try_advisory_lock_shared(%s)", (SERVER_LOCK,)):
            raise StoreLockedError(
                f"database {self.described} is in use by an overhop server outside a "
                "cluster (cluster.node_id unset); stop it first")
        if not self._try("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                         (NODE_LOCK_CLASS, self.node_id)):
            raise StoreLockedError(
                f"cluster.node_id {self.node_id!r} is in use by another broker on "
                f"{self.described}; give each broker its own")

    def _try(self, query: LiteralString, args: tuple[object, ...]) -> bool:
        locked = self._conn.execute(query, args).fetchone()
        return locked is not None and bool(locked[0])

    def close(self) -> None:
        """Let go of the database (and with it the server lock)."""
        self._conn.close()
