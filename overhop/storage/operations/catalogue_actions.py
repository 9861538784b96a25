"""The job actions' operations: CANCEL of one job, and BULK's bounded batches (retry
failed jobs, remove finished ones, cancel unstarted ones). Part of the closed table in
`catalogue.py`, which lists them with the rest; applied by `apply_actions.py`."""

from dataclasses import dataclass
from typing import Any

from overhop.model.jobs import JobRecord, JobStatus
from overhop.storage.operations.base import Operation, OperationCode
from overhop.storage.records import decode_job


@dataclass(frozen=True, slots=True)
class Batch:
    """What one batch of a BULK action did: jobs acted on, whether more of that status
    remain in the request's range, and the uuid bytes of the last job it looked at (the
    next batch starts after it)."""

    count: int
    more: bool
    after: bytes | None


def _batch(wire: Any) -> Batch:
    return Batch(wire[0], wire[1], wire[2])


@dataclass(frozen=True, slots=True)
class CancelJob(Operation[JobRecord]):
    """CANCEL: a new, waiting or delayed job becomes cancelled; an active one keeps
    running with `reason` stored as the mark that its attempt ends it `cancelled`. A
    cancelled job is returned as it is; a completed or failed one is refused."""

    job_id: str
    reason: str
    now_ms: int
    code = OperationCode.CANCEL_JOB
    subject = "cancelling a job is"

    @staticmethod
    def decode_result(wire: Any) -> JobRecord:
        return decode_job(wire)


@dataclass(frozen=True, slots=True)
class RetryFailedBatch(Operation[Batch]):
    """Up to `limit` failed jobs of the queue, created before the uuid `before` and after
    `after`, wait again (new while the queue is paused) with a fresh set of attempts."""

    queue_name: str
    limit: int
    before: bytes
    after: bytes | None
    now_ms: int
    code = OperationCode.RETRY_FAILED_BATCH
    subject = "retrying jobs is"
    decode_result = staticmethod(_batch)


@dataclass(frozen=True, slots=True)
class RemoveJobsBatch(Operation[Batch]):
    """Up to `limit` completed, failed or cancelled jobs (`status`) removed, in the same
    range as `RetryFailedBatch`."""

    queue_name: str
    status: JobStatus
    limit: int
    before: bytes
    after: bytes | None
    code = OperationCode.REMOVE_JOBS_BATCH
    subject = "removing jobs is"
    decode_result = staticmethod(_batch)

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "RemoveJobsBatch":
        return cls(wire[1], JobStatus(wire[2]), wire[3], wire[4], wire[5])


@dataclass(frozen=True, slots=True)
class CancelJobsBatch(Operation[Batch]):
    """Up to `limit` new, waiting or delayed jobs (`status`) cancelled with `reason`, in
    the same range as `RetryFailedBatch`."""

    queue_name: str
    status: JobStatus
    limit: int
    before: bytes
    after: bytes | None
    reason: str
    now_ms: int
    code = OperationCode.CANCEL_JOBS_BATCH
    subject = "cancelling jobs is"
    decode_result = staticmethod(_batch)

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "CancelJobsBatch":
        return cls(wire[1], JobStatus(wire[2]), wire[3], wire[4], wire[5], wire[6], wire[7])
