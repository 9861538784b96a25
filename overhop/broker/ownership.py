"""Queues coming and going in a cluster (docs/cluster.md): a queue this broker claimed is
taken into memory, one it lost or hands over leaves it.

**Taking a queue** reads what a boot reads for it (record, counts, the first due time) and
the jobs `active` at the takeover: each becomes an *orphan* delivery, held by no worker,
that keeps the job's concurrency slot until the worker running it re-attaches (its first
delivery message here, `Deliveries.worker_delivery`) or its lease, counted from now, ends
(`lease_expired`, as any silent worker's). The strict limit therefore holds through the
move. The queue's schedules are loaded and fire here from now on.

**Letting a queue go** (lost: another broker claimed it; or handed over) ends its
subscriptions with SUBEND `queue_moved`, forgets its deliveries without writing (the new
owner holds their slots) and its schedules, and leaves the name routed to the new owner.
A hand-over first stops dispatch for the queue and waits for the writes in flight, then
lets the writer release it, so the next owner takes it at once.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from overhop.broker.events import SubscriptionEnd
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.schedules import Schedules
from overhop.broker.state import BrokerState
from overhop.broker.workers import ORPHANED, Delivery, Subscription, Worker
from overhop.config.schema import Config
from overhop.logs import get_logger
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueRecord, QueueState
from overhop.storage import keys
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

# Active jobs read per page when a queue is taken over.
ORPHAN_PAGE = 1000


class AbsentPeer:
    """The connection of no one: what holds an orphan delivery until its worker comes
    back. Nothing is ever pushed to it (an orphan is never dispatched to)."""

    conn_id = "-"
    writable = False

    def job_assigned(self, event: Any) -> None:
        return None

    def subscription_ended(self, event: Any) -> None:
        return None

    def job_finished(self, event: Any) -> None:
        return None

    def worker_controlled(self, event: Any) -> None:
        return None

    def cancel_requested(self, event: Any) -> None:
        return None

    def close(self) -> None:
        return None


class QueueOwnership:
    def __init__(self, state: BrokerState, reads: StoreReads, writer: Writer, config: Config,
                 clock: Callable[[], int], scheduler: Scheduler, schedules: Schedules) -> None:
        self._state = state
        self._reads = reads
        self._writer = writer
        self._config = config
        self._clock = clock
        self._scheduler = scheduler
        self._schedules = schedules
        self._orphans = Worker(ORPHANED, AbsentPeer(), clock(), clock(), {"name": ORPHANED})

    async def claim(self, name: str) -> bool:
        """Claim the queue through the writer and take it if that worked."""
        record = await self._writer.submit(ops.ClaimQueue(name)).durable
        if record is None:
            return False
        await self.take(record)
        return True

    async def take(self, record: QueueRecord) -> None:
        name = record.name
        now = self._clock()
        runtime = QueueRuntime(record)
        runtime.waiting_estimate = (await self._reads.counts(name))[JobStatus.WAITING]
        runtime.next_due_ms = await self._reads.first_due_ms(name)
        runtime.new_pending = record.state == QueueState.ACTIVE
        orphans = await self._orphans_of(runtime, now)
        self._state.elsewhere.pop(name, None)
        self._state.queues[name] = runtime
        for delivery in orphans:
            self._state.deliveries[delivery.delivery_id] = delivery
        most = self._config.schedules.max_schedules
        self._schedules.boot([schedule for schedule in await self._reads.load_schedules(most)
                              if schedule.queue_name == name], now)
        log.info("queue_taken", queue=name, active=len(orphans),
                 waiting=runtime.waiting_estimate)
        self._scheduler.pump(runtime)

    async def _orphans_of(self, runtime: QueueRuntime, now: int) -> list[Delivery]:
        """The queue's active jobs as deliveries held by no one, each holding its slot."""
        name = runtime.record.name
        holder = Subscription(ORPHANED, name, self._orphans, 0, active=False)
        found: list[Delivery] = []
        after: bytes | None = None
        while True:
            jobs, _, more = await self._reads.list_jobs(
                name, JobStatus.ACTIVE, 0, ORPHAN_PAGE, 1 << 30, after)
            for job in jobs:
                if job.delivery_id is None:
                    continue
                lease_ms = ops.job_policy(job, runtime.record.config,
                                          self._config.jobs).lease_ms
                found.append(Delivery(job.delivery_id, job.job_id, name, holder, now, now,
                                      lease_ms, acked=True, lease_deadline_ms=now + lease_ms))
            if not more or not jobs:
                break
            after = keys.job_uuid_bytes(jobs[-1].job_id)
        runtime.active = len(found)
        return found

    def let_go(self, name: str, owner: str | None) -> None:
        """The queue is another broker's now (or nobody's yet): out of memory at once."""
        runtime = self._state.queues.get(name)
        self._state.elsewhere[name] = owner
        if runtime is None:
            return
        self._scheduler.detach_queue(runtime, SubscriptionEnd.QUEUE_MOVED, owner)
        for delivery in [d for d in self._state.deliveries.values() if d.queue_name == name]:
            self._state.forget(delivery)
        self._schedules.forget_queue(name)
        log.warning("queue_let_go", queue=name, owner=owner)

    async def hand_over(self, name: str, owner: str | None) -> None:
        """Give the queue up cleanly: no new dispatch, the writes in flight land, then the
        writer releases it so `owner` may claim it at once."""
        runtime = self._state.queues.get(name)
        if runtime is None:
            return
        runtime.leaving = True
        await self._writer.submit(ops.Barrier()).durable
        while runtime.dispatch_in_flight or runtime.maintenance_in_flight:
            await asyncio.sleep(0.005)
        if self._state.queues.get(name) is runtime:
            self.let_go(name, owner)
        await self._writer.submit(ops.ReleaseQueue(name)).durable
        log.info("queue_handed_over", queue=name, owner=owner)
