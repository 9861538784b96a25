"""One write transaction over `overhop_kv`, with the calls of an LMDB write transaction.

The LMDB engine's write primitives (`StoreTxn`, `GroupBook`, the operations) use five calls
of `lmdb.Transaction`: `get`, `put`, `delete`, `cursor` and, on a cursor, `set_range`,
`key`, `value` and forward iteration. `PgKv` gives them the same meaning over PostgreSQL,
so every operation runs the same code on both engines and cannot drift from LMDB's results
and refusals.

Writes are not sent as they happen: they gather in memory (the *overlay*, per space, last
write wins) and go to the database at the end of the batch as two set-based statements, one
multi-row upsert and one multi-row delete (`flush`). Reads see the database as of this
transaction merged with the overlay, so each operation sees every earlier one. Point reads
are cached for the transaction (this process is the only writer, so a value read cannot
change under it); `prefetch` reads many keys in one statement; a cursor reads the index in
growing chunks from its seek key, in key order, through the primary key.
"""

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

_GET = "SELECT value FROM overhop_kv WHERE space = %s AND key = %s"
_GET_MANY = "SELECT key, value FROM overhop_kv WHERE space = %s AND key = ANY(%s)"
_RANGE = ("SELECT key, value FROM overhop_kv WHERE space = %s AND key >= %s "
          "ORDER BY key LIMIT %s")
_RANGE_AFTER = ("SELECT key, value FROM overhop_kv WHERE space = %s AND key > %s "
                "ORDER BY key LIMIT %s")
_UPSERT = ("INSERT INTO overhop_kv (space, key, value) "
           "SELECT * FROM unnest(%s::smallint[], %s::bytea[], %s::bytea[]) "
           "ON CONFLICT (space, key) DO UPDATE SET value = excluded.value")
_DELETE = ("DELETE FROM overhop_kv AS t USING unnest(%s::smallint[], %s::bytea[]) AS d(space, key) "
           "WHERE t.space = d.space AND t.key = d.key")

# A cursor's first read takes 16 rows (most seeks want one or a few: the head of a FIFO, a
# group's turn); each further read doubles, up to 1024, so a long scan costs few round trips.
FIRST_CHUNK = 16
MAX_CHUNK = 1024


