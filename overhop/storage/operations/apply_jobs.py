"""Applying the job operations, in the writer process, inside the batch's transaction.

Each `apply_*` checks everything it needs before its first write and raises
`RequestError` only then (the writer's contract), so that a refused operation never leaves
half a change in the shared transaction. Each returns its result in wire form (a job
record as the bytes stored: `StoreTxn.move_job` returns them).
"""

import random
from typing import Any

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import (
    PRIORITY_FAIR_SHARE,
    REMOVABLE_STATUSES,
    AttemptOutcome,
    JobRecord,
    JobStatus,
)
from overhop.model.queues import JobPolicy, QueueConfig, QueueRecord, QueueState, resolve_policy
from overhop.model.retry import plan_after_attempt
from overhop.storage import keys
from overhop.storage.operations.catalogue import (
    AppendLogs,
    Complete,
    EndAttempt,
    Enqueue,
    EnqueueMany,
    ReceivedEnqueue,
    ReceivedEnqueueMany,
    RemoveJob,
    RetryFailed,
    TakeWaiting,
)
from overhop.storage.records import encode_job
from overhop.storage.store_txn import StoreTxn

_rng = random.Random()


def job_policy(job: JobRecord, config: QueueConfig, jobs: JobsConfig) -> JobPolicy:
    """The settings in force for `job` now: its overrides, its queue's, the defaults."""
    return resolve_policy(job.max_attempts, job.retry_interval_ms, job.lease_ms, config,
                          jobs.default_max_attempts, jobs.default_retry_interval_ms,
                          jobs.default_lease_ms)


def queue_or_raise(txn: StoreTxn, name: str) -> QueueRecord:
    queue = txn.get_queue(name)
    if queue is None:
        raise _queue_not_found(name)
    return queue


def _require_queue(txn: StoreTxn, name: str) -> None:
    """As `queue_or_raise`, without decoding the record (the enqueue path)."""
    if not txn.queue_exists(name):
        raise _queue_not_found(name)


def _queue_not_found(name: str) -> RequestError:
    return RequestError(ErrorCode.QUEUE_NOT_FOUND, f"queue {name!r} does not exist")


def job_or_raise(txn: StoreTxn, job_id: str) -> JobRecord:
    job = txn.get_job(job_id)
    if job is None:
        raise RequestError(ErrorCode.JOB_NOT_FOUND, f"job {job_id!r} does not exist")
    return job


def apply_enqueue(txn: StoreTxn, op: Enqueue, jobs: JobsConfig) -> str:
    """The new job's id; for a job whose unique key is held, the holder's id, and nothing
    is added (the check and the insert are in one transaction: no race makes two)."""
    job = op.job
    _require_queue(txn, job.queue_name)
    return _insert_unless_held(txn, job, op.stored if isinstance(op, ReceivedEnqueue) else None)


def apply_enqueue_many(txn: StoreTxn, op: EnqueueMany, jobs: JobsConfig) -> list[str]:
    """Each job's id, or its unique key's holder's (an earlier job of the batch too)."""
    _require_queue(txn, op.queue_name)
    if isinstance(op, ReceivedEnqueueMany):
        return [_insert_unless_held(txn, job, stored)
                for job, stored in zip(op.jobs, op.stored, strict=True)]
    return [_insert_unless_held(txn, job, None) for job in op.jobs]


def _insert_unless_held(txn: StoreTxn, job: JobRecord, stored: bytes | None) -> str:
    if job.unique_key is not None:
        holder = txn.unique_holder(job.queue_name, job.unique_key, job.created_at_ms)
        if holder is not None:
            return holder
    txn.insert_job(job, stored)
    return job.job_id


