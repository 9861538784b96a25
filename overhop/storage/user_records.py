"""User records on disk: the codec, and the reads the server makes at boot.

A user record is the format byte and a MessagePack array: name, salt, iterations,
StoredKey, ServerKey, permissions (`verb:pattern` strings, sorted), created_at_ms. New
fields are appended with a default, as for the other records (records.py).
"""

from typing import Any

import msgpack

from overhop.auth.permissions import Permission, Verb
from overhop.auth.scram import Credentials
from overhop.auth.users import UserRecord
from overhop.storage import keys
from overhop.storage.records import RECORD_FORMAT, RecordFormatError
from overhop.storage.store import Store
from overhop.storage.store_txn import StoreTxn

_FORMAT_BYTE = bytes((RECORD_FORMAT,))


def encode_user(user: UserRecord) -> bytes:
    c = user.credentials
    body: bytes = msgpack.packb(
        [user.name, c.salt, c.iterations, c.stored_key, c.server_key,
         sorted(str(p) for p in user.permissions), user.created_at_ms], use_bin_type=True)
    return _FORMAT_BYTE + body


def decode_user(data: bytes) -> UserRecord:
    if not data or data[0] != RECORD_FORMAT:
        raise RecordFormatError(f"unknown user record format {data[:1]!r}")
    fields: list[Any] = msgpack.unpackb(data[1:], raw=False)
    name, salt, iterations, stored_key, server_key, permissions, created_at_ms = fields[:7]
    return UserRecord(name, Credentials(salt, iterations, stored_key, server_key),
                      frozenset(permission_of(text) for text in permissions), created_at_ms)


def permission_of(text: str) -> Permission:
    verb, _, pattern = text.partition(":")
    return Permission(Verb(verb), pattern)


def load_users(store: Store) -> tuple[list[UserRecord], bytes | None]:
    """Every user, and the server's secret (None before the first boot that made one)."""
    users: list[UserRecord] = []
    secret: bytes | None = None
    with store.env.begin(db=store.users_db) as txn:
        for key, value in txn.cursor():
            if key == keys.USERS_SECRET:
                secret = bytes(value)
            else:
                users.append(decode_user(bytes(value)))
    return users, secret


# -- writes (in the writer process, inside an operation) ---------------------------------


def get_user(txn: StoreTxn, name: str) -> UserRecord | None:
    data = txn.txn.get(name.encode(), db=txn._store.users_db)
    return None if data is None else decode_user(bytes(data))


def put_user(txn: StoreTxn, user: UserRecord) -> None:
    txn.txn.put(user.name.encode(), encode_user(user), db=txn._store.users_db)


def delete_user(txn: StoreTxn, name: str) -> None:
    txn.txn.delete(name.encode(), db=txn._store.users_db)


def ensure_secret(txn: StoreTxn, candidate: bytes) -> bytes:
    """The stored secret, storing `candidate` first if there is none (with the first
    user: until then the server keeps a secret in memory)."""
    db = txn._store.users_db
    stored = txn.txn.get(keys.USERS_SECRET, db=db)
    if stored is not None:
        return bytes(stored)
    txn.txn.put(keys.USERS_SECRET, candidate, db=db)
    return candidate
