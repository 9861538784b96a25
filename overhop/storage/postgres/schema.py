"""The PostgreSQL schema: one ordered key-value table holding the LMDB layout, its version
row, the cluster's two tables (live brokers, queue owners), and the advisory locks that
keep one server per database, or one per node id in a cluster.

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
# the spaces is `keys.LAYOUT_VERSION`, stored under META as in LMDB. Version 2 added the
# cluster's tables; a version-1 database gets them when it opens (they start empty).
SCHEMA_VERSION = 2

# Session advisory locks (arbitrary 64-bit numbers, "overhop" in ASCII plus one): a lone
# server holds SERVER_LOCK for its life, its writer process WRITER_LOCK. A second server
# fails on the first; a new server's writer waits on the second until a killed server's
# writer has let go, so two writers never run at once. A cluster's brokers hold
# SERVER_LOCK shared (so a lone server and a cluster never share a database) and, per node
# id, the two-key locks (NODE_LOCK_CLASS or NODE_WRITER_CLASS, hashtext(node id)).
SERVER_LOCK = 0x6F766572686F7001
WRITER_LOCK = 0x6F766572686F7002
# Taken for the transaction that creates or upgrades the schema: brokers of a cluster start
# together, and only one may create it.
SCHEMA_LOCK = 0x6F766572686F7003
NODE_LOCK_CLASS = 0x6F76
NODE_WRITER_CLASS = 0x6F77

# fillfactor 70: index entries and job rows are rewritten on every transition; free room
# in each page lets PostgreSQL update in place (a HOT update) more often.
DDL = (
    "CREATE TABLE IF NOT EXISTS overhop_meta (name text PRIMARY KEY, value integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS overhop_kv (space smallint NOT NULL, key bytea NOT NULL, "
    "value bytea NOT NULL, PRIMARY KEY (space, key)) WITH (fillfactor = 70)",
    "ALTER TABLE overhop_kv SET (autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.05)",
)
# The cluster (docs/cluster.md): the brokers alive (each renews its row), and each queue's
# owner. `epoch` grows with every change of owner and never goes back, even when the queue
# is removed (the row stays, ownerless), so a fenced write can never match a later owner's.
# Lease ends are on the database's clock, the one clock every broker shares.
CLUSTER_DDL = (
    "CREATE TABLE IF NOT EXISTS overhop_nodes (node_id text PRIMARY KEY, "
    "address text NOT NULL, lease_until timestamptz NOT NULL)",
    "CREATE TABLE IF NOT EXISTS overhop_owners (queue text PRIMARY KEY, owner text, "
    "epoch bigint NOT NULL, lease_until timestamptz NOT NULL)",
)


class SchemaError(Exception):
    """The database holds a schema this server cannot use; str() is one line."""


def prepare(conn: psycopg.Connection) -> bool:
    """Create the schema on first use, else check its versions (adding what version 2
    added to a version-1 database); True if it was created. One transaction, under the
    schema lock, so brokers starting together never create it twice."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        existing = conn.execute("SELECT to_regclass('overhop_meta') IS NOT NULL").fetchone()
        if existing is None or not existing[0]:
            for statement in (*DDL, *CLUSTER_DDL):
                conn.execute(statement)
            conn.execute("INSERT INTO overhop_meta VALUES ('schema_version', %s)",
                         (SCHEMA_VERSION,))
            conn.execute("INSERT INTO overhop_kv VALUES (%s, %s, %s)",
                         (Space.META, keys.META_LAYOUT_VERSION, bytes((keys.LAYOUT_VERSION,))))
            return True
        row = conn.execute(
            "SELECT value FROM overhop_meta WHERE name = 'schema_version'").fetchone()
        if row is not None and row[0] == 1:
            for statement in CLUSTER_DDL:
                conn.execute(statement)
            conn.execute("UPDATE overhop_meta SET value = %s WHERE name = 'schema_version'",
                         (SCHEMA_VERSION,))
            row = (SCHEMA_VERSION,)
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
