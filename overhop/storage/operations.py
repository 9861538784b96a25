"""Write operations, run in the writer process: each takes the batch's `StoreTxn` first.

The server submits an operation as the function and its arguments
(`writer.submit(job_ops.enqueue, job)`); both cross to the writer process by pickle, so an
operation is a module-level function and its arguments and result are plain data
(records, dataclasses, numbers, strings).

Each operation checks everything it needs before its first write and raises
`RequestError` only then (the writer's contract), so that a refused operation never leaves
half a change in the shared transaction. Each returns what the event loop needs to update
its in-memory view after the commit.
"""

import random
from dataclasses import dataclass
from typing import Any

from overhop.config.schema import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import REMOVABLE_STATUSES, AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import JobPolicy, QueueConfig, QueueRecord, QueueState, resolve_policy
from overhop.model.retry import plan_after_attempt
from overhop.storage.store import FINISHED_STATUSES, StoreTxn, index_state

_rng = random.Random()


def job_policy(job: JobRecord, config: QueueConfig, jobs: JobsConfig) -> JobPolicy:
    """The settings in force for `job` now: its overrides, its queue's, the defaults."""
    return resolve_policy(job.max_attempts, job.retry_interval_ms, job.lease_ms, config,
                          jobs.default_max_attempts, jobs.default_retry_interval_ms,
                          jobs.default_lease_ms)


def _queue_or_raise(txn: StoreTxn, name: str) -> QueueRecord:
    queue = txn.get_queue(name)
    if queue is None:
        raise _queue_not_found(name)
    return queue


def _require_queue(txn: StoreTxn, name: str) -> None:
    """As `_queue_or_raise`, without decoding the record (the enqueue path)."""
    if not txn.queue_exists(name):
        raise _queue_not_found(name)


def _queue_not_found(name: str) -> RequestError:
    return RequestError(ErrorCode.QUEUE_NOT_FOUND, f"queue {name!r} does not exist")


def barrier(txn: StoreTxn) -> None:
    """Writes nothing: its future resolves once everything submitted before it is durable
    (a way to wait for the writer)."""


# -- queues ------------------------------------------------------------------------------


def add_queue(txn: StoreTxn, record: QueueRecord) -> QueueRecord:
    if txn.get_queue(record.name) is not None:
        raise RequestError(ErrorCode.QUEUE_EXISTS, f"queue {record.name!r} already exists")
    txn.put_queue(record)
    return record


def remove_queue(txn: StoreTxn, name: str) -> None:
    _queue_or_raise(txn, name)
    if txn.queue_job_total(name):
        raise RequestError(
            ErrorCode.QUEUE_NOT_EMPTY, f"queue {name!r} still has jobs; remove them first"
        )
    txn.delete_queue(name)


def set_queue_state(txn: StoreTxn, name: str, state: QueueState) -> QueueRecord:
    queue = _queue_or_raise(txn, name)
    updated = queue.with_state(state)
    txn.put_queue(updated)
    return updated


# -- jobs --------------------------------------------------------------------------------


def enqueue(txn: StoreTxn, job: JobRecord) -> str:
    """A new job; its id (the server holds the record already)."""
    _require_queue(txn, job.queue_name)
    txn.insert_job(job)
    return job.job_id


def enqueue_many(txn: StoreTxn, queue_name: str, jobs: list[JobRecord]) -> list[str]:
    """New jobs of one queue, all in this transaction; their ids in order."""
    _require_queue(txn, queue_name)
    for job in jobs:
        txn.insert_job(job)
    return [job.job_id for job in jobs]


@dataclass(frozen=True, slots=True)
class Taken:
    """What a dispatch took: the jobs now active (in order) and the waiting jobs left."""

    jobs: list[JobRecord]
    waiting_left: int