def apply_take_waiting(txn: StoreTxn, op: TakeWaiting, jobs: JobsConfig
                       ) -> tuple[list[bytes], int, int]:
    """The jobs taken (stored bytes), the waiting jobs left that a later dispatch could
    take, and those held back because their group is at its limit.

    `guards` are (delivery id, job id) of deliveries whose ends were written before this
    (earlier in this transaction or before it) and whose concurrency slots this dispatch
    uses: if one of those jobs is still active with that delivery, its end failed and the
    slot is not free, so nothing is taken."""
    queue_name = op.queue_name
    for delivery_id, job_id in op.guards:
        job = txn.get_job(job_id)
        if job is not None and job.status == JobStatus.ACTIVE and job.delivery_id == delivery_id:
            return [], *_dispatchable(txn, queue_name)
    queue_prefix = keys.queue_prefix(queue_name)
    if txn.groups.turns(queue_prefix) is not None:
        # The queue has had jobs with a group: the groups take turns.
        return _take_in_turns(txn, op, queue_prefix), *_dispatchable(txn, queue_name)
    taken: list[bytes] = []
    ranked = txn.oldest_job_ids(queue_name, JobStatus.WAITING, len(op.assignments))
    chosen: set[str] = set()
    next_ranked = 0
    for index, (delivery_id, worker_id) in enumerate(op.assignments[:len(ranked)]):
        if (op.dispatched + index) % PRIORITY_FAIR_SHARE == PRIORITY_FAIR_SHARE - 1:
            # The fair share: the oldest waiting job, whatever its priority.
            oldest = txn.oldest_waiting_id(queue_name)
            if oldest is None:
                break
            picked = oldest
            chosen.add(picked)
        else:
            while ranked[next_ranked] in chosen:
                next_ranked += 1
            picked = ranked[next_ranked]
            next_ranked += 1
        taken.append(txn.move_job(txn.indexed_job(picked), JobStatus.ACTIVE,
                                  delivery_id=delivery_id, worker_id=worker_id,
                                  started_at_ms=op.now_ms))
    return taken, txn.count(queue_name, JobStatus.WAITING), 0


def _dispatchable(txn: StoreTxn, queue_name: str) -> tuple[int, int]:
    """The waiting jobs a dispatch could take, and those of groups at their limit."""
    turns = txn.groups.turns(keys.queue_prefix(queue_name))
    blocked = 0 if turns is None else turns.blocked
    return txn.count(queue_name, JobStatus.WAITING) - blocked, blocked


def _take_in_turns(txn: StoreTxn, op: TakeWaiting, queue_prefix: bytes) -> list[bytes]:
    """A dispatch in a queue with groups: each job goes to the group served longest ago
    (the ungrouped jobs take their turn as one group) among the groups below their limit;
    within a group, highest priority then oldest, and every PRIORITY_FAIR_SHARE-th of its
    dispatches its oldest job."""
    queue_name = op.queue_name
    groups = txn.groups
    taken: list[bytes] = []
    # Dispatch only takes waiting jobs away: once no ungrouped job waits, none will in
    # this dispatch.
    ungrouped_left = True
    turns = groups.turns(queue_prefix)  # the same record all through the transaction
    assert turns is not None
    for delivery_id, worker_id in op.assignments:
        head = groups.first_in_turn(queue_prefix)
        ungrouped = txn.first_ungrouped_waiting_id(queue_name) if ungrouped_left else None
        ungrouped_left = ungrouped is not None
        if head is not None and (ungrouped is None or head[0] < turns.ungrouped_turn):
            group = head[1]
            counts = groups.counts(queue_prefix, group)
            picked = txn.group_waiting_id(queue_name, group, oldest=_fair_turn(counts.taken))
            if picked is None:
                raise RuntimeError(f"group {group!r} is in turn with nothing waiting")
        elif ungrouped is not None:
            group = None
            fair = _fair_turn(turns.ungrouped_taken)
            picked = txn.oldest_waiting_id(queue_name) if fair else ungrouped
            groups.ungrouped_served(queue_prefix)
        else:
            break
        assert picked is not None
        taken.append(txn.move_job(txn.indexed_job(picked), JobStatus.ACTIVE,
                                  delivery_id=delivery_id, worker_id=worker_id,
                                  started_at_ms=op.now_ms))
        if group is not None:
            # After the move: a group the move left idle or parked has no turn to move.
            groups.served(queue_prefix, group, counts)
    return taken


def _fair_turn(taken: int) -> bool:
    return taken % PRIORITY_FAIR_SHARE == PRIORITY_FAIR_SHARE - 1


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


