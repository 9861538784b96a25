"""Which queue a write acts on: what a cluster's writer checks ownership of before it
commits the write (postgres/fencing.py). None for writes that belong to no queue (users,
schedule records, the barrier) or that settle ownership themselves (adding a queue,
claiming and releasing one)."""

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from overhop.storage.operations.base import Operation, OperationCode


def _of_job_id(op: Any) -> str:
    job_id: str = op.job_id
    return job_id.rsplit(":", 1)[0]


def _of_job(op: Any) -> str:
    name: str = op.job.queue_name
    return name


_by_name: Callable[[Any], str] = attrgetter("name")
_by_queue_name: Callable[[Any], str] = attrgetter("queue_name")

_QUEUE_OF: dict[int, Callable[[Any], str]] = {
    OperationCode.REMOVE_QUEUE: _by_name,
    OperationCode.SET_QUEUE_STATE: _by_name,
    OperationCode.SET_QUEUE_CONFIG: _by_name,
    OperationCode.ENQUEUE: _of_job,
    OperationCode.ENQUEUE_MANY: _by_queue_name,
    OperationCode.TAKE_WAITING: _by_queue_name,
    OperationCode.COMPLETE: _of_job_id,
    OperationCode.END_ATTEMPT: _of_job_id,
    OperationCode.RETRY_FAILED: _of_job_id,
    OperationCode.REMOVE_JOB: _of_job_id,
    OperationCode.PROMOTE_DUE: _by_queue_name,
    OperationCode.ADVANCE_NEW: _by_queue_name,
    OperationCode.RECOVER_ACTIVE: _by_queue_name,
    OperationCode.CLEAR_QUEUE_BATCH: _by_queue_name,
    OperationCode.OBLITERATE_BATCH: _by_queue_name,
    OperationCode.DELETE_EMPTY_QUEUE: _by_queue_name,
    OperationCode.PRUNE_FINISHED: _by_queue_name,
    OperationCode.APPEND_LOGS: _of_job_id,
    OperationCode.CANCEL_JOB: _of_job_id,
    OperationCode.RETRY_FAILED_BATCH: _by_queue_name,
    OperationCode.REMOVE_JOBS_BATCH: _by_queue_name,
    OperationCode.CANCEL_JOBS_BATCH: _by_queue_name,
    OperationCode.FIRE_SCHEDULE: _of_job,
}
# Writes that belong to no queue, or settle its ownership themselves.
UNOWNED = frozenset({
    OperationCode.BARRIER, OperationCode.ADD_QUEUE, OperationCode.ADD_USER,
    OperationCode.REMOVE_USER, OperationCode.SET_USER_PERMISSIONS,
    OperationCode.PUT_SCHEDULE, OperationCode.REMOVE_SCHEDULE,
    OperationCode.SET_SCHEDULE_PAUSED, OperationCode.CLAIM_QUEUE,
    OperationCode.RELEASE_QUEUE,
})
assert not UNOWNED & set(_QUEUE_OF) and UNOWNED | set(_QUEUE_OF) == set(OperationCode), (
    "every operation says whether it acts on a queue")


def queue_of(op: Operation[Any]) -> str | None:
    """The queue the write acts on, None for one that belongs to no queue."""
    of = _QUEUE_OF.get(op.code)
    return None if of is None else of(op)
