"""Job actions: CANCEL of one job, and BULK actions on a queue's jobs of one status.

CANCEL ends a job that has not started (`cancelled` at once) and asks the worker of an
active one to stop: the request is stored on the job first, so whatever ends that attempt
(the worker's answer, its lease, its disconnection, a restart) ends the job `cancelled`.
BULK runs as a plain `async` sequence of bounded batches, one commit each (like CLEARQUEUE),
over the jobs that existed when it was handled; other requests are served between batches.
"""

import asyncio
from collections.abc import Callable
from enum import StrEnum
from functools import partial

from overhop.broker.events import CancelRequested, FinalStatus
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.broker.watches import Watches
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueState
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

# Jobs one BULK batch acts on: the same size as a retention step, a millisecond or two of
# the writer, so dispatch and other commits go on between batches.
BULK_BATCH = 500
# Jobs one BULK request acts on at most (200 batches): a bigger set answers `more` and is
# finished by sending the request again, so no single request runs for minutes.
BULK_MAX_JOBS = 100_000


class BulkAction(StrEnum):
    """BULK's actions, and the statuses each applies to."""

    RETRY = "retry"
    REMOVE = "remove"
    CANCEL = "cancel"

    @property
    def statuses(self) -> frozenset[JobStatus]:
        return _BULK_STATUSES[self]


_BULK_STATUSES = {
    BulkAction.RETRY: frozenset({JobStatus.FAILED}),
    BulkAction.REMOVE: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    BulkAction.CANCEL: frozenset({JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED}),
}

JobIdBoundary = Callable[[int], bytes]


class JobActions:
    def __init__(self, state: BrokerState, store: StoreReads, writer: Writer,
                 scheduler: Scheduler, watches: Watches,
                 job_id_boundary: JobIdBoundary) -> None:
        self._state = state
        self._store = store
        self._writer = writer
        self._scheduler = scheduler
        self._watches = watches
        self._job_id_boundary = job_id_boundary

    # -- CANCEL ------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str, now: int) -> "asyncio.Future[JobRecord]":
        future = self._writer.submit(ops.CancelJob(job_id, reason, now)).durable
        future.add_done_callback(self._cancel_written)
        return future

    def _cancel_written(self, durable: "asyncio.Future[JobRecord]") -> None:
        if durable.cancelled() or durable.exception() is not None:
            return
        job = durable.result()
        if job.status == JobStatus.CANCELLED:
            log.info("job_cancelled", jid=job.job_id, queue=job.queue_name,
                     reason=job.cancel_reason)
            self._watches.finished(job.job_id, FinalStatus.CANCELLED, job=job)
            return
        delivery = self._state.deliveries.get(job.delivery_id or "")
        if delivery is None or delivery.cancel_requested or job.cancel_reason is None:
            return  # its end is being written, or its worker was told already
        delivery.cancel_requested = True
        log.info("job_cancel_requested", jid=job.job_id, did=delivery.delivery_id,
                 wid=delivery.worker.worker_id, reason=job.cancel_reason)
        if not delivery.worker.gone:
            delivery.worker.peer.cancel_requested(CancelRequested(
                delivery.delivery_id, job.job_id, job.cancel_reason))

    # -- BULK --------------------------------------------------------------------------

    def bulk(self, queue_name: str, status: JobStatus, action: BulkAction, reason: str,
             now: int) -> "asyncio.Task[tuple[int, bool]]":
        """Act on the queue's jobs in `status` created before this request; (how many,
        whether jobs in range remain past `BULK_MAX_JOBS`)."""
        runtime = self._state.user_queue(queue_name)
        if status not in action.statuses:
            allowed = ", ".join(sorted(s.label for s in action.statuses))
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               f"BULK {action.value} applies to {allowed} jobs, "
                               f"not {status.label}")
        boundary = self._job_id_boundary(now)
        added_before = runtime.waiting_added
        batch = partial(self._batch_operation, queue_name, status, action, reason, now,
                        boundary)
        first = self._writer.submit(batch(None)).durable

        async def steps() -> tuple[int, bool]:
            done = 0
            step = await first
            while True:
                done += step.count
                if action == BulkAction.RETRY and runtime.record.state == QueueState.ACTIVE:
                    self._scheduler.add_waiting(runtime, step.count)
                if not step.more or done >= BULK_MAX_JOBS:
                    break
                step = await self._writer.submit(batch(step.after)).durable
            if action == BulkAction.CANCEL:
                committed = (await self._store.counts(queue_name))[JobStatus.WAITING]
                runtime.waiting_estimate = committed + (runtime.waiting_added - added_before)
                runtime.next_due_ms = await self._store.first_due_ms(queue_name)
                await self._watches.queue_emptied(queue_name)
            log.info("jobs_bulk_done", queue=queue_name, action=action.value,
                     status=status.label, jobs=done, more=step.more)
            return done, step.more

        return asyncio.get_running_loop().create_task(steps())

    @staticmethod
    def _batch_operation(queue_name: str, status: JobStatus, action: BulkAction, reason: str,
                         now: int, boundary: bytes, after: bytes | None
                         ) -> ops.Operation[ops.Batch]:
        if action == BulkAction.RETRY:
            return ops.RetryFailedBatch(queue_name, BULK_BATCH, boundary, after, now)
        if action == BulkAction.REMOVE:
            return ops.RemoveJobsBatch(queue_name, status, BULK_BATCH, boundary, after)
        return ops.CancelJobsBatch(queue_name, status, BULK_BATCH, boundary, after, reason,
                                   now)
