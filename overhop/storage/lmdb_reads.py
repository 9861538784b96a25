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


def keys_from(cursor: lmdb.Cursor) -> Iterator[bytes]:
    """The keys from the cursor's position on."""
    return cast("Iterator[bytes]", cursor.iternext(values=False))


def items_from(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    return cast("Iterator[tuple[bytes, bytes]]", iter(cursor))


def count(txn: lmdb.Transaction, db: lmdb._Database, queue_name: str, status: int) -> int:
    data = txn.get(keys.counter_key(queue_name, status), db=db)
    return 0 if data is None else U64.unpack(data)[0]