def take_waiting(txn: StoreTxn, queue_name: str, assignments: list[tuple[str, str]],
                 now_ms: int, guards: list[tuple[str, str]]) -> Taken:
    """Move the oldest waiting jobs to active, one per (delivery id, worker id).

    `guards` are (delivery id, job id) of deliveries whose ends were written before this
    (earlier in this transaction or before it) and whose concurrency slots this dispatch
    uses: if one of those jobs is still active with that delivery, its end failed and the
    slot is not free, so nothing is taken."""
    taken: list[JobRecord] = []
    for delivery_id, job_id in guards:
        job = txn.get_job(job_id)
        if job is not None and job.status == JobStatus.ACTIVE and job.delivery_id == delivery_id:
            return Taken(taken, txn.count(queue_name, JobStatus.WAITING))
    job_ids = txn.oldest_job_ids(queue_name, JobStatus.WAITING, len(assignments))
    for job_id, (delivery_id, worker_id) in zip(job_ids, assignments, strict=False):
        job = txn.get_job(job_id)
        if job is None:
            raise RuntimeError(f"index names missing job {job_id}")
        before = index_state(job)
        job.status = JobStatus.ACTIVE
        job.delivery_id = delivery_id
        job.worker_id = worker_id
        job.started_at_ms = now_ms
        txn.update_job(job, before)
        taken.append(job)
    return Taken(taken, txn.count(queue_name, JobStatus.WAITING))


def _current_delivery(txn: StoreTxn, job_id: str, delivery_id: str) -> JobRecord:
    job = txn.get_job(job_id)
    if job is None or job.status != JobStatus.ACTIVE or job.delivery_id != delivery_id:
        raise RequestError(
            ErrorCode.DELIVERY_STALE, f"delivery {delivery_id} of {job_id} is no longer current"
        )
    return job


def _history_entry(job: JobRecord, outcome: AttemptOutcome, now_ms: int,
                   error: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": job.attempts_so_far + 1,
        "counted": outcome.uses_attempt,
        "outcome": outcome.label,
        "worker_id": job.worker_id,
        "delivery_id": job.delivery_id,
        "started_at_ms": job.started_at_ms,
        "ended_at_ms": now_ms,
    }
    if error is not None:
        entry["error"] = error
    return entry


def _append_history(job: JobRecord, entry: dict[str, Any], keep: int) -> None:
    job.history.append(entry)
    if len(job.history) > keep:
        del job.history[: len(job.history) - keep]


def complete(txn: StoreTxn, job_id: str, delivery_id: str, result: bytes | None,
             now_ms: int, history_limit: int) -> None:
    job = _current_delivery(txn, job_id, delivery_id)
    before = index_state(job)
    _append_history(job, _history_entry(job, AttemptOutcome.COMPLETED, now_ms, None),
                    history_limit)
    job.attempts_so_far += 1
    job.status = JobStatus.COMPLETED
    job.result = result
    job.finished_at_ms = now_ms
    job.delivery_id = None
    txn.update_job(job, before)


def end_attempt(txn: StoreTxn, job_id: str, delivery_id: str, outcome: AttemptOutcome,
                now_ms: int, error: dict[str, Any] | None, jobs: JobsConfig) -> JobRecord:
    """An attempt ended without success (FAIL, lease expiry, disconnect...): retry or fail.

    The retry policy is the one in force now (the queue's settings as stored)."""
    job = _current_delivery(txn, job_id, delivery_id)
    queue = txn.get_queue(job.queue_name)
    policy = job_policy(job, queue.config if queue else QueueConfig(), jobs)
    before = index_state(job)
    _append_history(job, _history_entry(job, outcome, now_ms, error),
                    jobs.max_error_history)
    status, start_ms, attempts = plan_after_attempt(job, policy, outcome, now_ms, _rng)
    job.status = status
    job.execution_start_at_ms = start_ms
    job.attempts_so_far = attempts
    job.delivery_id = None
    if status == JobStatus.FAILED:
        job.finished_at_ms = now_ms
    txn.update_job(job, before)
    return job


def retry_failed(txn: StoreTxn, job_id: str, now_ms: int) -> JobRecord:
    """RETRY: a failed job waits again with a fresh set of attempts; its history stays."""
    job = txn.get_job(job_id)
    if job is None:
        raise RequestError(ErrorCode.JOB_NOT_FOUND, f"job {job_id!r} does not exist")
    if job.status != JobStatus.FAILED:
        raise RequestError(ErrorCode.JOB_STATUS_CONFLICT,
                           f"job {job_id!r} is {job.status.label}, not failed")
    queue = _queue_or_raise(txn, job.queue_name)
    before = index_state(job)
    job.status = JobStatus.WAITING if queue.state == QueueState.ACTIVE else JobStatus.NEW
    job.attempts_so_far = 0
    job.finished_at_ms = None
    job.execution_start_at_ms = now_ms
    txn.update_job(job, before)
    return job


