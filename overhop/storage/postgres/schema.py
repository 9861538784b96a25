"""The PostgreSQL schema: one ordered key-value table holding the LMDB layout, its version
row, and the advisory locks that keep one server per database.

`overhop_kv` holds every named database of `keys.py` as a *space* (a small number), with
the same keys and values byte for byte. Its primary key is a B-tree on (space, key), and
PostgreSQL orders `bytea` as LMDB orders keys (bytewise, a prefix first), so every seek and
range scan the LMDB engine makes is an index seek here: O(log n), never a full scan.
"""

from enum import IntEnum

import psycopg

from overhop.storage import keys


class Space(IntEnum):
    """The named databases of `keys.py`, as stored in `overhop_kv.space`. Stored in every
    row: never renumber."""

    META = 0
    QUEUES = 1
    JOBS = 2
    BY_STATUS = 3
    BY_TIME = 4
    BY_FINISH = 5
    COUNTERS = 6
    USERS = 7
    SCHEDULES = 8
    UNIQUE = 9
    GROUPS = 10
    GROUP_RING = 11
    GROUP_WAITING = 12


# The version of this schema (tables and spaces), in `overhop_meta`; the key layout inside
# the spaces is `keys.LAYOUT_VERSION`, stored under META as in LMDB.
SCHEMA_VERSION = 1

# Session advisory locks (arbitrary 64-bit numbers, "overhop" in ASCII plus one): the
# server holds SERVER_LOCK for its life, its writer process WRITER_LOCK. A second server
# fails on the first; a new server's writer waits on the second until a killed server's
# writer has let go, so two writers never run at once.
SERVER_LOCK = 0x6F766572686F7001
WRITER_LOCK = 0x6F766572686F7002

# fillfactor 70: index entries and job rows are rewritten on every transition; free room
# in each page lets PostgreSQL update in place (a HOT update) more often.
DDL = (
    "CREATE TABLE IF NOT EXISTS overhop_meta (name text PRIMARY KEY, value integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS overhop_kv (space smallint NOT NULL, key bytea NOT NULL, "
    "value bytea NOT NULL, PRIMARY KEY (space, key)) WITH (fillfactor = 70)",
    "ALTER TABLE overhop_kv SET (autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.05)",
)


class SchemaError(Exception):
    """The database holds a schema this server cannot use; str() is one line."""


def prepare(conn: psycopg.Connection) -> bool:
    """Create the schema on first use, else check its versions; True if it was created.
    Runs in one transaction, under the server lock (so never twice at once)."""
    with conn.transaction():
        existing = conn.execute("SELECT to_regclass('overhop_meta') IS NOT NULL").fetchone()
        if existing is None or not existing[0]:
            for statement in DDL:
                conn.execute(statement)
            conn.execute("INSERT INTO overhop_meta VALUES ('schema_version', %s)",
                         (SCHEMA_VERSION,))
            conn.execute("INSERT INTO overhop_kv VALUES (%s, %s, %s)",
                         (Space.META, keys.META_LAYOUT_VERSION, bytes((keys.LAYOUT_VERSION,))))
            return True
        row = conn.execute(
            "SELECT value FROM overhop_meta WHERE name = 'schema_version'").fetchone()
        layout = conn.execute("SELECT value FROM overhop_kv WHERE space = %s AND key = %s",
                              (Space.META, keys.META_LAYOUT_VERSION)).fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise SchemaError(f"the database has overhop schema version {row and row[0]}; this "
                          f"overhop reads version {SCHEMA_VERSION} (see docs/storage.md)")
    if layout is None or bytes(layout[0]) != bytes((keys.LAYOUT_VERSION,)):
        found = None if layout is None else bytes(layout[0])[0]
        raise SchemaError(f"the database has layout version {found}; this overhop reads "
                          f"version {keys.LAYOUT_VERSION} (see docs/storage.md)")
    return False
