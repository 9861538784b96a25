"""Applying the queue operations and the bounded maintenance and removal steps, in the
writer process (the same contract as `apply_jobs.py`)."""

from typing import Any

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, OverhopError, RequestError
from overhop.model.jobs import AttemptOutcome, JobStatus
from overhop.model.queues import QueueRecord, QueueState
from overhop.storage import keys
from overhop.storage.operations.apply_jobs import end_attempt, queue_or_raise
from overhop.storage.operations.catalogue import (
    AddQueue,
    AdvanceNew,
    Barrier,
    ClearQueueBatch,
    DeleteEmptyQueue,
    ObliterateBatch,
    PromoteDue,
    PruneFinished,
    RecoverActive,
    RemoveQueue,
    SetQueueConfig,
    SetQueueState,
)
from overhop.storage.records import encode_queue
from overhop.storage.store_txn import StoreTxn

# Retention's statuses, and the settings each follows: cancelled jobs are kept as long as
# failed ones (both are jobs that did not do their work; one pair of settings covers them).
RETAINED_STATUSES = ((JobStatus.COMPLETED, "completed"), (JobStatus.FAILED, "failed"),
                     (JobStatus.CANCELLED, "failed"))
# Statuses CLEARQUEUE removes: work not yet started. Active and finished jobs stay.
CLEARABLE_STATUSES = (JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED)

MovedWire = tuple[int, bool, int | None]
RemovedWire = tuple[int, bool, dict[int, int]]


def apply_barrier(txn: StoreTxn, op: Barrier, jobs: JobsConfig) -> None:
    """Writes nothing."""


def apply_add_queue(txn: StoreTxn, op: AddQueue, jobs: JobsConfig) -> bytes:
    record = op.record
    if txn.get_queue(record.name) is not None:
        raise RequestError(ErrorCode.QUEUE_EXISTS, f"queue {record.name!r} already exists")
    txn.put_queue(record)
    return encode_queue(record)


def apply_remove_queue(txn: StoreTxn, op: RemoveQueue, jobs: JobsConfig) -> None:
    queue_or_raise(txn, op.name)
    if txn.queue_job_total(op.name):
        raise RequestError(
            ErrorCode.QUEUE_NOT_EMPTY, f"queue {op.name!r} still has jobs; remove them first"
        )
    txn.delete_queue(op.name)


def apply_set_queue_state(txn: StoreTxn, op: SetQueueState, jobs: JobsConfig) -> bytes:
    updated = queue_or_raise(txn, op.name).with_state(op.state)
    txn.put_queue(updated)
    return encode_queue(updated)


def apply_set_queue_config(txn: StoreTxn, op: SetQueueConfig, jobs: JobsConfig) -> bytes:
    queue = queue_or_raise(txn, op.name)
    updated = QueueRecord(queue.queue_id, queue.name, queue.state, queue.created_at_ms,
                          op.config)
    txn.put_queue(updated)
    limit = op.config.group_concurrency_limit
    if limit != queue.config.group_concurrency_limit:
        txn.groups.replace_all(keys.queue_prefix(op.name), limit)
    return encode_queue(updated)


# -- maintenance -----------------------------------------------------------------------


def _queue_active(txn: StoreTxn, name: str) -> bool:
    queue = txn.get_queue(name)
    return queue is not None and queue.state == QueueState.ACTIVE


def apply_promote_due(txn: StoreTxn, op: PromoteDue, jobs: JobsConfig) -> MovedWire:
    """Delayed jobs whose time has come become waiting (the queue must be active)."""
    if not _queue_active(txn, op.queue_name):
        return 0, False, None
    job_ids = txn.due_job_ids(op.queue_name, op.now_ms, op.limit + 1)
    for job_id in job_ids[:op.limit]:
        txn.move_job(txn.indexed_job(job_id), JobStatus.WAITING)
    return (min(len(job_ids), op.limit), len(job_ids) > op.limit,
            txn.first_due_ms(op.queue_name))


def apply_advance_new(txn: StoreTxn, op: AdvanceNew, jobs: JobsConfig) -> MovedWire:
    """Jobs enqueued while their queue was paused become waiting or delayed."""
    if not _queue_active(txn, op.queue_name):
        return 0, False, None
    job_ids = txn.oldest_job_ids(op.queue_name, JobStatus.NEW, op.limit + 1)
    for job_id in job_ids[:op.limit]:
        job = txn.indexed_job(job_id)
        txn.move_job(job, JobStatus.WAITING if job.execution_start_at_ms <= op.now_ms
                     else JobStatus.DELAYED)
    return (min(len(job_ids), op.limit), len(job_ids) > op.limit,
            txn.first_due_ms(op.queue_name))


