"""Maintenance steps, driven by the heartbeat tick and a precise due timer.

Each step is named, bounded (at most `MAINTENANCE_BATCH` or `RETENTION_BATCH` jobs per
transaction, the rest in the next step) and logs what it did: ending expired deliveries
and stale workers, advancing new jobs of a resumed queue, promoting due delayed jobs,
pruning finished jobs past retention, and, at boot, recovering the jobs a previous
process left active.
"""

import asyncio
from collections.abc import Callable

from overhop.broker.deliveries import Deliveries
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.config.schema import Config
from overhop.logs import get_logger
from overhop.model.jobs import AttemptOutcome, JobStatus
from overhop.model.queues import QueueState
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

# Jobs one maintenance transaction moves at most (promotion, recovery, advancing new jobs):
# bounded so a backlog never holds the writer for long; the rest follow in the next step.
MAINTENANCE_BATCH = 1000
# Finished jobs one retention step removes: small enough that dispatch commits between
# steps stay quick, large enough to keep up with thousands of completions a second.
RETENTION_BATCH = 500


class Maintenance:
    def __init__(self, state: BrokerState, store: StoreReads, writer: Writer, config: Config,
                 clock: Callable[[], int], scheduler: Scheduler) -> None:
        self._state = state
        self._store = store
        self._writer = writer
        self._config = config
        self._clock = clock
        self._scheduler = scheduler
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_timer_at = 0

    def tick(self, now: int, deliveries: Deliveries) -> None:
        deliveries.expire(now)
        stale_after = self._config.worker.stale_after_ms
        for worker in list(self._state.workers.values()):
            if worker.deliveries and now - worker.last_seen_ms >= stale_after:
                log.warning("worker_stale", wid=worker.worker_id)
                deliveries.worker_gone(worker, AttemptOutcome.STALE_WORKER, now)
                worker.peer.close()
        self.promote_due_queues(now)
        for runtime in self._state.queues.values():
            self._run_retention(runtime, now)

    async def recover_active(self, name: str) -> None:
        """Boot: end the attempts a previous process left active (`server_restart`)."""
        recovered = 0
        while True:
            moved = await self._writer.submit(ops.RecoverActive(
                name, self._clock(), MAINTENANCE_BATCH)).durable
            recovered += moved.moved
            self.note_due(self._state.queues[name], moved.next_due_ms)
            if not moved.more:
                break
        if recovered:
            runtime = self._state.queues[name]
            runtime.waiting_estimate = (await self._store.counts(name))[JobStatus.WAITING]
            log.warning("active_jobs_recovered", queue=name, jobs=recovered)

    # -- retention ---------------------------------------------------------------------

    def _run_retention(self, runtime: QueueRuntime, now: int) -> None:
        """Prune finished jobs past the queue's retention limits, one bounded batch at a
        time, each its own commit so dispatch keeps going between them."""
        config = runtime.record.config
        if (runtime.retention_in_flight or not config.has_retention
                or self._state.dispatch_stopped):
            return
        runtime.retention_in_flight = True
        future = self._writer.submit(ops.PruneFinished(runtime.record.name, config, now,
                                                       RETENTION_BATCH)).durable

        def settle(f: "asyncio.Future[ops.Removed]") -> None:
            runtime.retention_in_flight = False
            if f.exception() is not None:
                log.error("retention_failed", queue=runtime.record.name,
                          error=str(f.exception()))
                return
            removed = f.result()
            if removed.removed:
                log.info("jobs_pruned", queue=runtime.record.name, jobs=removed.removed)
            if removed.more and self._state.queues.get(runtime.record.name) is runtime:
                self._run_retention(runtime, self._clock())

        future.add_done_callback(settle)

    # -- new and delayed jobs becoming waiting -----------------------------------------

    def promote_due_queues(self, now: int) -> None:
        for runtime in self._state.queues.values():
            self.run(runtime, now)

    def run(self, runtime: QueueRuntime, now: int) -> None:
        """Advance a resumed queue's new jobs, else promote its due delayed jobs."""
        if (self._state.dispatch_stopped or runtime.maintenance_in_flight
                or runtime.record.state != QueueState.ACTIVE):
            return
        name = runtime.record.name
        operation: type[ops.AdvanceNew] | type[ops.PromoteDue]
        if runtime.new_pending:
            operation = ops.AdvanceNew
        elif runtime.next_due_ms is not None and runtime.next_due_ms <= now:
            operation = ops.PromoteDue
        else:
            return
        runtime.maintenance_in_flight = True
        was_new = runtime.new_pending
        future = self._writer.submit(operation(name, now, MAINTENANCE_BATCH)).durable
        future.add_done_callback(lambda f: self._after_step(runtime, was_new, f))

    def _after_step(self, runtime: QueueRuntime, was_new: bool,
                    future: "asyncio.Future[ops.Moved]") -> None:
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
            self._scheduler.add_waiting(runtime, moved.moved)
        if moved.more:
            self.run(runtime, self._clock())

    def note_due(self, runtime: QueueRuntime, due_ms: int | None) -> None:
        if due_ms is not None and (runtime.next_due_ms is None or due_ms < runtime.next_due_ms):
            runtime.next_due_ms = due_ms
        self._arm_due_timer()

    def next_due_ms(self) -> int | None:
        """The earliest delayed job of any active queue, for the precise promotion timer."""
        due = [r.next_due_ms for r in self._state.queues.values()
               if r.next_due_ms is not None and r.record.state == QueueState.ACTIVE]
        return min(due) if due else None

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
            max(0, due - self._clock()) / 1000, self._on_due_timer)

    def _on_due_timer(self) -> None:
        self._due_timer = None
        self.promote_due_queues(self._clock())
