"""The broker: queues, jobs, workers and dispatch, in memory on the event loop.

It never sees a socket (workers are reached through `Peer`) and never writes to LMDB
itself: every change is an operation (`job_ops`) handed to the writer, and every reply or
QUEST that depends on a change is sent only once the writer says it is on disk.
Time comes in as `now_ms` from the caller.
"""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from overhop.broker.dispatch import QueueRuntime, plan_dispatch
from overhop.broker.ids import DeliveryIdGenerator, JobIdGenerator
from overhop.broker.workers import Delivery, Peer, Subscription, SubscriptionEnd, Worker
from overhop.config.schema import Config
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import (
    SYSTEM_QUEUE_NAME,
    JobPolicy,
    QueueConfig,
    QueueRecord,
    QueueState,
)
from overhop.storage import operations as job_ops
from overhop.storage.store import Store
from overhop.storage.writer import Writer
from overhop.wire.codec import encode_frame, encode_frame_with_raw
from overhop.wire.messages import PUSH_RID, MessageType

log = get_logger("overhop.broker")

# Jobs one maintenance transaction moves at most (promotion, recovery, advancing new jobs):
# bounded so a backlog never holds the writer for long; the rest follow in the next step.
MAINTENANCE_BATCH = 1000
# Finished jobs one retention step removes: small enough that dispatch commits between
# steps stay quick, large enough to keep up with thousands of completions a second.
RETENTION_BATCH = 500
_NIL = b"\xc0"


@dataclass(slots=True)
class EnqueueRequest:
    queue_name: str
    payload: bytes | None
    scheduled_at_ms: int | None
    max_attempts: int | None
    retry_interval_ms: int | None
    lease_ms: int | None