def remove_job(txn: StoreTxn, job_id: str) -> JobRecord:
    job = txn.get_job(job_id)
    if job is None:
        raise RequestError(ErrorCode.JOB_NOT_FOUND, f"job {job_id!r} does not exist")
    if job.status not in REMOVABLE_STATUSES:
        raise RequestError(
            ErrorCode.JOB_STATUS_CONFLICT,
            f"job {job_id!r} is {job.status.label}; only new, delayed, failed and "
            "completed jobs can be removed",
        )
    txn.delete_job(job)
    return job


# -- maintenance -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moved:
    """How many jobs a maintenance step moved, whether more remain, the next due time."""

    moved: int
    more: bool
    next_due_ms: int | None


def promote_due(txn: StoreTxn, queue_name: str, now_ms: int, limit: int) -> Moved:
    """Delayed jobs whose time has come become waiting (the queue must be active)."""
    queue = txn.get_queue(queue_name)
    if queue is None or queue.state != QueueState.ACTIVE:
        return Moved(0, False, None)
    job_ids = txn.due_job_ids(queue_name, now_ms, limit + 1)
    for job_id in job_ids[:limit]:
        job = txn.get_job(job_id)
        if job is None:
            raise RuntimeError(f"time index names missing job {job_id}")
        before = index_state(job)
        job.status = JobStatus.WAITING
        txn.update_job(job, before)
    return Moved(min(len(job_ids), limit), len(job_ids) > limit,
                 txn.first_due_ms(queue_name))


def advance_new(txn: StoreTxn, queue_name: str, now_ms: int, limit: int) -> Moved:
    """Jobs enqueued while their queue was paused become waiting or delayed."""
    queue = txn.get_queue(queue_name)
    if queue is None or queue.state != QueueState.ACTIVE:
        return Moved(0, False, None)
    job_ids = txn.oldest_job_ids(queue_name, JobStatus.NEW, limit + 1)
    for job_id in job_ids[:limit]:
        job = txn.get_job(job_id)
        if job is None:
            raise RuntimeError(f"index names missing job {job_id}")
        before = index_state(job)
        job.status = (JobStatus.WAITING if job.execution_start_at_ms <= now_ms
                      else JobStatus.DELAYED)
        txn.update_job(job, before)
    return Moved(min(len(job_ids), limit), len(job_ids) > limit,
                 txn.first_due_ms(queue_name))


def recover_active(txn: StoreTxn, queue_name: str, now_ms: int, limit: int,
                   jobs: JobsConfig) -> Moved:
    """At boot, every active job lost its worker with the old process: end the attempt."""
    job_ids = txn.oldest_job_ids(queue_name, JobStatus.ACTIVE, limit + 1)
    for job_id in job_ids[:limit]:
        job = txn.get_job(job_id)
        if job is None or job.delivery_id is None:
            raise RuntimeError(f"active index names a job without a delivery: {job_id}")
        end_attempt(txn, job_id, job.delivery_id, AttemptOutcome.SERVER_RESTART, now_ms,
                    None, jobs)
    return Moved(min(len(job_ids), limit), len(job_ids) > limit,
                 txn.first_due_ms(queue_name))


# -- queue control ---------------------------------------------------------------------


def set_queue_config(txn: StoreTxn, name: str, config: QueueConfig) -> QueueRecord:
    queue = _queue_or_raise(txn, name)
    updated = QueueRecord(queue.queue_id, queue.name, queue.state, queue.created_at_ms,
                          config)
    txn.put_queue(updated)
    return updated


@dataclass(frozen=True, slots=True)
class Removed:
    """Jobs one bounded removal step deleted, and whether any of its kind remain."""

    removed: int
    more: bool
    counts: dict[JobStatus, int]


