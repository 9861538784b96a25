"""The broker's service: the one declared list of verbs the server's handlers call.

The broker keeps queues, workers and deliveries in memory on the event loop, never sees a
socket (a worker is reached through its `Peer`, told of `events`), and never writes to LMDB
itself: every change is an operation handed to the writer, and every reply that depends on
a change resolves only once the writer says it is on disk. The verbs read the clock once
and pass the time down; the parts behind them are split by lifecycle:

- `enqueue.Enqueuer`: new jobs;
- `scheduler.Scheduler`: subscriptions, credits, strict concurrency, dispatch;
- `deliveries.Deliveries`: ack, leases, outcomes, fencing;
- `maintenance.Maintenance`: the named, bounded steps of the heartbeat tick;
- `queue_admin.QueueAdmin`: queue changes, as `async` sequences of steps;
- `schedules.Schedules`: cron schedules and their fires.
- `job_actions.JobActions`: CANCEL, and BULK actions in bounded batches.
- `ownership.QueueOwnership`: in a cluster, the queues this broker takes and lets go.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from overhop.broker.deliveries import Deliveries
from overhop.broker.enqueue import Enqueuer, EnqueueRequest
from overhop.broker.events import FinalStatus, WorkerControlled
from overhop.broker.job_actions import BulkAction, JobActions
from overhop.broker.maintenance import Maintenance
from overhop.broker.ownership import QueueOwnership
from overhop.broker.queue_admin import QueueAdmin
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.schedules import ScheduleRequest, ScheduleRuntime, Schedules
from overhop.broker.state import BrokerState
from overhop.broker.watches import Watches
from overhop.broker.worker_control import WorkerReport, apply_report, control_workers
from overhop.broker.workers import Delivery, Peer, Subscription, Worker
from overhop.config.schema import Config
from overhop.errors import DeferredRefusal, ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import SYSTEM_QUEUE_NAME, JobPolicy, QueueConfig, QueueRecord, QueueState
from overhop.observability.tally import Tally
from overhop.storage import operations as ops
from overhop.storage.reads import LmdbReads, StoreReads
from overhop.storage.store import Store
from overhop.storage.writer import Writer

__all__ = ["Broker", "BulkAction", "EnqueueRequest", "ScheduleRequest"]

log = get_logger("overhop.broker")


class Broker:
    def __init__(self, config: Config, store: Store | StoreReads, writer: Writer,
                 clock: Callable[[], int]) -> None:
        self.config = config
        # Every read of the store is awaited (storage/reads.py); an LMDB `Store` given
        # here (as tests do) is read through `LmdbReads`, which answers at once.
        self.reads: StoreReads = LmdbReads(store) if isinstance(store, Store) else store
        store = self.reads
        self.writer = writer
        self.clock = clock
        self._state = state = BrokerState()
        self._scheduler = scheduler = Scheduler(state, writer, config, clock)
        self._maintenance = Maintenance(state, store, writer, config, clock, scheduler)
        self._watches = watches = Watches(store, writer)
        self._deliveries = Deliveries(state, store, writer, config, clock, scheduler, watches,
                                      self._maintenance.note_due)
        scheduler.withdraw = self._deliveries.withdraw
        self._enqueuer = Enqueuer(state, writer, scheduler, watches,
                                  self._maintenance.note_due)
        self._queues = QueueAdmin(state, store, writer, clock, scheduler, self._deliveries,
                                  self._maintenance, watches, self._job_id_boundary,
                                  config.queues.max_queues)
        self._schedules = Schedules(state, writer, self._enqueuer, scheduler, clock,
                                    config.schedules.max_schedules)
        self._actions = JobActions(state, store, writer, scheduler, watches,
                                   self._job_id_boundary)
        # Cluster mode (docs/cluster.md): this broker owns only the queues it claimed.
        self.clustered = bool(config.cluster.node_id)
        self._ownership = QueueOwnership(state, store, writer, config, clock, scheduler,
                                         self._schedules)
        if self.clustered:
            writer.on_queue_moved = self._queue_moved

    # -- what the server reads -----------------------------------------------------------

    @property
    def queues(self) -> Mapping[str, QueueRuntime]:
        return self._state.queues

    @property
    def workers(self) -> Mapping[str, Worker]:
        return self._state.workers

    @property
    def deliveries(self) -> Mapping[str, Delivery]:
        return self._state.deliveries

    @property
    def obliterating(self) -> frozenset[str]:
        """Queues being obliterated (their names cannot be added until that ends)."""
        return frozenset(self._state.obliterating)

    @property
    def dispatched_total(self) -> int:
        return self._state.dispatched_total

    @property
    def tally(self) -> Tally:
        """Jobs enqueued, attempts started and ended, per queue and worker (read-only)."""
        return self._state.tally

    def user_queue(self, name: str) -> QueueRuntime:
        return self._state.user_queue(name)

    def check_here(self, queue_name: str) -> None:
        """QUEUE_MOVED if another broker owns the queue (cluster mode)."""
        self._state.check_here(queue_name)

    def policy(self, job: JobRecord) -> JobPolicy:
        return self._scheduler.policy(job)

    def quiet(self) -> bool:
        """No dispatch or maintenance transaction is waiting for its commit."""
        return not any(r.dispatch_in_flight or r.maintenance_in_flight
                       for r in self._state.queues.values())

    def next_due_ms(self) -> int | None:
        return self._maintenance.next_due_ms()

    # -- boot and shutdown ---------------------------------------------------------------

    async def boot(self) -> None:
        """Load queues (not jobs), create `_system`, and end attempts the old process left.
        In a cluster, only make sure `_system` exists: the queues come as they are claimed
        (`claim_queue`), with the attempts still active held for their workers."""
        if self.clustered:
            await self._boot_clustered()
            return
        queues = self._state.queues
        for record in await self.reads.load_queues():
            runtime = QueueRuntime(record)
            runtime.waiting_estimate = (await self.reads.counts(record.name))[JobStatus.WAITING]
            runtime.next_due_ms = await self.reads.first_due_ms(record.name)
            runtime.new_pending = record.state == QueueState.ACTIVE
            queues[record.name] = runtime
        if SYSTEM_QUEUE_NAME not in queues:
            record = self._queues.new_record(SYSTEM_QUEUE_NAME, QueueConfig(), self.clock())
            await self.writer.submit(ops.AddQueue(record)).durable
            queues[record.name] = QueueRuntime(record)
        for name in list(queues):
            await self._maintenance.recover_active(name)
        most = self.config.schedules.max_schedules
        records = await self.reads.load_schedules(most + 1)
        if len(records) > most:  # the setting was lowered below what is stored
            log.warning("schedules_over_limit", max_schedules=most)
            records = records[:most]
        self._schedules.boot(records, self.clock())

    async def _boot_clustered(self) -> None:
        record = self._queues.new_record(SYSTEM_QUEUE_NAME, QueueConfig(), self.clock())
        try:
            await self.writer.submit(ops.AddQueue(record)).durable
        except RequestError as exc:
            if exc.code != ErrorCode.QUEUE_EXISTS:  # added before, here or by another broker
                raise
            return
        self._state.queues[record.name] = QueueRuntime(record)

    # -- cluster mode ----------------------------------------------------------------------

    async def claim_queue(self, name: str) -> bool:
        """Claim a queue no live broker holds, and take it (with its active jobs held for
        their workers); False if another broker holds it."""
        return await self._ownership.claim(name)

    def let_go_queue(self, name: str, owner: str | None) -> None:
        """Another broker owns the queue now (lost, not handed over)."""
        self._ownership.let_go(name, owner)

    async def hand_over_queue(self, name: str, owner: str | None) -> None:
        """Give the queue up cleanly, so that `owner` may take it at once."""
        await self._ownership.hand_over(name, owner)

    def route_elsewhere(self, owners: Mapping[str, str | None]) -> None:
        """The queues other brokers own (or none does) now, name -> owner's address."""
        elsewhere = self._state.elsewhere
        elsewhere.clear()
        elsewhere.update((name, owner) for name, owner in owners.items()
                         if name not in self._state.queues)

    def _queue_moved(self, name: str) -> str | None:
        """A write was refused because another broker took the queue: let it go (once the
        writer's outcomes are settled) and answer with the owner known so far."""
        owner = self._state.elsewhere.get(name)
        if name in self._state.queues:
            asyncio.get_running_loop().call_soon(self._ownership.let_go, name, owner)
        return owner

    def stop_dispatch(self) -> None:
        """Shutdown: no new QUEST and no schedule fire from now on (deliveries already
        out may still end)."""
        self._state.dispatch_stopped = True
        self._schedules.stop()

    def end_all_deliveries(self, outcome: AttemptOutcome) -> None:
        """Shutdown: every delivery still out goes back through the attempt path."""
        self._deliveries.end_all(outcome, self.clock())

    def tick(self, now_ms: int) -> None:
        """The heartbeat's maintenance: expiries, stale workers, promotion, retention."""
        self._maintenance.tick(now_ms, self._deliveries)
        self._schedules.fire_due(now_ms)

    def promote_due_queues(self, now_ms: int) -> None:
        self._maintenance.promote_due_queues(now_ms)

    # -- queues ----------------------------------------------------------------------------

    def add_queue(self, name: str, config: QueueConfig) -> "asyncio.Task[QueueRecord]":
        return self._queues.add(name, config, self.clock())

    def remove_queue(self, name: str) -> "asyncio.Task[None]":
        return self._queues.remove(name)

    def set_queue_state(self, name: str, state: QueueState) -> "asyncio.Task[QueueRecord]":
        return self._queues.set_state(name, state, self.clock())

    def change_settings(self, name: str, changes: dict[str, object]
                        ) -> "asyncio.Task[QueueRecord]":
        return self._queues.change_settings(name, changes)

    def clear_queue(self, name: str) -> "asyncio.Task[dict[JobStatus, int]]":
        return self._queues.clear(name)

    def obliterate_queue(self, name: str, force: bool) -> "asyncio.Task[int]":
        return self._queues.obliterate(name, force)

    # -- jobs --------------------------------------------------------------------------------

    def enqueue(self, request: EnqueueRequest, watcher: Worker | None = None
                ) -> tuple[str, "asyncio.Future[str]"]:
        return self._enqueuer.enqueue(request, self.clock(), watcher)

    def enqueue_many(self, queue_name: str, requests: list[EnqueueRequest],
                     watcher: Worker | None = None
                     ) -> tuple[list[str], "asyncio.Future[list[str]]"]:
        return self._enqueuer.enqueue_many(queue_name, requests, self.clock(), watcher)

    def job(self, job_id: str) -> "Awaitable[JobRecord | None]":
        """The stored job (refused at once for a system queue's job)."""
        self.check_job_readable(job_id)
        return self.reads.get_job(job_id)

    def check_job_readable(self, job_id: str) -> None:
        queue_name = job_id.rsplit(":", 1)[0] if ":" in job_id else ""
        if queue_name.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be read")
        self._state.check_here(queue_name)

    def remove_job(self, job_id: str) -> "asyncio.Future[JobRecord]":
        if job_id.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be removed")
        self._state.check_job_here(job_id)
        future = self.writer.submit(ops.RemoveJob(job_id)).durable
        future.add_done_callback(partial(self._removed, job_id))
        return future

    def _removed(self, job_id: str, durable: "asyncio.Future[JobRecord]") -> None:
        if not durable.cancelled() and durable.exception() is None:
            self._watches.finished(job_id, FinalStatus.REMOVED)

    def retry_job(self, job_id: str) -> "asyncio.Future[JobRecord]":
        if job_id.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "jobs of system queues cannot be retried")

        def settle(future: "asyncio.Future[JobRecord]") -> None:
            if future.exception() is not None:
                return
            job = future.result()
            runtime = self._state.queues.get(job.queue_name)
            if runtime is not None and job.status == JobStatus.WAITING:
                self._scheduler.add_waiting(runtime, 1)

        self._state.check_job_here(job_id)
        future = self.writer.submit(ops.RetryFailed(job_id, self.clock())).durable
        future.add_done_callback(settle)
        return future

    # -- schedules -----------------------------------------------------------------------

    @property
    def schedules(self) -> Mapping[str, ScheduleRuntime]:
        return self._schedules.schedules

    def schedule_queue(self, name: str) -> str | None:
        """The queue a schedule fires into (for the permission check), None if unknown."""
        return self._schedules.queue_of(name)

    def add_schedule(self, request: ScheduleRequest) -> "asyncio.Future[ScheduleRuntime]":
        self._state.check_here(request.queue_name)
        return self._schedules.add(request, self.clock())

    def remove_schedule(self, name: str) -> "asyncio.Future[ScheduleRuntime]":
        self._check_schedule_here(name)
        return self._schedules.remove(name)

    def set_schedule_paused(self, name: str, paused: bool
                            ) -> "asyncio.Future[ScheduleRuntime]":
        self._check_schedule_here(name)
        return self._schedules.set_paused(name, paused, self.clock())

    def _check_schedule_here(self, name: str) -> None:
        """Cluster mode: a schedule this broker does not hold may fire into a queue another
        broker owns; which, takes a read (SCHEDULE_NOT_FOUND if none holds it)."""
        if self.clustered and name not in self._schedules.schedules:
            raise DeferredRefusal(partial(self._schedule_elsewhere, name))

    async def _schedule_elsewhere(self, name: str) -> None:
        most = self.config.schedules.max_schedules
        for record in await self.reads.load_schedules(most + 1):
            if record.name == name:
                self._state.check_here(record.queue_name)
        raise RequestError(ErrorCode.SCHEDULE_NOT_FOUND, f"no schedule {name!r}")

    # -- job actions ---------------------------------------------------------------------

    def cancel_job(self, job_id: str, reason: str) -> "asyncio.Future[JobRecord]":
        """CANCEL: the job as stored after it (cancelled, or active and being cancelled)."""
        if job_id.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM,
                               "jobs of system queues cannot be cancelled")
        self._state.check_job_here(job_id)
        return self._actions.cancel(job_id, reason, self.clock())

    def bulk(self, queue_name: str, status: JobStatus, action: BulkAction, reason: str
             ) -> "asyncio.Task[tuple[int, bool]]":
        return self._actions.bulk(queue_name, status, action, reason, self.clock())

    # -- workers and subscriptions ---------------------------------------------------------

    def register_worker(self, peer: Peer, metadata: dict[str, Any]) -> Worker:
        now = self.clock()
        worker = Worker(str(uuid.uuid4()), peer, now, now, metadata)
        self._state.workers[worker.worker_id] = worker
        return worker

    def subscribe(self, worker: Worker, queue_name: str, credits: int) -> Subscription:
        return self._scheduler.subscribe(worker, queue_name, credits, str(uuid.uuid4()))

    def unsubscribe(self, worker: Worker, subscription_id: str) -> None:
        self._scheduler.unsubscribe(worker, subscription_id)

    def credit(self, worker: Worker, subscription_id: str, credits: int) -> None:
        self._scheduler.credit(worker, subscription_id, credits)

    def peer_writable(self, worker: Worker) -> None:
        self._scheduler.peer_writable(worker)

    def worker_gone(self, worker: Worker, outcome: AttemptOutcome) -> None:
        self._deliveries.worker_gone(worker, outcome, self.clock())
        self._watches.worker_gone(worker)

    def control_workers(self, target: str, command: WorkerControlled) -> int:
        """WORKERCTL from an admin: how many workers `target` (a name or an id) named."""
        return control_workers(self._state.workers.values(), target, command)

    def worker_reported(self, worker: Worker, report: WorkerReport) -> None:
        apply_report(worker, report)

    # -- results -------------------------------------------------------------------------

    def watch(self, worker: Worker, job_id: str) -> "asyncio.Future[None]":
        """WATCH: resolves once the watch is set (or the ended job's outcome sent)."""
        self._state.check_job_here(job_id)
        return self._watches.watch(worker, job_id)

    def unwatch(self, worker: Worker, job_id: str) -> None:
        self._watches.remove(worker, job_id)

    # -- deliveries ----------------------------------------------------------------------

    def worker_delivery(self, worker: Worker, delivery_id: str, job_id: str) -> Delivery:
        return self._deliveries.worker_delivery(worker, delivery_id, job_id)

    def ack(self, delivery: Delivery) -> None:
        self._deliveries.ack(delivery, self.clock())

    def heartbeat(self, delivery: Delivery, progress: Any) -> int:
        return self._deliveries.heartbeat(delivery, progress, self.clock())

    # A worker's outcome with `credit` gives its subscription one credit back once it is
    # taken (`_credit_back`): at receipt, not once durable.

    def complete(self, delivery: Delivery, result: bytes | None, credit: bool = False
                 ) -> "asyncio.Future[int]":
        durable = self._deliveries.complete(delivery, result, self.clock())
        if credit:
            self._credit_back(delivery)
        return durable

    def fail(self, delivery: Delivery, error: dict[str, Any], credit: bool = False
             ) -> "asyncio.Future[JobRecord]":
        durable = self._deliveries.end(delivery, AttemptOutcome.FAILED, error, self.clock(),
                                       by_worker=True)
        if credit:
            self._credit_back(delivery)
        return durable

    def release(self, delivery: Delivery, credit: bool = False) -> "asyncio.Future[JobRecord]":
        durable = self._deliveries.end(delivery, AttemptOutcome.RELEASED, None, self.clock(),
                                       by_worker=True)
        if credit:
            self._credit_back(delivery)
        return durable

    def _credit_back(self, delivery: Delivery) -> None:
        """One credit back to the subscription the delivery came on, as CREDIT 1 would give
        it (and the queue pumped), if that subscription is still active and its worker's;
        else none: it ended, or the delivery was re-attached after a takeover (its holder
        is never active, `Deliveries._reattach`)."""
        subscription = delivery.subscription
        worker = subscription.worker
        if subscription.active and worker.subscriptions.get(
                subscription.subscription_id) is subscription:
            self._scheduler.credit(worker, subscription.subscription_id, 1)

    def append_logs(self, delivery: Delivery, lines: list[str]) -> "asyncio.Future[JobRecord]":
        return self._deliveries.append_logs(delivery, lines, self.clock())

    def _job_id_boundary(self, now_ms: int) -> bytes:
        """Uuid bytes above every job id made so far and below every later one."""
        return self._enqueuer.job_ids.new_uuid(now_ms).bytes