class Broker:
    def __init__(self, config: Config, store: Store, writer: Writer,
                 clock: Callable[[], int]) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.clock = clock
        self.queues: dict[str, QueueRuntime] = {}
        self.workers: dict[str, Worker] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.dispatched_total = 0
        self.dispatch_stopped = False
        self.obliterating: set[str] = set()
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_timer_at = 0
        self._rate_timers: dict[str, asyncio.TimerHandle] = {}
        self._job_ids = JobIdGenerator()
        self._delivery_ids = DeliveryIdGenerator()

    # -- boot --------------------------------------------------------------------------

    async def boot(self) -> None:
        """Load queues (not jobs), create `_system`, and end attempts the old process left."""
        for record in self.store.load_queues():
            runtime = QueueRuntime(record)
            runtime.waiting_estimate = self.store.counts(record.name)[JobStatus.WAITING]
            runtime.next_due_ms = self.store.first_due_ms(record.name)
            runtime.new_pending = record.state == QueueState.ACTIVE
            self.queues[record.name] = runtime
        if SYSTEM_QUEUE_NAME not in self.queues:
            record = self.new_queue_record(SYSTEM_QUEUE_NAME, QueueConfig())
            await self.writer.submit(job_ops.AddQueue(record)).durable
            self.queues[record.name] = QueueRuntime(record)
        for name in list(self.queues):
            await self._recover_active(name)

    async def _recover_active(self, name: str) -> None:
        recovered = 0
        while True:
            moved = await self.writer.submit(job_ops.RecoverActive(
                name, self.clock(), MAINTENANCE_BATCH)).durable
            recovered += moved.moved
            self._note_due(self.queues[name], moved.next_due_ms)
            if not moved.more:
                break
        if recovered:
            runtime = self.queues[name]
            runtime.waiting_estimate = self.store.counts(name)[JobStatus.WAITING]
            log.warning("active_jobs_recovered", queue=name, jobs=recovered)

    def new_queue_record(self, name: str, config: QueueConfig) -> QueueRecord:
        return QueueRecord(str(uuid.uuid4()), name, QueueState.ACTIVE, self.clock(), config)

    # -- queues ------------------------------------------------------------------------

    def queue(self, name: str) -> QueueRuntime:
        runtime = self.queues.get(name)
        if runtime is None:
            raise RequestError(ErrorCode.QUEUE_NOT_FOUND, f"queue {name!r} does not exist")
        return runtime

    def user_queue(self, name: str) -> QueueRuntime:
        if name.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM,
                               f"{name!r} is a system queue and cannot be used that way")
        return self.queue(name)

    # -- jobs --------------------------------------------------------------------------

    def enqueue(self, request: EnqueueRequest) -> "asyncio.Future[str]":
        runtime = self.user_queue(request.queue_name)
        job = self._new_job(runtime, request, self.clock())
        status = job.status
        if status == JobStatus.WAITING and self._can_hand_over(runtime):
            return self._enqueue_handed_over(runtime, job)
        future = self.writer.submit(job_ops.Enqueue(job)).durable
        if status == JobStatus.WAITING:
            self._add_waiting(runtime, 1)
        elif status == JobStatus.DELAYED:
            start = job.execution_start_at_ms
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, start))
        return future

    def enqueue_many(self, queue_name: str, requests: list[EnqueueRequest]
                     ) -> "asyncio.Future[list[str]]":
        """Several jobs of one queue in one operation: all are committed, or none.

        They are dispatched from `waiting` like any other jobs, oldest first (no direct
        hand-over: a batch is not latency-bound)."""
        runtime = self.user_queue(queue_name)
        now = self.clock()
        jobs = []
        for index, request in enumerate(requests):
            try:
                jobs.append(self._new_job(runtime, request, now))
            except RequestError as exc:
                raise exc.in_batch(index) from None
        future = self.writer.submit(job_ops.EnqueueMany(queue_name, jobs)).durable
        waiting = sum(1 for job in jobs if job.status == JobStatus.WAITING)
        if waiting:
            self._add_waiting(runtime, waiting)
        starts = [job.execution_start_at_ms for job in jobs if job.status == JobStatus.DELAYED]
        if starts:
            first = min(starts)
            future.add_done_callback(lambda f: f.exception() or self._note_due(runtime, first))
        return future

    def _new_job(self, runtime: QueueRuntime, request: EnqueueRequest, now: int) -> JobRecord:
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
            job_id=self._job_ids.new_job_id(request.queue_name, now),
            queue_name=request.queue_name,
            status=status,
            payload=request.payload,
            created_at_ms=now,
            execution_start_at_ms=start,
            max_attempts=request.max_attempts,
            retry_interval_ms=request.retry_interval_ms,
            lease_ms=request.lease_ms,
        )

    def _can_hand_over(self, runtime: QueueRuntime) -> bool:
        """Nothing waits ahead of a new job, so it may go to a worker in its own commit.

        A dispatch in flight does not prevent it: that dispatch takes every job counted as
        waiting (the estimate is already down by them), and a job handed over is written as
        active, never seen by it; its QUEST follows that dispatch's QUESTs, in commit order.
        A slot lent by an end still being written does (with a concurrency limit): only a
        guarded dispatch (`take_waiting`) may use it.
        """
        return (runtime.waiting_estimate <= 0 and not self.dispatch_stopped
                and bool(runtime.subscriptions) and not runtime.dispatch_guards(1))

    def _enqueue_handed_over(self, runtime: QueueRuntime, job: JobRecord
                             ) -> "asyncio.Future[str]":
        """Write the new job directly as active, assigned to a subscription with credit.

        One commit instead of two (enqueue, then dispatch), so a job reaches an idle worker
        one disk sync after its ENQUEUE; on disk the job is still exactly once, active.
        """
        now = self.clock()
        plan = plan_dispatch(runtime, jobs=min(1, runtime.rate_allowance(now)))
        if not plan:
            future = self.writer.submit(job_ops.Enqueue(job)).durable
            self._add_waiting(runtime, 1)
            return future
        (subscription,) = plan
        subscription.credits -= 1
        runtime.active += 1
        runtime.rate.record(now, 1)
        delivery_id = self._delivery_ids.new_id()
        job.status = JobStatus.ACTIVE
        job.delivery_id = delivery_id
        job.worker_id = subscription.worker.worker_id
        job.started_at_ms = job.created_at_ms

        def on_visible(visible: "asyncio.Future[str]") -> None:
            # The QUEST goes out once the commit is visible, one sync before the ENQUEUE's
            # OK (which waits for the commit to be durable): see docs/storage.md.
            if visible.exception() is not None:
                self._refund(runtime, [subscription])
                self.pump(runtime)
                return
            self._deliver(subscription, delivery_id, job, self.clock())

        write = self.writer.submit(job_ops.Enqueue(job))
        write.visible.add_done_callback(on_visible)
        return write.durable

    def job(self, job_id: str) -> JobRecord | None:
        queue_name = job_id.rsplit(":", 1)[0] if ":" in job_id else ""
        if queue_name.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be read")
        return self.store.get_job(job_id)

    def remove_job(self, job_id: str) -> "asyncio.Future[JobRecord]":
        if job_id.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be removed")
        return self.writer.submit(job_ops.RemoveJob(job_id)).durable

    def retry_job(self, job_id: str) -> "asyncio.Future[JobRecord]":
        if job_id.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be retried")

        def settle(future: "asyncio.Future[JobRecord]") -> None:
            if future.exception() is not None:
                return
            job = future.result()
            runtime = self.queues.get(job.queue_name)
            if runtime is not None and job.status == JobStatus.WAITING:
                self._add_waiting(runtime, 1)

        future = self.writer.submit(job_ops.RetryFailed(job_id, self.clock())).durable
        future.add_done_callback(settle)
        return future

    # -- workers and subscriptions -----------------------------------------------------

    def register_worker(self, peer: Peer, metadata: dict[str, Any]) -> Worker:
        now = self.clock()
        worker = Worker(str(uuid.uuid4()), peer, now, now, metadata)
        self.workers[worker.worker_id] = worker
        return worker

    def subscribe(self, worker: Worker, queue_name: str, credits: int) -> Subscription:
        runtime = self.user_queue(queue_name)
        if worker.subscription_for(queue_name) is not None:
            raise RequestError(ErrorCode.ALREADY_SUBSCRIBED,
                               f"this worker is already subscribed to {queue_name!r}")
        subscription = Subscription(str(uuid.uuid4()), queue_name, worker, credits)
        worker.subscriptions[subscription.subscription_id] = subscription
        runtime.subscriptions.append(subscription)
        log.info("subscribed", wid=worker.worker_id, sid=subscription.subscription_id,
                 queue=queue_name, credits=credits)
        self.pump(runtime)
        return subscription

    def _own_subscription(self, worker: Worker, subscription_id: str) -> Subscription:
        subscription = worker.subscriptions.get(subscription_id)
        if subscription is None:
            raise RequestError(ErrorCode.SUBSCRIPTION_NOT_FOUND,
                               f"no subscription {subscription_id!r} on this worker")
        return subscription

    def unsubscribe(self, worker: Worker, subscription_id: str) -> None:
        subscription = self._own_subscription(worker, subscription_id)
        self._drop_subscription(subscription)

    def _drop_subscription(self, subscription: Subscription) -> None:
        subscription.active = False
        subscription.worker.subscriptions.pop(subscription.subscription_id, None)
        runtime = self.queues.get(subscription.queue_name)
        if runtime is not None and subscription in runtime.subscriptions:
            runtime.subscriptions.remove(subscription)

    def credit(self, worker: Worker, subscription_id: str, credits: int) -> None:
        subscription = self._own_subscription(worker, subscription_id)
        subscription.credits += credits
        runtime = self.queues.get(subscription.queue_name)
        if runtime is not None:
            self.pump(runtime)

    def peer_writable(self, worker: Worker) -> None:
        """The worker's connection drained below its high-water mark: serve it again."""
        for subscription in list(worker.subscriptions.values()):
            runtime = self.queues.get(subscription.queue_name)
            if runtime is not None:
                self.pump(runtime)

    # -- dispatch ----------------------------------------------------------------------

    def _add_waiting(self, runtime: QueueRuntime, count: int) -> None:
        runtime.waiting_estimate += count
        runtime.waiting_added += count
        self.pump(runtime)

    def pump(self, runtime: QueueRuntime) -> None:
        """Dispatch what the queue's limits, credits and waiting jobs allow now."""
        if (self.dispatch_stopped or runtime.dispatch_in_flight
                or runtime.record.state != QueueState.ACTIVE
                or runtime.waiting_estimate <= 0 or not runtime.subscriptions):
            return
        now = self.clock()
        allowance = runtime.rate_allowance(now)
        if allowance <= 0:
            self._wake_at_rate_opening(runtime)
            return
        plan = plan_dispatch(runtime, jobs=min(runtime.waiting_estimate, allowance))
        if not plan:
            return
        runtime.rate.record(now, len(plan))
        assignments = [(self._delivery_ids.new_id(), sub.worker.worker_id) for sub in plan]
        guards = runtime.dispatch_guards(len(plan))
        for subscription in plan:
            subscription.credits -= 1
        runtime.active += len(plan)
        runtime.waiting_estimate -= len(plan)
        runtime.dispatch_in_flight = True
        added_before = runtime.waiting_added
        # QUESTs go out once the move to active is visible (one sync before it is durable).
        write = self.writer.submit(
            job_ops.TakeWaiting(runtime.record.name, assignments, now, guards))
        write.visible.add_done_callback(
            _as_visible(partial(self._on_taken, runtime, plan, assignments, added_before)))

    def _wake_at_rate_opening(self, runtime: QueueRuntime) -> None:
        """A rate-limited queue dispatches again the moment its window lets a job start."""
        name = runtime.record.name
        opening = runtime.rate.next_opening_ms(runtime.record.config.rate_window_ms)
        if opening is None or name in self._rate_timers:
            return

        def wake() -> None:
            self._rate_timers.pop(name, None)
            if self.queues.get(name) is runtime:
                self.pump(runtime)

        delay_s = max(0, opening - self.clock()) / 1000
        self._rate_timers[name] = asyncio.get_running_loop().call_later(delay_s, wake)

    def _on_taken(self, runtime: QueueRuntime, plan: list[Subscription],
                  assignments: list[tuple[str, str]], added_before: int, succeeded: bool,
                  taken: Any) -> None:
        runtime.dispatch_in_flight = False
        if not succeeded:
            log.error("dispatch_failed", queue=runtime.record.name, error=str(taken))
            self._refund(runtime, plan)
            return
        now = self.clock()
        for subscription, (delivery_id, _), job in zip(plan, assignments, taken.jobs,
                                                        strict=False):
            self._deliver(subscription, delivery_id, job, now)
        self._refund(runtime, plan[len(taken.jobs):])
        runtime.waiting_estimate = taken.waiting_left + (runtime.waiting_added - added_before)
        self.pump(runtime)

    def policy(self, job: JobRecord) -> JobPolicy:
        """The settings in force for `job`, from its queue's current settings."""
        runtime = self.queues.get(job.queue_name)
        if runtime is None:
            return job_ops.job_policy(job, QueueConfig(), self.config.jobs)
        if job.max_attempts is None and job.retry_interval_ms is None and job.lease_ms is None:
            return runtime.default_policy(self.config.jobs)
        return job_ops.job_policy(job, runtime.record.config, self.config.jobs)

    def _deliver(self, subscription: Subscription, delivery_id: str, job: JobRecord,
                 now: int) -> None:
        """A job's move to active is committed: send its QUEST (or take it back at once)."""
        ack_timeout = self.config.dispatch.ack_timeout_ms
        policy = self.policy(job)
        delivery = Delivery(delivery_id, job.job_id, job.queue_name, subscription, now,
                            now + ack_timeout, policy.lease_ms)
        self.deliveries[delivery_id] = delivery
        if not subscription.active or subscription.worker.gone or self.dispatch_stopped:
            self._end_delivery(delivery, AttemptOutcome.WITHDRAWN, None)
            return
        if not subscription.worker.peer.writable:
            # The peer stopped reading while this dispatch committed: take the job back
            # (no attempt used) and the credit too, rather than pile QUESTs up in memory.
            subscription.credits += 1
            self._end_delivery(delivery, AttemptOutcome.WITHDRAWN, None)
            return
        subscription.worker.deliveries[delivery_id] = delivery
        subscription.worker.peer.send(
            _quest_frame(delivery, job, subscription, policy, ack_timeout))
        self.dispatched_total += 1

    def _refund(self, runtime: QueueRuntime, unused: list[Subscription]) -> None:
        for subscription in unused:
            subscription.credits += 1
        runtime.active -= len(unused)

    # -- deliveries and outcomes -------------------------------------------------------

    def worker_delivery(self, worker: Worker, delivery_id: str, job_id: str) -> Delivery:
        """The worker's current delivery, or the ERR that says why it is not."""
        delivery = worker.deliveries.get(delivery_id)
        if delivery is not None:
            if delivery.job_id != job_id:
                raise RequestError(ErrorCode.INVALID_PAYLOAD,
                                   f"delivery {delivery_id} is of job {delivery.job_id}")
            return delivery
        if delivery_id not in self.deliveries and self.store.get_job(job_id) is not None:
            raise RequestError(ErrorCode.DELIVERY_STALE,
                               f"delivery {delivery_id} of {job_id} is no longer current")
        raise RequestError(ErrorCode.DELIVERY_NOT_FOUND,
                           f"this worker holds no delivery {delivery_id}")

    def ack(self, delivery: Delivery) -> None:
        if delivery.acked:
            raise RequestError(ErrorCode.DELIVERY_ALREADY_ACKED,
                               f"delivery {delivery.delivery_id} is already acknowledged")
        self._start_lease(delivery)

    def _start_lease(self, delivery: Delivery) -> None:
        delivery.acked = True
        delivery.lease_deadline_ms = self.clock() + delivery.lease_ms

    def heartbeat(self, delivery: Delivery, progress: Any) -> int:
        if not delivery.acked:
            self._start_lease(delivery)
        delivery.lease_deadline_ms = self.clock() + delivery.lease_ms
        if progress is not None:
            delivery.progress = progress
        return delivery.lease_deadline_ms

    def complete(self, delivery: Delivery, result: bytes | None) -> "asyncio.Future[None]":
        self._forget(delivery)
        write = self.writer.submit(job_ops.Complete(
            delivery.job_id, delivery.delivery_id, result, self.clock(),
            self.config.jobs.max_error_history))
        write.visible.add_done_callback(
            _as_visible(partial(self._outcome_written, delivery, None)))
        future = write.durable
        self._lend_slot(delivery)
        return future

    def append_logs(self, delivery: Delivery, lines: list[str]) -> "asyncio.Future[JobRecord]":
        # Log lines grow the store: like new jobs, they are refused when space is low, so
        # the reserved headroom stays for completions.
        return self.writer.submit(job_ops.AppendLogs(
            delivery.job_id, delivery.delivery_id, lines, self.clock())).durable

    def fail(self, delivery: Delivery, error: dict[str, Any]) -> "asyncio.Future[JobRecord]":
        return self._end_delivery(delivery, AttemptOutcome.FAILED, error, by_worker=True)

    def release(self, delivery: Delivery) -> "asyncio.Future[JobRecord]":
        return self._end_delivery(delivery, AttemptOutcome.RELEASED, None, by_worker=True)

    def _end_delivery(self, delivery: Delivery, outcome: AttemptOutcome,
                      error: dict[str, Any] | None, *, by_worker: bool = False
                      ) -> "asyncio.Future[JobRecord]":
        """End an attempt that did not complete; the job retries, waits again or fails."""
        self._forget(delivery)
        ending = None if by_worker else (outcome, error)
        write = self.writer.submit(job_ops.EndAttempt(
            delivery.job_id, delivery.delivery_id, outcome, self.clock(), error))
        write.visible.add_done_callback(
            _as_visible(partial(self._outcome_written, delivery, ending)))
        future = write.durable
        future.add_done_callback(lambda f: self._after_attempt(delivery, outcome, f))
        self._lend_slot(delivery)
        return future

    def _lend_slot(self, delivery: Delivery) -> None:
        """The delivery's end is being written: its slot is free for dispatches submitted
        after it, which (with a concurrency limit) take nothing should that end fail."""
        runtime = self.queues.get(delivery.queue_name)
        if runtime is not None:
            runtime.ending[delivery.delivery_id] = delivery.job_id
            runtime.active -= 1
            self.pump(runtime)

    def _outcome_written(self, delivery: Delivery,
                         ending: tuple[AttemptOutcome, dict[str, Any] | None] | None,
                         succeeded: bool, value: Any) -> None:
        """A delivery's end was committed, refused, or its write failed.

        The job's concurrency slot was lent when the end was submitted (`_lend_slot`).
        When the write failed, nothing changed: the delivery is current again and takes its
        slot back (a dispatch that used it meanwhile took nothing: see `take_waiting`). A
        worker's outcome (`ending` None) may then be sent again, and the delivery's ack
        timeout or lease still apply; the server's own ending (lease expiry, withdrawal,
        disconnect...) is tried again at the next heartbeat tick.
        """
        runtime = self.queues.get(delivery.queue_name)
        if runtime is not None:
            runtime.ending.pop(delivery.delivery_id, None)
        if succeeded or not _write_failed(value):
            return
        log.error("delivery_end_not_written", jid=delivery.job_id, did=delivery.delivery_id,
                  wid=delivery.worker.worker_id, error=str(value))
        if runtime is not None:
            runtime.active += 1
        self.deliveries[delivery.delivery_id] = delivery
        if ending is None and not delivery.worker.gone:
            delivery.worker.deliveries[delivery.delivery_id] = delivery
            return
        if ending is None:  # the worker left while its outcome was being written
            ending = (AttemptOutcome.DISCONNECTED if delivery.acked
                      else AttemptOutcome.WITHDRAWN, None)
        delivery.retry_ending = ending
        delivery.retry_at_ms = self.clock() + self.config.heartbeat.interval_ms

    def _after_attempt(self, delivery: Delivery, outcome: AttemptOutcome,
                       future: "asyncio.Future[JobRecord]") -> None:
        if future.exception() is not None:
            log.error("attempt_end_failed", jid=delivery.job_id, did=delivery.delivery_id,
                      error=str(future.exception()))
            return
        job = future.result()
        log.info("attempt_ended", jid=job.job_id, did=delivery.delivery_id,
                 wid=delivery.worker.worker_id, outcome=outcome.label, status=job.status.label)
        runtime = self.queues.get(job.queue_name)
        if runtime is None:
            return
        if job.status == JobStatus.WAITING:
            self._add_waiting(runtime, 1)
        elif job.status == JobStatus.DELAYED:
            self._note_due(runtime, job.execution_start_at_ms)

    def detach_queue(self, runtime: QueueRuntime, reason: SubscriptionEnd) -> None:
        """The queue leaves the broker's view: no enqueue, dispatch or maintenance for it,
        and its subscriptions end, each worker told with a SUBEND push."""
        name = runtime.record.name
        if self.queues.get(name) is runtime:
            del self.queues[name]
        self.cancel_rate_timer(name)
        for subscription in list(runtime.subscriptions):
            self._drop_subscription(subscription)
            subscription.worker.peer.send(encode_frame(MessageType.SUBEND, PUSH_RID, {
                "sid": subscription.subscription_id, "q": name, "reason": reason.value}))
            log.info("subscription_ended", wid=subscription.worker.worker_id,
                     sid=subscription.subscription_id, queue=name, reason=reason.value)

    def cancel_rate_timer(self, name: str) -> None:
        timer = self._rate_timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def job_id_boundary(self) -> bytes:
        """Uuid bytes above every job id made so far and below every later one."""
        return self._job_ids.new_uuid(self.clock()).bytes

    def fence_queue_deliveries(self, queue_name: str, runtime: QueueRuntime) -> int:
        """Forced OBLITERATE: the queue's deliveries stop being current, without a write
        (their jobs are about to be deleted); outcomes for them are refused from now on."""
        fenced = [d for d in self.deliveries.values() if d.queue_name == queue_name]
        for delivery in fenced:
            self._forget(delivery)
            runtime.active -= 1
        return len(fenced)

    def _forget(self, delivery: Delivery) -> None:
        self.deliveries.pop(delivery.delivery_id, None)
        delivery.worker.deliveries.pop(delivery.delivery_id, None)

    def worker_gone(self, worker: Worker, outcome: AttemptOutcome) -> None:
        """The worker's connection closed (or it said GOODBYE, or went stale)."""
        if worker.gone:
            return
        worker.gone = True
        self.workers.pop(worker.worker_id, None)
        for subscription in list(worker.subscriptions.values()):
            self._drop_subscription(subscription)
        for delivery in list(worker.deliveries.values()):
            self._end_delivery(delivery, outcome if delivery.acked else AttemptOutcome.WITHDRAWN,
                               None)
        log.info("worker_gone", wid=worker.worker_id, outcome=outcome.label)

    # -- maintenance (driven by the heartbeat) -----------------------------------------

    def tick(self, now_ms: int) -> None:
        for delivery in list(self.deliveries.values()):
            if delivery.retry_ending is not None:
                if now_ms >= delivery.retry_at_ms:
                    outcome, error = delivery.retry_ending
                    delivery.retry_ending = None
                    self._end_delivery(delivery, outcome, error)
            elif not delivery.acked and now_ms >= delivery.ack_deadline_ms:
                log.info("delivery_withdrawn", did=delivery.delivery_id, jid=delivery.job_id,
                         wid=delivery.worker.worker_id)
                self._end_delivery(delivery, AttemptOutcome.WITHDRAWN, None)
            elif delivery.acked and now_ms >= delivery.lease_deadline_ms:
                log.info("lease_expired", did=delivery.delivery_id, jid=delivery.job_id,
                         wid=delivery.worker.worker_id)
                self._end_delivery(delivery, AttemptOutcome.LEASE_EXPIRED, None)
        stale_after = self.config.worker.stale_after_ms
        for worker in list(self.workers.values()):
            if worker.deliveries and now_ms - worker.last_seen_ms >= stale_after:
                log.warning("worker_stale", wid=worker.worker_id)
                self.worker_gone(worker, AttemptOutcome.STALE_WORKER)
                worker.peer.close()
        self.promote_due_queues(now_ms)
        for runtime in self.queues.values():
            self._run_retention(runtime, now_ms)

    def _run_retention(self, runtime: QueueRuntime, now_ms: int) -> None:
        """Prune finished jobs past the queue's retention limits, one bounded batch at a
        time, each its own commit so dispatch keeps going between them."""
        config = runtime.record.config
        if runtime.retention_in_flight or not config.has_retention or self.dispatch_stopped:
            return
        runtime.retention_in_flight = True
        future = self.writer.submit(job_ops.PruneFinished(runtime.record.name, config,
                                                          now_ms, RETENTION_BATCH)).durable

        def settle(f: "asyncio.Future[job_ops.Removed]") -> None:
            runtime.retention_in_flight = False
            if f.exception() is not None:
                log.error("retention_failed", queue=runtime.record.name, error=str(f.exception()))
                return
            removed = f.result()
            if removed.removed:
                log.info("jobs_pruned", queue=runtime.record.name, jobs=removed.removed)
            if removed.more and self.queues.get(runtime.record.name) is runtime:
                self._run_retention(runtime, self.clock())

        future.add_done_callback(settle)

    def promote_due_queues(self, now_ms: int) -> None:
        for runtime in self.queues.values():
            self.run_maintenance(runtime, now_ms)

    def stop_dispatch(self) -> None:
        """Shutdown: no new QUEST from now on (deliveries already out may still end)."""
        self.dispatch_stopped = True

    def quiet(self) -> bool:
        """No dispatch or maintenance transaction is waiting for its commit."""
        return not any(r.dispatch_in_flight or r.maintenance_in_flight
                       for r in self.queues.values())

    def end_all_deliveries(self, outcome: AttemptOutcome) -> None:
        """Shutdown: every delivery still out goes back through the attempt path."""
        for delivery in list(self.deliveries.values()):
            self._end_delivery(delivery, outcome, None)

    def _note_due(self, runtime: QueueRuntime, due_ms: int | None) -> None:
        if due_ms is not None and (runtime.next_due_ms is None or due_ms < runtime.next_due_ms):
            runtime.next_due_ms = due_ms
        self._arm_due_timer()

    def _arm_due_timer(self) -> None:
        """Wake exactly when the earliest delayed job of any active queue is due, so a
        backoff or a scheduled start is not late by a heartbeat tick."""
        due = self.next_due_ms()
        if due is None or (self._due_timer is not None and self._due_timer_at <= due):
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        self._due_timer_at = due
        self._due_timer = asyncio.get_running_loop().call_later(
            max(0, due - self.clock()) / 1000, self._on_due_timer)

    def _on_due_timer(self) -> None:
        self._due_timer = None
        self.promote_due_queues(self.clock())

    def run_maintenance(self, runtime: QueueRuntime, now_ms: int) -> None:
        if (self.dispatch_stopped or runtime.maintenance_in_flight
                or runtime.record.state != QueueState.ACTIVE):
            return
        name = runtime.record.name
        operation: type[job_ops.AdvanceNew] | type[job_ops.PromoteDue]
        if runtime.new_pending:
            operation = job_ops.AdvanceNew
        elif runtime.next_due_ms is not None and runtime.next_due_ms <= now_ms:
            operation = job_ops.PromoteDue
        else:
            return
        runtime.maintenance_in_flight = True
        was_new = runtime.new_pending
        future = self.writer.submit(operation(name, now_ms, MAINTENANCE_BATCH)).durable
        future.add_done_callback(lambda f: self._after_maintenance(runtime, was_new, f))

    def _after_maintenance(self, runtime: QueueRuntime, was_new: bool,
                           future: "asyncio.Future[job_ops.Moved]") -> None:
        runtime.maintenance_in_flight = False
        if future.exception() is not None:
            log.error("maintenance_failed", queue=runtime.record.name,
                      error=str(future.exception()))
            return
        moved = future.result()
        if was_new:
            runtime.new_pending = moved.more
        runtime.next_due_ms = moved.next_due_ms
        self._arm_due_timer()
        if moved.moved:
            # Advanced new jobs may have gone to delayed rather than waiting: the estimate
            # only sizes dispatch plans, and an over-estimate costs one refund.
            self._add_waiting(runtime, moved.moved)
        if moved.more:
            self.run_maintenance(runtime, self.clock())

    def next_due_ms(self) -> int | None:
        """The earliest delayed job of any active queue, for the precise promotion timer."""
        due = [r.next_due_ms for r in self.queues.values()
               if r.next_due_ms is not None and r.record.state == QueueState.ACTIVE]
        return min(due) if due else None