# Statuses CLEARQUEUE removes: work not yet started. Active and finished jobs stay.
CLEARABLE_STATUSES = (JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED)


def _remove_batch(txn: StoreTxn, queue_name: str, statuses: tuple[JobStatus, ...],
                  limit: int, before: bytes | None = None) -> Removed:
    """Remove up to `limit` jobs of these statuses, oldest first; with `before`, only jobs
    whose uuid sorts below it (jobs that existed when the request was handled)."""
    removed: dict[JobStatus, int] = {}
    budget = limit
    for status in statuses:
        job_ids = txn.oldest_job_ids(queue_name, status, budget, before=before)
        for job_id in job_ids:
            job = txn.get_job(job_id)
            if job is None:
                raise RuntimeError(f"index names missing job {job_id}")
            txn.delete_job(job)
        removed[status] = len(job_ids)
        budget -= len(job_ids)
        if budget <= 0:
            break
    more = any(txn.oldest_job_ids(queue_name, status, 1, before=before) for status in statuses)
    return Removed(limit - budget, more, removed)


def clear_queue_batch(txn: StoreTxn, queue_name: str, limit: int, before: bytes) -> Removed:
    """Remove up to `limit` new, waiting and delayed jobs created before the boundary uuid
    `before` (a bounded step of CLEARQUEUE)."""
    _queue_or_raise(txn, queue_name)
    return _remove_batch(txn, queue_name, CLEARABLE_STATUSES, limit, before)


def obliterate_batch(txn: StoreTxn, queue_name: str, limit: int) -> Removed:
    """Remove up to `limit` jobs of any status (a bounded step of OBLITERATE)."""
    _queue_or_raise(txn, queue_name)
    return _remove_batch(txn, queue_name, tuple(JobStatus), limit)


def delete_empty_queue(txn: StoreTxn, queue_name: str) -> None:
    """The last step of OBLITERATE: the queue record and its counters."""
    _queue_or_raise(txn, queue_name)
    if txn.queue_job_total(queue_name):
        raise RuntimeError(f"queue {queue_name} still has jobs")
    txn.delete_queue(queue_name)


def prune_finished(txn: StoreTxn, queue_name: str, config: QueueConfig, now_ms: int,
                   limit: int) -> Removed:
    """Retention: remove completed and failed jobs beyond the queue's count and age limits,
    earliest finished first, at most `limit` in this step."""
    budget = limit
    removed: dict[JobStatus, int] = {}
    more = False
    for status in FINISHED_STATUSES:
        prefix = status.label
        max_count = getattr(config, f"{prefix}_max_count")
        max_age = getattr(config, f"{prefix}_max_age_ms")
        if max_count is None and max_age is None:
            continue
        excess = 0
        if max_count is not None:
            excess = max(0, txn.count(queue_name, status) - max_count)
        cutoff = now_ms - max_age if max_age is not None else -1
        count = 0
        for finished_ms, job_id in txn.finished_job_ids(queue_name, status, budget + 1):
            if count >= budget:
                more = True
                break
            if count >= excess and finished_ms > cutoff:
                break
            job = txn.get_job(job_id)
            if job is None:
                raise RuntimeError(f"finish index names missing job {job_id}")
            txn.delete_job(job)
            count += 1
        removed[status] = count
        budget -= count
    return Removed(limit - budget, more, removed)


def append_logs(txn: StoreTxn, job_id: str, delivery_id: str, lines: list[str],
                now_ms: int, jobs: JobsConfig) -> JobRecord:
    """Add log lines to the job held by this delivery; the oldest lines go past the bounds."""
    job = _current_delivery(txn, job_id, delivery_id)
    before = index_state(job)
    job.logs.extend([now_ms, line] for line in lines)
    dropped = max(0, len(job.logs) - jobs.max_log_lines)
    total = sum(len(entry[1].encode()) for entry in job.logs)
    while dropped < len(job.logs) and total > jobs.max_log_bytes:
        total -= len(job.logs[dropped][1].encode())
        dropped += 1
    if dropped:
        del job.logs[:dropped]
        job.logs_dropped += dropped
    txn.update_job(job, before)
    return job
