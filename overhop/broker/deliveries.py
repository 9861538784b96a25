"""Deliveries: from a job's QUEST to its end — ack, leases, outcomes, fencing.

A delivery id fences a job's outcomes: only the current delivery's are taken. Every end of
an attempt (a worker's COMPLETE, FAIL or RELEASE, or the server's own: lease expired,
withdrawn, disconnected, stale worker, shutdown) is one operation handed to the writer;
the job's slot is lent to later dispatches as soon as the end is submitted
(`_lend_slot`), and taken back should the write fail (`_outcome_written`).
"""

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from overhop.broker.events import FinalStatus
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.broker.watches import Watches
from overhop.broker.workers import ORPHANED, REATTACHED, Delivery, Subscription, Worker
from overhop.config.schema import Config
from overhop.errors import DeferredRefusal, ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

Ending = tuple[AttemptOutcome, dict[str, Any] | None]


class Deliveries:
    def __init__(self, state: BrokerState, store: StoreReads, writer: Writer, config: Config,
                 clock: Callable[[], int], scheduler: Scheduler, watches: Watches,
                 note_due: Callable[[QueueRuntime, int | None], None]) -> None:
        self._state = state
        self._store = store
        self._writer = writer
        self._config = config
        self._clock = clock
        self._scheduler = scheduler
        self._watches = watches
        self._note_due = note_due

    def worker_delivery(self, worker: Worker, delivery_id: str, job_id: str) -> Delivery:
        """The worker's current delivery, or the ERR that says why it is not."""
        delivery = worker.deliveries.get(delivery_id)
        if delivery is not None:
            if delivery.job_id != job_id:
                raise RequestError(ErrorCode.INVALID_PAYLOAD,
                                   f"delivery {delivery_id} is of job {delivery.job_id}")
            return delivery
        orphan = self._state.deliveries.get(delivery_id)
        if (orphan is not None and orphan.subscription.subscription_id == ORPHANED
                and orphan.job_id == job_id):
            self._reattach(orphan, worker)
            return orphan
        self._state.check_job_here(job_id)
        if orphan is None:
            # Stale if the job is still stored: that takes a read, so the reply waits.
            raise DeferredRefusal(partial(self._unknown_delivery, delivery_id, job_id))
        raise _not_found(delivery_id)

    def _reattach(self, delivery: Delivery, worker: Worker) -> None:
        """Cluster mode: the worker running a job that was active when this broker took its
        queue over came back (broker/ownership.py); the delivery is its from now on.

        It hangs off a holder of its own, never active, even when the worker subscribed to
        the queue here: the job did not come on that subscription, so an outcome's `credit`
        must not raise its credits (`Broker._credit_back`)."""
        delivery.subscription = Subscription(REATTACHED, delivery.queue_name, worker, 0,
                                             active=False)
        worker.deliveries[delivery.delivery_id] = delivery
        log.info("delivery_reattached", did=delivery.delivery_id, jid=delivery.job_id,
                 wid=worker.worker_id)

    async def _unknown_delivery(self, delivery_id: str, job_id: str) -> None:
        if await self._store.get_job(job_id) is not None:
            raise RequestError(ErrorCode.DELIVERY_STALE,
                               f"delivery {delivery_id} of {job_id} is no longer current")
        raise _not_found(delivery_id)

    # -- while the job runs ------------------------------------------------------------

    def ack(self, delivery: Delivery, now: int) -> None:
        if delivery.acked:
            raise RequestError(ErrorCode.DELIVERY_ALREADY_ACKED,
                               f"delivery {delivery.delivery_id} is already acknowledged")
        delivery.acked = True
        delivery.lease_deadline_ms = now + delivery.lease_ms

    def heartbeat(self, delivery: Delivery, progress: Any, now: int) -> int:
        """Extend the lease, unless the job was cancelled: then it ends within a lease."""
        if not delivery.acked or not delivery.cancel_requested:
            delivery.lease_deadline_ms = now + delivery.lease_ms
        delivery.acked = True
        if progress is not None:
            delivery.progress = progress
        return delivery.lease_deadline_ms

    def append_logs(self, delivery: Delivery, lines: list[str], now: int
                    ) -> "asyncio.Future[JobRecord]":
        # Log lines grow the store: like new jobs, they are refused when space is low, so
        # the reserved headroom stays for completions.
        return self._writer.submit(ops.AppendLogs(
            delivery.job_id, delivery.delivery_id, lines, now)).durable

    # -- outcomes ----------------------------------------------------------------------

    def complete(self, delivery: Delivery, result: bytes | None, now: int
                 ) -> "asyncio.Future[int]":
        self._state.forget(delivery)
        write = self._writer.submit(ops.Complete(
            delivery.job_id, delivery.delivery_id, result, now,
            self._config.jobs.max_error_history))
        write.when_visible(partial(self._outcome_written, delivery, None))
        write.when_durable(partial(self._completed, delivery.job_id, result))
        self._state.tally.ended(delivery.queue_name, "completed",
                                delivery.worker.metadata.get("name"), now - delivery.sent_at_ms)
        self._lend_slot(delivery)
        return write.durable

    def end(self, delivery: Delivery, outcome: AttemptOutcome, error: dict[str, Any] | None,
            now: int, *, by_worker: bool = False) -> "asyncio.Future[JobRecord]":
        """End an attempt that did not complete; the job retries, waits again or fails."""
        self._state.forget(delivery)
        ending = None if by_worker else (outcome, error)
        write = self._writer.submit(ops.EndAttempt(
            delivery.job_id, delivery.delivery_id, outcome, now, error))
        write.when_visible(partial(self._outcome_written, delivery, ending))
        write.durable.add_done_callback(partial(self._after_attempt, delivery, outcome))
        self._state.tally.ended(delivery.queue_name, outcome.label,
                                delivery.worker.metadata.get("name"), now - delivery.sent_at_ms)
        self._lend_slot(delivery)
        return write.durable

    def withdraw(self, delivery: Delivery) -> None:
        """Take back a delivery its worker never got or never acknowledged (no attempt)."""
        self.end(delivery, AttemptOutcome.WITHDRAWN, None, self._clock())

    def _lend_slot(self, delivery: Delivery) -> None:
        """The delivery's end is being written: its slot is free for dispatches submitted
        after it, which (with a concurrency limit) take nothing should that end fail."""
        runtime = self._state.queues.get(delivery.queue_name)
        if runtime is not None:
            runtime.ending[delivery.delivery_id] = delivery.job_id
            runtime.active -= 1
            self._scheduler.slot_freed(runtime)

    def _outcome_written(self, delivery: Delivery, ending: Ending | None, _result: Any,
                         error: RequestError | None) -> None:
        """A delivery's end was committed, refused, or its write failed.

        The job's concurrency slot was lent when the end was submitted (`_lend_slot`).
        When the write failed, nothing changed: the delivery is current again and takes its
        slot back (a dispatch that used it meanwhile took nothing: see `take_waiting`). A
        worker's outcome (`ending` None) may then be sent again, and the delivery's ack
        timeout or lease still apply; the server's own ending (lease expiry, withdrawal,
        disconnect...) is tried again at the next heartbeat tick.
        """
        runtime = self._state.queues.get(delivery.queue_name)
        if runtime is not None:
            runtime.ending.pop(delivery.delivery_id, None)
        if error is None or not _write_failed(error):
            return
        log.error("delivery_end_not_written", jid=delivery.job_id, did=delivery.delivery_id,
                  wid=delivery.worker.worker_id, error=str(error))
        if runtime is not None:
            runtime.active += 1
        self._state.deliveries[delivery.delivery_id] = delivery
        if ending is None and not delivery.worker.gone:
            delivery.worker.deliveries[delivery.delivery_id] = delivery
            return
        if ending is None:  # the worker left while its outcome was being written
            ending = (AttemptOutcome.DISCONNECTED if delivery.acked
                      else AttemptOutcome.WITHDRAWN, None)
        delivery.retry_ending = ending
        delivery.retry_at_ms = self._clock() + self._config.heartbeat.interval_ms

    def _completed(self, job_id: str, result: bytes | None, status: int | None,
                   error: RequestError | None) -> None:
        """COMPLETE's write is durable (the job's status now), or failed (`error`)."""
        if error is not None:
            return
        if status == JobStatus.CANCELLED:  # CANCELled while it ran
            self._watches.finished_from_store(job_id, FinalStatus.CANCELLED)
        else:
            self._watches.finished(job_id, FinalStatus.COMPLETED, result=result)

    def _after_attempt(self, delivery: Delivery, outcome: AttemptOutcome,
                       future: "asyncio.Future[JobRecord]") -> None:
        if future.exception() is not None:
            log.error("attempt_end_failed", jid=delivery.job_id, did=delivery.delivery_id,
                      error=str(future.exception()))
            return
        job = future.result()
        log.info("attempt_ended", jid=job.job_id, did=delivery.delivery_id,
                 wid=delivery.worker.worker_id, outcome=outcome.label, status=job.status.label)
        if job.status == JobStatus.FAILED:
            self._watches.finished(job.job_id, FinalStatus.FAILED, job=job)
            return
        if job.status == JobStatus.CANCELLED:
            log.info("job_cancelled", jid=job.job_id, queue=job.queue_name,
                     reason=job.cancel_reason)
            self._watches.finished(job.job_id, FinalStatus.CANCELLED, job=job)
            return
        runtime = self._state.queues.get(job.queue_name)
        if runtime is None:
            return
        if job.status == JobStatus.WAITING:
            self._scheduler.add_waiting(runtime, 1)
        elif job.status == JobStatus.DELAYED:
            self._note_due(runtime, job.execution_start_at_ms)

    # -- the server's own endings ------------------------------------------------------

    def expire(self, now: int) -> None:
        """Withdraw unacknowledged deliveries past their ack timeout, end expired leases,
        and write again the server's endings whose write failed."""
        for delivery in list(self._state.deliveries.values()):
            if delivery.retry_ending is not None:
                if now >= delivery.retry_at_ms:
                    outcome, error = delivery.retry_ending
                    delivery.retry_ending = None
                    self.end(delivery, outcome, error, now)
            elif not delivery.acked and now >= delivery.ack_deadline_ms:
                log.info("delivery_withdrawn", did=delivery.delivery_id, jid=delivery.job_id,
                         wid=delivery.worker.worker_id)
                self.end(delivery, AttemptOutcome.WITHDRAWN, None, now)
            elif delivery.acked and now >= delivery.lease_deadline_ms:
                log.info("lease_expired", did=delivery.delivery_id, jid=delivery.job_id,
                         wid=delivery.worker.worker_id)
                self.end(delivery, AttemptOutcome.LEASE_EXPIRED, None, now)

    def worker_gone(self, worker: Worker, outcome: AttemptOutcome, now: int) -> None:
        """The worker's connection closed (or it said GOODBYE, or went stale)."""
        if worker.gone:
            return
        routine = not worker.subscriptions and not worker.deliveries  # e.g. a CLI call
        worker.gone = True
        self._state.workers.pop(worker.worker_id, None)
        for subscription in list(worker.subscriptions.values()):
            self._scheduler.drop_subscription(subscription)
        for delivery in list(worker.deliveries.values()):
            self.end(delivery, outcome if delivery.acked else AttemptOutcome.WITHDRAWN, None,
                     now)
        (log.debug if routine else log.info)("worker_gone", wid=worker.worker_id,
                                             outcome=outcome.label)

    def end_all(self, outcome: AttemptOutcome, now: int) -> None:
        """Shutdown: every delivery still out goes back through the attempt path."""
        for delivery in list(self._state.deliveries.values()):
            self.end(delivery, outcome, None, now)

    def fence_queue(self, queue_name: str, runtime: QueueRuntime) -> int:
        """Forced OBLITERATE: the queue's deliveries stop being current, without a write
        (their jobs are about to be deleted); outcomes for them are refused from now on."""
        fenced = [d for d in self._state.deliveries.values() if d.queue_name == queue_name]
        for delivery in fenced:
            self._state.forget(delivery)
            runtime.active -= 1
        return len(fenced)


_NOT_WRITTEN = frozenset((ErrorCode.INTERNAL, ErrorCode.STORAGE_FULL,
                          ErrorCode.STORAGE_UNAVAILABLE))


def _write_failed(error: BaseException) -> bool:
    """The writer could not commit (storage full, a storage error, the database unreachable
    or read-only, the writer lost), as opposed to an operation that refused because the job
    had moved on."""
    return isinstance(error, RequestError) and error.code in _NOT_WRITTEN


def _not_found(delivery_id: str) -> RequestError:
    return RequestError(ErrorCode.DELIVERY_NOT_FOUND,
                        f"this worker holds no delivery {delivery_id}")