def _write_failed(error: Any) -> bool:
    """The writer could not commit (storage full, a storage error, the writer lost), as
    opposed to an operation that refused because the job had moved on."""
    return (isinstance(error, RequestError)
            and error.code in (ErrorCode.INTERNAL, ErrorCode.STORAGE_FULL))


def _as_visible(callback: Callable[[bool, Any], None]
                ) -> Callable[["asyncio.Future[Any]"], None]:
    """A `(succeeded, result or error)` callback as a done callback of a visible future."""
    def done(future: "asyncio.Future[Any]") -> None:
        error = future.exception()
        callback(error is None, error if error is not None else future.result())
    return done


def _quest_frame(delivery: Delivery, job: JobRecord, subscription: Subscription,
                 policy: JobPolicy, ack_timeout_ms: int) -> bytes:
    return encode_frame_with_raw(
        MessageType.QUEST, PUSH_RID,
        {
            "did": delivery.delivery_id,
            "sid": subscription.subscription_id,
            "jid": job.job_id,
            "q": job.queue_name,
            "attempt": job.attempts_so_far + 1,
            "max_attempts": policy.max_attempts,
            "lease_ms": policy.lease_ms,
            "ack_timeout_ms": ack_timeout_ms,
        },
        {"job_payload": job.payload if job.payload is not None else _NIL},
    )
