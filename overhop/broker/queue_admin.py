"""Queue administration: add, remove, pause, resume, change settings, clear, obliterate.

Every queue change takes effect in memory when it is asked for, not when it commits: the
writer runs operations in submission order, so a request pipelined behind one on any
connection must already see it (ADDQUEUE then ENQUEUE, PAUSE then ENQUEUE); should the
commit fail, the in-memory change is undone. So SETQUEUE's settings are in force at once,
CLEARQUEUE removes only the jobs that existed when it was handled, and OBLITERATE's queue
is gone for every later request. Each verb makes its in-memory change and submits its
first write at once, then returns a task: a plain `async` sequence of steps that awaits
the commits. Clearing and obliterating run as bounded transactions (`CONTROL_BATCH` jobs
each), so a queue of a million jobs is removed without holding the writer: other commits,
dispatch included, go between the steps.
"""

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from overhop.broker.deliveries import Deliveries
from overhop.broker.events import SubscriptionEnd
from overhop.broker.maintenance import Maintenance
from overhop.broker.runtime import QueueRuntime
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.broker.watches import Watches
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState, parse_queue_config
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.queue_admin")
T = TypeVar("T")

# Jobs removed per transaction by CLEARQUEUE and OBLITERATE: about a millisecond or two of
# writer time, so a dispatch commit never waits long behind a removal step.
CONTROL_BATCH = 500


