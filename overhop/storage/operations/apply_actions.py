"""Applying CANCEL and BULK's batches, in the writer process (the same contract as
`apply_jobs.py`: everything is checked before the first write)."""

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import CANCELLABLE_NOW, JobStatus
from overhop.model.queues import QueueState
from overhop.storage import keys
from overhop.storage.operations.apply_jobs import job_or_raise, queue_or_raise
from overhop.storage.operations.catalogue_actions import (
    CancelJob,
    CancelJobsBatch,
    RemoveJobsBatch,
    RetryFailedBatch,
)
from overhop.storage.records import encode_job
from overhop.storage.store_txn import StoreTxn

BatchWire = tuple[int, bool, bytes | None]


def apply_cancel_job(txn: StoreTxn, op: CancelJob, jobs: JobsConfig) -> bytes:
    job = job_or_raise(txn, op.job_id)
    if job.status in CANCELLABLE_NOW:
        return txn.move_job(job, JobStatus.CANCELLED, cancel_reason=op.reason,
                            finished_at_ms=op.now_ms)
    if job.status == JobStatus.ACTIVE and job.cancel_reason is None:
        return txn.move_job(job, JobStatus.ACTIVE, cancel_reason=op.reason)
    if job.status in (JobStatus.ACTIVE, JobStatus.CANCELLED):
        return encode_job(job)  # cancelled, or being cancelled, already: nothing to do
    raise RequestError(ErrorCode.JOB_STATUS_CONFLICT,
                       f"job {op.job_id!r} is {job.status.label}: it has ended already")


def _range(txn: StoreTxn, queue_name: str, status: JobStatus, limit: int, before: bytes,
           after: bytes | None) -> tuple[list[str], bool]:
    """The next `limit` job ids of the batch's range, and whether more follow them."""
    queue_or_raise(txn, queue_name)
    # Every job a batch takes leaves `waiting`, so its batches need no `after` (and its
    # entries, in priority order, could not be walked by uuid).
    job_ids = txn.oldest_job_ids(queue_name, status, limit + 1, before=before,
                                 after=None if status == JobStatus.WAITING else after)
    return job_ids[:limit], len(job_ids) > limit


def _result(job_ids: list[str], more: bool) -> BatchWire:
    return len(job_ids), more, keys.job_uuid_bytes(job_ids[-1]) if job_ids else None


def apply_retry_failed_batch(txn: StoreTxn, op: RetryFailedBatch, jobs: JobsConfig
                             ) -> BatchWire:
    job_ids, more = _range(txn, op.queue_name, JobStatus.FAILED, op.limit, op.before,
                           op.after)
    queue = queue_or_raise(txn, op.queue_name)
    status = JobStatus.WAITING if queue.state == QueueState.ACTIVE else JobStatus.NEW
    for job_id in job_ids:
        txn.move_job(txn.indexed_job(job_id), status, attempts_so_far=0, finished_at_ms=None,
                     execution_start_at_ms=op.now_ms)
    return _result(job_ids, more)


def apply_remove_jobs_batch(txn: StoreTxn, op: RemoveJobsBatch, jobs: JobsConfig
                            ) -> BatchWire:
    job_ids, more = _range(txn, op.queue_name, op.status, op.limit, op.before, op.after)
    for job_id in job_ids:
        txn.delete_job(txn.indexed_job(job_id))
    return _result(job_ids, more)


def apply_cancel_jobs_batch(txn: StoreTxn, op: CancelJobsBatch, jobs: JobsConfig
                            ) -> BatchWire:
    job_ids, more = _range(txn, op.queue_name, op.status, op.limit, op.before, op.after)
    for job_id in job_ids:
        txn.move_job(txn.indexed_job(job_id), JobStatus.CANCELLED, cancel_reason=op.reason,
                     finished_at_ms=op.now_ms)
    return _result(job_ids, more)
