"""Migrations of the key layout, run by the store's owner when it opens an older store.

Each runs in bounded write transactions and writes the new layout version last, so one
interrupted (a crash, a kill) is redone, from where it stopped, at the next start.

- 1 -> 2: `waiting` entries of `by_status` gain a priority rank byte before the uuid7
  (every job of a version-1 store has the default priority). Version-1 entries are one
  byte shorter than version-2 ones, which is how a resumed migration tells them apart.
"""

import lmdb

from overhop.model.jobs import JobStatus, priority_rank
from overhop.storage import keys
from overhop.storage import lmdb_reads as reads

# Entries rewritten per write transaction.
MIGRATION_BATCH = 10_000
_WAITING = bytes((JobStatus.WAITING,))
_DEFAULT_RANK = bytes((priority_rank(None),))


def waiting_ranks(env: lmdb.Environment, by_status: "lmdb._Database",
                  meta: "lmdb._Database") -> int:
    """Layout 1 -> 2; the number of entries rewritten."""
    rewritten = 0
    resume = b""
    while True:
        with env.begin(write=True) as txn:
            cursor = txn.cursor(db=by_status)
            old: list[bytes] = []
            if cursor.set_range(resume):
                for key in reads.keys_from(cursor):
                    if len(old) >= MIGRATION_BATCH:
                        break
                    resume = key + b"\x00"
                    name_end = key.index(keys.SEPARATOR)
                    if key[name_end + 1:name_end + 2] == _WAITING and len(key) == name_end + 18:
                        old.append(key)
            for key in old:
                txn.delete(key, db=by_status)
                txn.put(key[:-16] + _DEFAULT_RANK + key[-16:], b"", db=by_status)
            rewritten += len(old)
            if len(old) < MIGRATION_BATCH:
                txn.put(keys.META_LAYOUT_VERSION, bytes((2,)), db=meta)
                return rewritten
