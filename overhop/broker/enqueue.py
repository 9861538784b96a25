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
from overhop.logs import get_logger
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueState
from overhop.model.uniqueness import UniqueScope
from overhop.storage import operations as ops
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")


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
    unique_key: str | None = None
    unique_scope: UniqueScope | None = None
    unique_expires_at_ms: int | None = None
    group: str | None = None


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
                ) -> tuple[str, "asyncio.Future[str]"]:
        """Add one job: its id, and the future of the id of the job that holds its unique
        key once the commit is durable (its own id, unless it was a duplicate and nothing
        was added). `watcher`, if given, is told of the final outcome (RESULT)."""
        runtime = self._state.user_queue(request.queue_name)
        job = self.new_job(runtime, request, now)
        if watcher is not None:
            self._watches.add(watcher, [job.job_id])  # before the job can possibly end
        future = self._submit(runtime, job, now)
        self._after_commit(future, [job], watcher)
        return job.job_id, future

    def _after_commit(self, future: "asyncio.Future[Any]", jobs: list[JobRecord],
                      watcher: Worker | None) -> None:
        """Count the jobs added; with a watcher, unwatch them if refused; with unique keys,
        count only the jobs added and move a watch from a duplicate to its holder. (The
        usual job, neither watched nor unique, is counted now: no callback.)"""
        queue_name = jobs[0].queue_name
        if watcher is None and all(job.unique_key is None for job in jobs):
            self._state.tally.enqueued(queue_name, len(jobs))
            return
        future.add_done_callback(partial(self._committed, queue_name,
                                         [job.job_id for job in jobs], watcher))

    def _committed(self, queue_name: str, job_ids: list[str], watcher: Worker | None,
                   done: "asyncio.Future[Any]") -> None:
        if done.cancelled() or done.exception() is not None:
            if watcher is not None:
                for job_id in job_ids:
                    self._watches.remove(watcher, job_id)
            return
        result = done.result()
        holders: list[str] = [result] if isinstance(result, str) else result
        duplicates = [(new, held) for new, held in zip(job_ids, holders, strict=True)
                      if new != held]
        self._state.tally.enqueued(queue_name, len(job_ids) - len(duplicates))
        if watcher is None or watcher.gone:
            return
        for new, held in duplicates:
            self._watches.remove(watcher, new)
            try:
                self._watches.watch(watcher, held).add_done_callback(
                    partial(_watch_dropped, held))
            except RequestError as exc:
                _log_dropped(held, exc)

    def _submit(self, runtime: QueueRuntime, job: JobRecord, now: int
                ) -> "asyncio.Future[str]":
        status = job.status
        if (status == JobStatus.WAITING and self._scheduler.can_hand_over(runtime)
                and (job.group is None or runtime.record.config.group_concurrency_limit is None)):
            return self._scheduler.enqueue_handed_over(runtime, job, now)
        future = self._writer.submit(ops.Enqueue(job)).durable
        if status == JobStatus.WAITING:
            self._scheduler.add_waiting(runtime, 1)
        elif status == JobStatus.DELAYED:
            start = job.execution_start_at_ms
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, start))
        return future

    def enqueue_many(self, queue_name: str, requests: list[EnqueueRequest], now: int,
                     watcher: Worker | None = None
                     ) -> tuple[list[str], "asyncio.Future[list[str]]"]:
        """Several jobs of one queue in one operation: all are committed, or none. Their
        ids, and the future of the ids of the jobs holding their unique keys (as `enqueue`).

        They are dispatched from `waiting` like any other jobs, oldest first (no direct
        hand-over: a batch is not latency-bound)."""
        runtime = self._state.user_queue(queue_name)
        jobs = []
        for index, request in enumerate(requests):
            try:
                jobs.append(self.new_job(runtime, request, now))
            except RequestError as exc:
                raise exc.in_batch(index) from None
        job_ids = [job.job_id for job in jobs]
        if watcher is not None:
            self._watches.add(watcher, job_ids)
        future = self._writer.submit(ops.EnqueueMany(queue_name, jobs)).durable
        self._after_commit(future, jobs, watcher)
        waiting = sum(1 for job in jobs if job.status == JobStatus.WAITING)
        if waiting:
            self._scheduler.add_waiting(runtime, waiting)
        starts = [job.execution_start_at_ms for job in jobs if job.status == JobStatus.DELAYED]
        if starts:
            first = min(starts)
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, first))
        return job_ids, future

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
            unique_key=request.unique_key,
            unique_scope=request.unique_scope,
            unique_expires_at_ms=request.unique_expires_at_ms,
            group=request.group,
        )


def _watch_dropped(job_id: str, future: "asyncio.Future[None]") -> None:
    exc = None if future.cancelled() else future.exception()
    if isinstance(exc, RequestError):  # the holder went meanwhile: nothing will come
        _log_dropped(job_id, exc)


def _log_dropped(job_id: str, exc: RequestError) -> None:
    log.info("duplicate_watch_dropped", jid=job_id, error=exc.code.name)