class QueueAdmin:
    def __init__(self, state: BrokerState, store: StoreReads, writer: Writer,
                 clock: Callable[[], int], scheduler: Scheduler, deliveries: Deliveries,
                 maintenance: Maintenance, watches: Watches,
                 job_id_boundary: Callable[[int], bytes], max_queues: int) -> None:
        self._state = state
        self._store = store
        self._writer = writer
        self._clock = clock
        self._scheduler = scheduler
        self._deliveries = deliveries
        self._maintenance = maintenance
        self._watches = watches
        self._max_queues = max_queues
        self._job_id_boundary = job_id_boundary

    def new_record(self, name: str, config: QueueConfig, now: int) -> QueueRecord:
        return QueueRecord(str(uuid.uuid4()), name, QueueState.ACTIVE, now, config)

    def add(self, name: str, config: QueueConfig, now: int) -> "asyncio.Task[QueueRecord]":
        if name.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM, "queue names starting with '_' are "
                               "reserved for system queues")
        if name in self._state.queues or name in self._state.elsewhere:
            raise RequestError(ErrorCode.QUEUE_EXISTS, f"queue {name!r} already exists")
        most = self._max_queues
        if sum(not r.record.is_system for r in self._state.queues.values()) >= most:
            raise RequestError(ErrorCode.TOO_MANY_QUEUES, f"the server holds {most} queues, "
                               "its limit (queues.max_queues); remove one first")
        if name in self._state.obliterating:
            raise RequestError(ErrorCode.QUEUE_EXISTS,
                               f"queue {name!r} is still being obliterated; add it again "
                               "once OBLITERATE has answered")
        record = self.new_record(name, config, now)
        runtime = QueueRuntime(record)
        self._state.queues[name] = runtime
        write = self._writer.submit(ops.AddQueue(record)).durable

        async def settle() -> QueueRecord:
            try:
                await write
            except BaseException:
                if self._state.queues.get(name) is runtime:
                    del self._state.queues[name]
                raise
            log.info("queue_added", queue=name, qid=record.queue_id)
            return record

        return _task(settle())

    def remove(self, name: str) -> "asyncio.Task[None]":
        runtime = self._state.user_queue(name)
        del self._state.queues[name]
        write = self._writer.submit(ops.RemoveQueue(name)).durable

        async def settle() -> None:
            try:
                await write
            except BaseException:
                self._state.queues.setdefault(name, runtime)
                raise
            self._scheduler.detach_queue(runtime, SubscriptionEnd.QUEUE_REMOVED)
            log.info("queue_removed", queue=name)

        return _task(settle())

    def set_state(self, name: str, state: QueueState, now: int) -> "asyncio.Task[QueueRecord]":
        """PAUSE or RESUME."""
        runtime = self._state.user_queue(name)
        previous = runtime.record
        if previous.state == state:
            code = (ErrorCode.QUEUE_ALREADY_PAUSED if state == QueueState.PAUSED
                    else ErrorCode.QUEUE_NOT_PAUSED)
            raise RequestError(code, f"queue {name!r} is already {state.value}")
        runtime.record = previous.with_state(state)
        task = self._settle_record(runtime, previous, self._writer.submit(
            ops.SetQueueState(name, state)).durable,
            "queue_paused" if state == QueueState.PAUSED else "queue_resumed")
        if state == QueueState.ACTIVE:
            runtime.new_pending = True
            self._maintenance.run(runtime, now)
            self._scheduler.pump(runtime)
        return task

    def change_settings(self, name: str, changes: dict[str, object]
                        ) -> "asyncio.Task[QueueRecord]":
        """SETQUEUE: merge `changes` into the queue's settings, persist, apply at once."""
        runtime = self._state.user_queue(name)
        previous = runtime.record
        config = parse_queue_config(changes, base=previous.config)
        runtime.record = QueueRecord(previous.queue_id, previous.name, previous.state,
                                     previous.created_at_ms, config)
        task = self._settle_record(
            runtime, previous, self._writer.submit(ops.SetQueueConfig(name, config)).durable,
            "queue_settings_changed", settings=sorted(changes))
        self._scheduler.cancel_rate_timer(name)  # the window may have changed: plan afresh
        # A raised concurrency, group or rate limit dispatches at once.
        self._scheduler.slot_freed(runtime)
        return task

    def _settle_record(self, runtime: QueueRuntime, previous: QueueRecord,
                       write: "asyncio.Future[QueueRecord]", event: str, **fields: Any
                       ) -> "asyncio.Task[QueueRecord]":
        """Await a change already made in memory; undo it if its commit fails."""
        optimistic = runtime.record

        async def settle() -> QueueRecord:
            try:
                record = await write
            except BaseException:
                if runtime.record is optimistic:
                    runtime.record = previous
                raise
            log.info(event, queue=runtime.record.name, **fields)
            return record

        return _task(settle())

    def clear(self, name: str) -> "asyncio.Task[dict[JobStatus, int]]":
        """CLEARQUEUE: remove the queue's new, waiting and delayed jobs that exist now.

        Jobs enqueued after this request was handled stay: every step removes only jobs
        whose id sorts before a boundary id taken now (ids grow with creation)."""
        runtime = self._state.user_queue(name)
        boundary = self._job_id_boundary(self._clock())
        added_before = runtime.waiting_added
        first = self._writer.submit(ops.ClearQueueBatch(name, CONTROL_BATCH, boundary)).durable

        async def steps() -> dict[JobStatus, int]:
            removed = {status: 0 for status in ops.CLEARABLE_STATUSES}
            step = await first
            while True:
                for status, count in step.counts.items():
                    removed[status] += count
                if not step.more:
                    break
                step = await self._writer.submit(ops.ClearQueueBatch(
                    name, CONTROL_BATCH, boundary)).durable
            committed = (await self._store.counts(name))[JobStatus.WAITING]
            runtime.waiting_estimate = committed + (runtime.waiting_added - added_before)
            runtime.next_due_ms = await self._store.first_due_ms(name)
            await self._watches.queue_emptied(name)
            log.info("queue_cleared", queue=name, jobs=sum(removed.values()))
            return removed

        return _task(steps())

    def obliterate(self, name: str, force: bool) -> "asyncio.Task[int]":
        """OBLITERATE: the queue and every job of it. Refused while jobs are active unless
        forced; forced, the outstanding deliveries are fenced (their outcomes are refused).
        The queue is gone for every request handled after this one; its name can be added
        again once the removal has finished (until then ADDQUEUE answers QUEUE_EXISTS)."""
        runtime = self._state.user_queue(name)
        # Slots in use (dispatches in flight included) and ends still being written: every
        # job the store holds as active, or will once the writes before this one land. In
        # memory, so the queue is gone for every request handled after this one, on both
        # engines.
        busy = runtime.active + len(runtime.ending)
        if busy and not force:
            raise _has_active(name, busy)
        self._state.obliterating.add(name)
        self._scheduler.detach_queue(runtime, SubscriptionEnd.QUEUE_OBLITERATED)
        fenced = self._deliveries.fence_queue(name, runtime)
        first = self._writer.submit(ops.ObliterateBatch(name, CONTROL_BATCH)).durable

        async def steps() -> int:
            try:
                step = await first
                removed = step.removed
                while step.more:
                    step = await self._writer.submit(ops.ObliterateBatch(
                        name, CONTROL_BATCH)).durable
                    removed += step.removed
                await self._writer.submit(ops.DeleteEmptyQueue(name)).durable
            finally:
                self._state.obliterating.discard(name)
            await self._watches.queue_emptied(name)
            log.info("queue_obliterated", queue=name, jobs=removed, fenced_deliveries=fenced)
            return removed

        return _task(steps())


def _has_active(name: str, active: int) -> RequestError:
    return RequestError(ErrorCode.QUEUE_HAS_ACTIVE_JOBS,
                        f"queue {name!r} has {active} active jobs; "
                        "wait for them or obliterate with force")


def _task(steps: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
    return asyncio.get_running_loop().create_task(steps)
