"""New jobs: ENQUEUE and ENQUEUEMANY turned into job records and handed to the writer.

A new job is `waiting` (or `delayed` when it starts later, `new` on a paused queue). When
nothing waits ahead of it and a subscription has credit, it is written directly as active
and handed to that worker in the same commit (`Scheduler.enqueue_handed_over`).
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from overhop.broker.ids import JobIdGenerator
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.broker.watches import Watches
from overhop.broker.workers import Worker
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueState
from overhop.storage import operations as ops
from overhop.storage.writer import Writer


@dataclass(slots=True)
class EnqueueRequest:
    """One job to add, as parsed from ENQUEUE (or one job of ENQUEUEMANY)."""

    queue_name: str
    payload: bytes | None
    scheduled_at_ms: int | None
    max_attempts: int | None
    retry_interval_ms: int | None
    lease_ms: int | None
    headers: dict[str, str] | None = None
    task: str | None = None
    priority: int | None = None


class Enqueuer:
    def __init__(self, state: BrokerState, writer: Writer, scheduler: Scheduler,
                 watches: Watches, note_due: Callable[[QueueRuntime, int | None], None]
                 ) -> None:
        self._state = state
        self._writer = writer
        self._scheduler = scheduler
        self._watches = watches
        self._note_due = note_due
        self.job_ids = JobIdGenerator()

    def enqueue(self, request: EnqueueRequest, now: int, watcher: Worker | None = None
                ) -> "asyncio.Future[str]":
        """Add one job; `watcher`, if given, is told of its final outcome (RESULT)."""
        runtime = self._state.user_queue(request.queue_name)
        job = self.new_job(runtime, request, now)
        if watcher is not None:
            self._watches.add(watcher, [job.job_id])  # before the job can possibly end
        self._state.tally.enqueued(request.queue_name, 1)
        future = self._submit(runtime, job, now)
        if watcher is not None:
            future.add_done_callback(partial(self._unwatch_if_refused, watcher, [job.job_id]))
        return future

    def _unwatch_if_refused(self, watcher: Worker, job_ids: list[str],
                            done: "asyncio.Future[Any]") -> None:
        if done.cancelled() or done.exception() is not None:
            for job_id in job_ids:
                self._watches.remove(watcher, job_id)

    def _submit(self, runtime: QueueRuntime, job: JobRecord, now: int
                ) -> "asyncio.Future[str]":
        status = job.status
        if status == JobStatus.WAITING and self._scheduler.can_hand_over(runtime):
            return self._scheduler.enqueue_handed_over(runtime, job, now)
        future = self._writer.submit(ops.Enqueue(job)).durable
        if status == JobStatus.WAITING:
            self._scheduler.add_waiting(runtime, 1)
        elif status == JobStatus.DELAYED:
            start = job.execution_start_at_ms
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, start))
        return future

    def enqueue_many(self, queue_name: str, requests: list[EnqueueRequest], now: int,
                     watcher: Worker | None = None) -> "asyncio.Future[list[str]]":
        """Several jobs of one queue in one operation: all are committed, or none.

        They are dispatched from `waiting` like any other jobs, oldest first (no direct
        hand-over: a batch is not latency-bound)."""
        runtime = self._state.user_queue(queue_name)
        jobs = []
        for index, request in enumerate(requests):
            try:
                jobs.append(self.new_job(runtime, request, now))
            except RequestError as exc:
                raise exc.in_batch(index) from None
        if watcher is not None:
            self._watches.add(watcher, [job.job_id for job in jobs])
        future = self._writer.submit(ops.EnqueueMany(queue_name, jobs)).durable
        if watcher is not None:
            future.add_done_callback(partial(self._unwatch_if_refused, watcher,
                                             [job.job_id for job in jobs]))
        self._state.tally.enqueued(queue_name, len(jobs))
        waiting = sum(1 for job in jobs if job.status == JobStatus.WAITING)
        if waiting:
            self._scheduler.add_waiting(runtime, waiting)
        starts = [job.execution_start_at_ms for job in jobs if job.status == JobStatus.DELAYED]
        if starts:
            first = min(starts)
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, first))
        return future

    def new_job(self, runtime: QueueRuntime, request: EnqueueRequest, now: int) -> JobRecord:
        """The record of a new job (ENQUEUE, ENQUEUEMANY, a schedule's fire); raises
        OVERRIDE_NOT_ALLOWED when the queue refuses the job's own settings."""
        config = runtime.record.config
        overrides = (request.max_attempts, request.retry_interval_ms, request.lease_ms)
        if not config.allow_job_overrides and any(v is not None for v in overrides):
            raise RequestError(ErrorCode.OVERRIDE_NOT_ALLOWED,
                               f"queue {request.queue_name!r} does not allow per-job overrides")
        start = now if request.scheduled_at_ms is None else request.scheduled_at_ms
        if runtime.record.state == QueueState.PAUSED:
            status = JobStatus.NEW
        else:
            status = JobStatus.WAITING if start <= now else JobStatus.DELAYED
        return JobRecord(
            job_id=self.job_ids.new_job_id(request.queue_name, now),
            queue_name=request.queue_name,
            status=status,
            payload=request.payload,
            created_at_ms=now,
            execution_start_at_ms=start,
            max_attempts=request.max_attempts,
            retry_interval_ms=request.retry_interval_ms,
            lease_ms=request.lease_ms,
            headers=request.headers,
            task=request.task,
            priority=request.priority,
        )