def apply_recover_active(txn: StoreTxn, op: RecoverActive, jobs: JobsConfig) -> MovedWire:
    """At boot, every active job lost its worker with the old process: end the attempt."""
    job_ids = txn.oldest_job_ids(op.queue_name, JobStatus.ACTIVE, op.limit + 1)
    for job_id in job_ids[:op.limit]:
        delivery_id = txn.indexed_job(job_id).delivery_id
        if delivery_id is None:
            raise RuntimeError(f"active index names a job without a delivery: {job_id}")
        end_attempt(txn, job_id, delivery_id, AttemptOutcome.SERVER_RESTART, op.now_ms,
                    None, jobs)
    return (min(len(job_ids), op.limit), len(job_ids) > op.limit,
            txn.first_due_ms(op.queue_name))


# -- removal ---------------------------------------------------------------------------


def _remove_batch(txn: StoreTxn, queue_name: str, statuses: tuple[JobStatus, ...],
                  limit: int, before: bytes | None = None) -> RemovedWire:
    """Remove up to `limit` jobs of these statuses, oldest first; with `before`, only jobs
    whose uuid sorts below it (jobs that existed when the request was handled)."""
    removed: dict[int, int] = {}
    budget = limit
    for status in statuses:
        job_ids = txn.oldest_job_ids(queue_name, status, budget, before=before)
        for job_id in job_ids:
            txn.delete_job(txn.indexed_job(job_id))
        removed[status] = len(job_ids)
        budget -= len(job_ids)
        if budget <= 0:
            break
    more = any(txn.oldest_job_ids(queue_name, status, 1, before=before) for status in statuses)
    return limit - budget, more, removed


def apply_clear_queue_batch(txn: StoreTxn, op: ClearQueueBatch, jobs: JobsConfig
                            ) -> RemovedWire:
    """Up to `limit` new, waiting and delayed jobs created before the boundary uuid
    `before` (a bounded step of CLEARQUEUE)."""
    queue_or_raise(txn, op.queue_name)
    return _remove_batch(txn, op.queue_name, CLEARABLE_STATUSES, op.limit, op.before)


def apply_obliterate_batch(txn: StoreTxn, op: ObliterateBatch, jobs: JobsConfig
                           ) -> RemovedWire:
    """Up to `limit` jobs of any status (a bounded step of OBLITERATE)."""
    queue_or_raise(txn, op.queue_name)
    return _remove_batch(txn, op.queue_name, tuple(JobStatus), op.limit)


def apply_delete_empty_queue(txn: StoreTxn, op: DeleteEmptyQueue, jobs: JobsConfig) -> None:
    """The last step of OBLITERATE: the queue record and its counters."""
    queue_or_raise(txn, op.queue_name)
    if txn.queue_job_total(op.queue_name):
        raise RuntimeError(f"queue {op.queue_name} still has jobs")
    txn.delete_queue(op.queue_name)


def apply_prune_finished(txn: StoreTxn, op: PruneFinished, jobs: JobsConfig) -> RemovedWire:
    """Retention: remove completed, failed and cancelled jobs beyond the queue's count and
    age limits (cancelled ones under the failed settings, counted apart), earliest finished
    first, at most `limit` in this step."""
    queue_name, config = op.queue_name, op.config
    budget = op.limit
    removed: dict[int, int] = {}
    more = False
    for status, prefix in RETAINED_STATUSES:
        max_count = getattr(config, f"{prefix}_max_count")
        max_age = getattr(config, f"{prefix}_max_age_ms")
        if max_count is None and max_age is None:
            continue
        excess = 0
        if max_count is not None:
            excess = max(0, txn.count(queue_name, status) - max_count)
        cutoff = op.now_ms - max_age if max_age is not None else -1
        count = 0
        for finished_ms, job_id in txn.finished_job_ids(queue_name, status, budget + 1):
            if count >= budget:
                more = True
                break
            if count >= excess and finished_ms > cutoff:
                break
            txn.delete_job(txn.indexed_job(job_id))
            count += 1
        removed[status] = count
        budget -= count
    return op.limit - budget, more, removed


def apply_ownership(txn: StoreTxn, op: Any, jobs: JobsConfig) -> None:
    """CLAIM_QUEUE and RELEASE_QUEUE reach this only on a writer without a cluster: the
    PostgreSQL writer of a broker with `cluster.node_id` carries them out itself."""
    raise OverhopError(ErrorCode.INTERNAL,
                       "queue ownership needs a cluster (cluster.node_id, postgres engine)")
