"""Typed reads of LMDB cursors and counters, shared by the store's reads and its writes.

This store never asks LMDB for buffers, so every key and value it reads is `bytes` (the
`lmdb` type stubs also allow memoryview): these helpers say so to the type checker.
"""

from collections.abc import Iterator
from typing import cast

import lmdb

from overhop.storage import keys
from overhop.storage.keys import U64


def get(txn: lmdb.Transaction, key: bytes, db: "lmdb._Database") -> bytes | None:
    return cast("bytes | None", txn.get(key, db=db))


def key_at(cursor: lmdb.Cursor) -> bytes:
    return cast(bytes, cursor.key())


def value_at(cursor: lmdb.Cursor) -> bytes:
    return cast(bytes, cursor.value())


def keys_from(cursor: lmdb.Cursor) -> Iterator[bytes]:
    """The keys from the cursor's position on."""
    return cast("Iterator[bytes]", cursor.iternext(values=False))


def items_from(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    return cast("Iterator[tuple[bytes, bytes]]", iter(cursor))


def rank_heads(cursor: lmdb.Cursor, prefix: bytes, below: int = 256) -> Iterator[bytes]:
    """The first key of each priority rank under a `waiting` prefix (the rank byte follows
    the prefix), best rank first, ranks below `below` only: one seek per rank present."""
    start = prefix
    while cursor.set_range(start):
        key = key_at(cursor)
        if not key.startswith(prefix):
            return
        rank = key[len(prefix)]
        if rank >= below:
            return
        yield key
        if rank == 255:
            return
        start = prefix + bytes((rank + 1,))


def oldest_waiting_key(cursor: lmdb.Cursor, prefix: bytes, below: int = 256) -> bytes | None:
    """The `waiting` entry of the job created first, whatever its priority (of the ranks
    below `below`)."""
    return min(rank_heads(cursor, prefix, below), key=lambda key: key[-16:], default=None)


def count(txn: lmdb.Transaction, db: lmdb._Database, queue_name: str, status: int) -> int:
    data = txn.get(keys.counter_key(queue_name, status), db=db)
    return 0 if data is None else U64.unpack(data)[0]