def apply_complete(txn: StoreTxn, op: Complete, jobs: JobsConfig) -> int:
    """The job's new status: completed, or cancelled when CANCEL came while it ran (the
    result is kept all the same)."""
    job = txn.current_delivery(op.job_id, op.delivery_id)
    _append_history(job, _history_entry(job, AttemptOutcome.COMPLETED, op.now_ms, None),
                    op.history_limit)
    status = JobStatus.COMPLETED if job.cancel_reason is None else JobStatus.CANCELLED
    txn.move_job(job, status, attempts_so_far=job.attempts_so_far + 1,
                 result=op.result, finished_at_ms=op.now_ms, delivery_id=None)
    return int(status)


def end_attempt(txn: StoreTxn, job_id: str, delivery_id: str, outcome: AttemptOutcome,
                now_ms: int, error: dict[str, Any] | None, jobs: JobsConfig) -> bytes:
    """Retry or fail the job after an attempt that did not succeed, with the retry policy
    in force now (the queue's settings as stored); the job's stored bytes."""
    job = txn.current_delivery(job_id, delivery_id)
    queue = txn.get_queue(job.queue_name)
    policy = job_policy(job, queue.config if queue else QueueConfig(), jobs)
    _append_history(job, _history_entry(job, outcome, now_ms, error), jobs.max_error_history)
    if job.cancel_reason is not None:  # CANCELled while active: it never runs again
        return txn.move_job(job, JobStatus.CANCELLED, delivery_id=None, finished_at_ms=now_ms,
                            attempts_so_far=job.attempts_so_far + outcome.uses_attempt)
    status, start_ms, attempts = plan_after_attempt(job, policy, outcome, now_ms, _rng)
    finished = now_ms if status == JobStatus.FAILED else job.finished_at_ms
    return txn.move_job(job, status, execution_start_at_ms=start_ms,
                        attempts_so_far=attempts, delivery_id=None, finished_at_ms=finished)


def apply_end_attempt(txn: StoreTxn, op: EndAttempt, jobs: JobsConfig) -> bytes:
    return end_attempt(txn, op.job_id, op.delivery_id, op.outcome, op.now_ms, op.error, jobs)


def apply_retry_failed(txn: StoreTxn, op: RetryFailed, jobs: JobsConfig) -> bytes:
    """RETRY: a failed job waits again with a fresh set of attempts; its history stays."""
    job = job_or_raise(txn, op.job_id)
    if job.status != JobStatus.FAILED:
        raise RequestError(ErrorCode.JOB_STATUS_CONFLICT,
                           f"job {op.job_id!r} is {job.status.label}, not failed")
    queue = queue_or_raise(txn, job.queue_name)
    status = JobStatus.WAITING if queue.state == QueueState.ACTIVE else JobStatus.NEW
    return txn.move_job(job, status, attempts_so_far=0, finished_at_ms=None,
                        execution_start_at_ms=op.now_ms)


def apply_remove_job(txn: StoreTxn, op: RemoveJob, jobs: JobsConfig) -> bytes:
    job = job_or_raise(txn, op.job_id)
    if job.status not in REMOVABLE_STATUSES:
        raise RequestError(
            ErrorCode.JOB_STATUS_CONFLICT,
            f"job {op.job_id!r} is {job.status.label}; an active job cannot be removed "
            "(CANCEL it)",
        )
    txn.delete_job(job)
    return encode_job(job)


def apply_append_logs(txn: StoreTxn, op: AppendLogs, jobs: JobsConfig) -> bytes:
    """Add log lines to the job held by this delivery; the oldest lines go past the bounds."""
    job = txn.current_delivery(op.job_id, op.delivery_id)
    logs = job.logs
    logs.extend([op.now_ms, line] for line in op.lines)
    dropped = max(0, len(logs) - jobs.max_log_lines)
    total = sum(len(entry[1].encode()) for entry in logs)
    while dropped < len(logs) and total > jobs.max_log_bytes:
        total -= len(logs[dropped][1].encode())
        dropped += 1
    if dropped:
        del logs[:dropped]
    return txn.move_job(job, job.status, logs_dropped=job.logs_dropped + dropped)