class PgKv:
    """The LMDB write-transaction calls over one PostgreSQL transaction (see the module)."""

    __slots__ = ("_cached", "_cur", "_sorted", "_written")

    def __init__(self, conn: psycopg.Connection) -> None:
        self._cur = conn.cursor()
        self._written: dict[int, dict[bytes, bytes | None]] = {}  # None: deleted
        self._sorted: dict[int, list[bytes]] = {}  # the overlay's keys per space, in order
        self._cached: dict[int, dict[bytes, bytes | None]] = {}  # database values read

    @property
    def cursor_of_transaction(self) -> "psycopg.Cursor[Any]":
        """The cursor this transaction's statements run on (for the cluster's fence)."""
        return self._cur

    def get(self, key: bytes, default: Any = None, db: int = 0) -> bytes | None:
        written = self._written.get(db)
        if written is not None and key in written:
            value = written[key]
            return default if value is None else value
        cached = self._cached.setdefault(db, {})
        if key in cached:
            value = cached[key]
        else:
            row = self._cur.execute(_GET, (db, key)).fetchone()
            value = cached[key] = None if row is None else row[0]
        return default if value is None else value

    def prefetch(self, db: int, wanted: Iterable[bytes]) -> None:
        """Read every key not known yet in one statement (the job records a dispatch or a
        batch of completions names)."""
        written = self._written.get(db, {})
        cached = self._cached.setdefault(db, {})
        missing = [key for key in wanted if key not in written and key not in cached]
        if not missing:
            return
        for key in missing:
            cached[key] = None
        for key, value in self._cur.execute(_GET_MANY, (db, missing)):
            cached[key] = value

    def put(self, key: bytes, value: bytes, db: int = 0) -> bool:
        self._write(db, key, value)
        return True

    def delete(self, key: bytes, db: int = 0) -> bool:
        self._write(db, key, None)
        return True

    def _write(self, db: int, key: bytes, value: bytes | None) -> None:
        written = self._written.setdefault(db, {})
        if key not in written:
            insort(self._sorted.setdefault(db, []), key)
        written[key] = value

    def cursor(self, db: int = 0) -> "PgKvCursor":
        return PgKvCursor(self, db)

    def read_range(self, db: int, start: bytes, after: bool, limit: int
                   ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` database rows (not the overlay) from `start` on, in key order."""
        rows = self._cur.execute(_RANGE_AFTER if after else _RANGE, (db, start, limit))
        return [(key, value) for key, value in rows]

    def overlay_from(self, db: int, key: bytes, after: bool) -> tuple[bytes, bytes] | None:
        """The first key written (not deleted) in this transaction at or after `key`."""
        ordered = self._sorted.get(db)
        if not ordered:
            return None
        written = self._written[db]
        index = bisect_right(ordered, key) if after else bisect_left(ordered, key)
        for found in ordered[index:]:
            value = written[found]
            if value is not None:
                return found, value
        return None

    def overlaid(self, db: int, key: bytes) -> bool:
        written = self._written.get(db)
        return written is not None and key in written

    def flush(self) -> None:
        """Send the overlay: one multi-row delete, one multi-row upsert."""
        spaces: list[int] = []
        names: list[bytes] = []
        values: list[bytes] = []
        gone_spaces: list[int] = []
        gone: list[bytes] = []
        for db, written in self._written.items():
            for key, value in written.items():
                if value is None:
                    gone_spaces.append(db)
                    gone.append(key)
                else:
                    spaces.append(db)
                    names.append(key)
                    values.append(value)
        if gone:
            self._cur.execute(_DELETE, (gone_spaces, gone))
        if names:
            self._cur.execute(_UPSERT, (spaces, names, values))
        self._written.clear()
        self._sorted.clear()


class PgKvCursor:
    """An LMDB-like cursor over one space: the database's rows merged with the overlay."""

    __slots__ = ("_chunk", "_db", "_done", "_keys", "_kv", "_lo", "_position", "_values")

    def __init__(self, kv: PgKv, db: int) -> None:
        self._kv = kv
        self._db = db
        self._position: tuple[bytes, bytes] | None = None
        # Database rows read: contiguous from `_lo` on; `_done` when they reach the end.
        self._lo: bytes | None = None
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._done = False
        self._chunk = FIRST_CHUNK

    def set_range(self, key: bytes) -> bool:
        self._position = self._seek(key, after=False)
        return self._position is not None

    def first(self) -> bool:
        return self.set_range(b"")

    def next(self) -> bool:
        if self._position is None:
            return self.first()
        self._position = self._seek(self._position[0], after=True)
        return self._position is not None

    def key(self) -> bytes:
        return b"" if self._position is None else self._position[0]

    def value(self) -> bytes:
        return b"" if self._position is None else self._position[1]

    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        if self._position is None and not self.first():
            return
        while self._position is not None:
            key, value = self._position
            if keys and values:
                yield key, value
            elif keys:
                yield key
            else:
                yield value
            if not self.next():
                return

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.iternext()

    def _seek(self, key: bytes, *, after: bool) -> tuple[bytes, bytes] | None:
        kv, db = self._kv, self._db
        stored = self._stored_from(key, after)
        while stored is not None and kv.overlaid(db, stored[0]):
            stored = self._stored_from(stored[0], True)
        written = kv.overlay_from(db, key, after)
        if stored is None:
            return written
        if written is None or stored[0] < written[0]:
            return stored
        return written

    def _stored_from(self, key: bytes, after: bool) -> tuple[bytes, bytes] | None:
        """The first database row at or after `key`, reading more as needed."""
        keys = self._keys
        if (self._lo is None or key < self._lo
                or (keys and key > keys[-1] and not self._done)):
            # Outside the rows read: read from `key` (a seek past them does not read what
            # lies between, so one cursor serves seeks anywhere in its space).
            self._lo = key
            self._keys, self._values = [], []
            self._chunk = FIRST_CHUNK
            self._read(key, False)  # from `key` itself, so later seeks at `key` are covered
        while True:
            keys = self._keys
            index = bisect_right(keys, key) if after else bisect_left(keys, key)
            if index < len(keys):
                return keys[index], self._values[index]
            if self._done:
                return None
            self._read(keys[-1], True)  # not done: the last read filled its chunk

    def _read(self, start: bytes, after: bool) -> None:
        rows = self._kv.read_range(self._db, start, after, self._chunk)
        self._done = len(rows) < self._chunk
        self._chunk = min(self._chunk * 2, MAX_CHUNK)
        for key, value in rows:
            self._keys.append(key)
            self._values.append(value)
