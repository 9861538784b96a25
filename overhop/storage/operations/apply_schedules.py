"""Applying the schedule operations in the writer process (the same contract as
`apply_jobs.py`: refuse with `OverhopError` before writing anything)."""

from dataclasses import replace

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.storage.operations.schedule_ops import (
    FireSchedule,
    PutSchedule,
    RemoveSchedule,
    SetSchedulePaused,
)
from overhop.storage.schedule_records import delete_schedule, get_schedule, put_schedule
from overhop.storage.store_txn import StoreTxn


def _not_found(name: str) -> RequestError:
    return RequestError(ErrorCode.SCHEDULE_NOT_FOUND, f"no schedule {name!r}")


def apply_put_schedule(txn: StoreTxn, op: PutSchedule, jobs: JobsConfig) -> bytes:
    if not txn.queue_exists(op.record.queue_name):
        raise RequestError(ErrorCode.QUEUE_NOT_FOUND,
                           f"queue {op.record.queue_name!r} does not exist")
    record = op.record
    existing = get_schedule(txn, record.name)
    if existing is not None:  # a fire committed meanwhile must not be forgotten
        record = replace(record, last_fire_ms=existing.last_fire_ms,
                         created_at_ms=existing.created_at_ms)
    return put_schedule(txn, record)


def apply_remove_schedule(txn: StoreTxn, op: RemoveSchedule, jobs: JobsConfig) -> None:
    if get_schedule(txn, op.name) is None:
        raise _not_found(op.name)
    delete_schedule(txn, op.name)


def apply_set_schedule_paused(txn: StoreTxn, op: SetSchedulePaused, jobs: JobsConfig
                              ) -> bytes:
    record = get_schedule(txn, op.name)
    if record is None:
        raise _not_found(op.name)
    return put_schedule(txn, record.with_paused(op.paused, op.now_ms))


def apply_fire_schedule(txn: StoreTxn, op: FireSchedule, jobs: JobsConfig) -> str | None:
    record = get_schedule(txn, op.name)
    if record is None or record.paused or op.occurrence_ms <= record.fired_up_to_ms:
        return None
    if not txn.queue_exists(op.job.queue_name):
        raise RequestError(ErrorCode.QUEUE_NOT_FOUND,
                           f"queue {op.job.queue_name!r} does not exist")
    txn.insert_job(op.job)
    put_schedule(txn, record.with_fire(op.occurrence_ms))
    return op.job.job_id
