"""Applying the user operations in the writer process (the same contract as
`apply_jobs.py`: refuse with `OverhopError` before writing anything)."""

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.storage.operations.catalogue import (
    AddUser,
    RemoveUser,
    SetUserPermissions,
)
from overhop.storage.store_txn import StoreTxn
from overhop.storage.user_records import (
    decode_user,
    delete_user,
    ensure_secret,
    get_user,
    permission_of,
    put_user,
)


def apply_add_user(txn: StoreTxn, op: AddUser, jobs: JobsConfig) -> None:
    user = decode_user(op.record)
    if get_user(txn, user.name) is not None:
        raise RequestError(ErrorCode.USER_EXISTS, f"user {user.name!r} already exists")
    ensure_secret(txn, op.secret)
    put_user(txn, user)


def apply_remove_user(txn: StoreTxn, op: RemoveUser, jobs: JobsConfig) -> None:
    if get_user(txn, op.name) is None:
        raise RequestError(ErrorCode.USER_NOT_FOUND, f"no user {op.name!r}")
    delete_user(txn, op.name)


def apply_set_user_permissions(txn: StoreTxn, op: SetUserPermissions, jobs: JobsConfig
                               ) -> None:
    user = get_user(txn, op.name)
    if user is None:
        raise RequestError(ErrorCode.USER_NOT_FOUND, f"no user {op.name!r}")
    put_user(txn, user.with_permissions(frozenset(permission_of(p) for p in op.permissions)))
