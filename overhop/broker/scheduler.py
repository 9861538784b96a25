"""The scheduler: subscriptions and credits, strict concurrency, and dispatch.

It decides which waiting jobs go to which subscriptions (`plan.plan_dispatch`, pure),
submits the move to active, and once that move is visible tells each worker's peer of its
job (`JobAssigned`, a QUEST on the wire) — one disk sync before the move is durable (see
docs/storage.md). A queue's slots are counted from the moment a dispatch is planned until
the job's outcome is submitted; a slot lent by an end still being written may be used only
by a guarded dispatch (`storage.operations.take_waiting`), so the limit stays strict even
when that write fails.
"""

import asyncio
from collections.abc import Callable
from functools import partial

from overhop.broker.events import JobAssigned, SubscriptionEnd, SubscriptionEnded
from overhop.broker.ids import DeliveryIdGenerator
from overhop.broker.plan import plan_dispatch
from overhop.broker.runtime import QueueRuntime
from overhop.broker.state import BrokerState
from overhop.broker.workers import Delivery, Subscription, Worker
from overhop.config.schema import Config
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import JobPolicy, QueueConfig, QueueState
from overhop.storage import operations as ops
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")


class Scheduler:
    def __init__(self, state: BrokerState, writer: Writer, config: Config,
                 clock: Callable[[], int]) -> None:
        self._state = state
        self._writer = writer
        self._config = config
        self._clock = clock
        self._delivery_ids = DeliveryIdGenerator()
        self._rate_timers: dict[str, asyncio.TimerHandle] = {}
        # Set by the broker: takes back a delivery whose worker cannot have it (no attempt
        # used). The deliveries part owns ending deliveries; the scheduler only asks.
        self.withdraw: Callable[[Delivery], None] = _unset

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, worker: Worker, queue_name: str, credits: int,
                  subscription_id: str) -> Subscription:
        runtime = self._state.user_queue(queue_name)
        if worker.subscription_for(queue_name) is not None:
            raise RequestError(ErrorCode.ALREADY_SUBSCRIBED,
                               f"this worker is already subscribed to {queue_name!r}")
        subscription = Subscription(subscription_id, queue_name, worker, credits)
        worker.subscriptions[subscription_id] = subscription
        runtime.subscriptions.append(subscription)
        log.info("subscribed", wid=worker.worker_id, sid=subscription_id, queue=queue_name,
                 credits=credits)
        self.pump(runtime)
        return subscription

    def unsubscribe(self, worker: Worker, subscription_id: str) -> None:
        self.drop_subscription(_own_subscription(worker, subscription_id))

    def credit(self, worker: Worker, subscription_id: str, credits: int) -> None:
        subscription = _own_subscription(worker, subscription_id)
        subscription.credits += credits
        runtime = self._state.queues.get(subscription.queue_name)
        if runtime is not None:
            self.pump(runtime)

    def peer_writable(self, worker: Worker) -> None:
        """The worker's connection drained below its high-water mark: serve it again."""
        for subscription in list(worker.subscriptions.values()):
            runtime = self._state.queues.get(subscription.queue_name)
            if runtime is not None:
                self.pump(runtime)

    def drop_subscription(self, subscription: Subscription) -> None:
        subscription.active = False
        subscription.worker.subscriptions.pop(subscription.subscription_id, None)
        runtime = self._state.queues.get(subscription.queue_name)
        if runtime is not None and subscription in runtime.subscriptions:
            runtime.subscriptions.remove(subscription)

    def detach_queue(self, runtime: QueueRuntime, reason: SubscriptionEnd,
                     owner: str | None = None) -> None:
        """The queue leaves the broker's view: no enqueue, dispatch or maintenance for it,
        and its subscriptions end, each worker told (a SUBEND push; `owner`: where the
        queue went, for QUEUE_MOVED)."""
        name = runtime.record.name
        if self._state.queues.get(name) is runtime:
            del self._state.queues[name]
        self.cancel_rate_timer(name)
        for subscription in list(runtime.subscriptions):
            self.drop_subscription(subscription)
            subscription.worker.peer.subscription_ended(
                SubscriptionEnded(subscription.subscription_id, name, reason, owner))
            log.info("subscription_ended", wid=subscription.worker.worker_id,
                     sid=subscription.subscription_id, queue=name, reason=reason.value)

    def cancel_rate_timer(self, name: str) -> None:
        timer = self._rate_timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    # -- dispatch --------------------------------------------------------------------

    def add_waiting(self, runtime: QueueRuntime, count: int) -> None:
        runtime.waiting_estimate += count
        runtime.waiting_added += count
        self.pump(runtime)

    def slot_freed(self, runtime: QueueRuntime) -> None:
        """A job's end or a changed limit freed room: dispatch, also when the only waiting
        jobs are held back by their groups' limits (the dispatch finds whether one may go
        now)."""
        if runtime.blocked_waiting > 0 and runtime.waiting_estimate <= 0:
            runtime.waiting_estimate = 1
        self.pump(runtime)

    def pump(self, runtime: QueueRuntime) -> None:
        """Dispatch what the queue's limits, credits and waiting jobs allow now."""
        if (self._state.dispatch_stopped or runtime.dispatch_in_flight or runtime.leaving
                or runtime.record.state != QueueState.ACTIVE
                or runtime.waiting_estimate <= 0 or not runtime.subscriptions):
            return
        now = self._clock()
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
        write = self._writer.submit(
            ops.TakeWaiting(runtime.record.name, assignments, now, guards,
                            runtime.dispatched))
        runtime.dispatched += len(plan)
        write.when_visible(partial(self._on_taken, runtime, plan, assignments, added_before))

    def _wake_at_rate_opening(self, runtime: QueueRuntime) -> None:
        """A rate-limited queue dispatches again the moment its window lets a job start."""
        name = runtime.record.name
        opening = runtime.rate.next_opening_ms(runtime.record.config.rate_window_ms)
        if opening is None or name in self._rate_timers:
            return

        def wake() -> None:
            self._rate_timers.pop(name, None)
            if self._state.queues.get(name) is runtime:
                self.pump(runtime)

        delay_s = max(0, opening - self._clock()) / 1000
        self._rate_timers[name] = asyncio.get_running_loop().call_later(delay_s, wake)

    def _on_taken(self, runtime: QueueRuntime, plan: list[Subscription],
                  assignments: list[tuple[str, str]], added_before: int,
                  taken: ops.Taken | None, error: RequestError | None) -> None:
        """The dispatch's move to active is visible (or failed): its QUESTs go out."""
        runtime.dispatch_in_flight = False
        if taken is None:
            # Expected while the store refuses for space: the jobs stay waiting.
            log.warning("dispatch_failed", queue=runtime.record.name, error=str(error))
            self._refund(runtime, plan)
            return
        now = self._clock()
        for subscription, (delivery_id, _), job in zip(plan, assignments, taken.jobs,
                                                        strict=False):
            self.deliver(subscription, delivery_id, job, now)
        self._refund(runtime, plan[len(taken.jobs):])
        runtime.waiting_estimate = taken.waiting_left + (runtime.waiting_added - added_before)
        runtime.blocked_waiting = taken.blocked
        self.pump(runtime)

    def _refund(self, runtime: QueueRuntime, unused: list[Subscription]) -> None:
        for subscription in unused:
            subscription.credits += 1
        runtime.active -= len(unused)

    def deliver(self, subscription: Subscription, delivery_id: str, job: JobRecord,
                now: int) -> None:
        """A job's move to active is committed: tell the worker (or take it back at once)."""
        ack_timeout = self._config.dispatch.ack_timeout_ms
        policy = self.policy(job)
        delivery = Delivery(delivery_id, job.job_id, job.queue_name, subscription, now,
                            now + ack_timeout, policy.lease_ms)
        self._state.deliveries[delivery_id] = delivery
        worker = subscription.worker
        if not subscription.active or worker.gone or self._state.dispatch_stopped:
            self.withdraw(delivery)
            return
        if not worker.peer.writable:
            # The peer stopped reading while this dispatch committed: take the job back
            # (no attempt used) and the credit too, rather than pile QUESTs up in memory.
            subscription.credits += 1
            self.withdraw(delivery)
            return
        worker.deliveries[delivery_id] = delivery
        worker.peer.job_assigned(JobAssigned(delivery_id, subscription.subscription_id, job,
                                             policy, ack_timeout))
        self._state.dispatched_total += 1
        self._state.tally.started(job.queue_name, now - job.execution_start_at_ms)

    def policy(self, job: JobRecord) -> JobPolicy:
        """The settings in force for `job`, from its queue's current settings."""
        runtime = self._state.queues.get(job.queue_name)
        if runtime is None:
            return ops.job_policy(job, QueueConfig(), self._config.jobs)
        if job.max_attempts is None and job.retry_interval_ms is None and job.lease_ms is None:
            return runtime.default_policy(self._config.jobs)
        return ops.job_policy(job, runtime.record.config, self._config.jobs)

    # -- direct hand-over of a new job -------------------------------------------------

    def can_hand_over(self, runtime: QueueRuntime) -> bool:
        """Nothing waits ahead of a new job, so it may go to a worker in its own commit.

        A dispatch in flight does not prevent it: that dispatch takes every job counted as
        waiting (the estimate is already down by them), and a job handed over is written as
        active, never seen by it; its QUEST follows that dispatch's QUESTs, in commit order.
        A slot lent by an end still being written does (with a concurrency limit): only a
        guarded dispatch (`take_waiting`) may use it.
        """
        return (runtime.waiting_estimate <= 0 and not self._state.dispatch_stopped
                and bool(runtime.subscriptions) and not runtime.dispatch_guards(1)
                and not runtime.leaving)

    def enqueue_handed_over(self, runtime: QueueRuntime, job: JobRecord, now: int
                            ) -> "asyncio.Future[str]":
        """Write the new job directly as active, assigned to a subscription with credit.

        One commit instead of two (enqueue, then dispatch), so a job reaches an idle worker
        one disk sync after its ENQUEUE; on disk the job is still exactly once, active.
        """
        plan = plan_dispatch(runtime, jobs=min(1, runtime.rate_allowance(now)))
        if not plan:
            future = self._writer.submit(ops.Enqueue(job)).durable
            self.add_waiting(runtime, 1)
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

        def on_visible(held_by: str | None, error: RequestError | None) -> None:
            # The QUEST goes out once the commit is visible, one sync before the ENQUEUE's
            # OK (which waits for the commit to be durable): see docs/storage.md.
            if held_by != job.job_id:
                # Refused, or a duplicate of a job holding its unique key: nothing added.
                self._refund(runtime, [subscription])
                self.pump(runtime)
                return
            self.deliver(subscription, delivery_id, job, self._clock())

        write = self._writer.submit(ops.Enqueue(job))
        write.when_visible(on_visible)
        return write.durable


def _own_subscription(worker: Worker, subscription_id: str) -> Subscription:
    subscription = worker.subscriptions.get(subscription_id)
    if subscription is None:
        raise RequestError(ErrorCode.SUBSCRIPTION_NOT_FOUND,
                           f"no subscription {subscription_id!r} on this worker")
    return subscription


def _unset(delivery: Delivery) -> None:
    raise RuntimeError("Scheduler.withdraw was not set")

