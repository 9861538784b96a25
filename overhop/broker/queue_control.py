"""Changes to queues: adding, removing, pausing and resuming them, settings changed on a
running queue, clearing a queue's pending jobs, and obliterating a queue with everything
in it.

Every queue change takes effect in memory when it is submitted, not when it commits: the
writer runs operations in submission order, so a request pipelined behind one on any
connection must already see it (ADDQUEUE then ENQUEUE, PAUSE then ENQUEUE); should the
commit fail, the in-memory change is undone. So SETQUEUE's settings are in force at once,
CLEARQUEUE removes only the jobs that existed when it was handled, and OBLITERATE's queue
is gone for every later request. Clearing and obliterating run
as a sequence of bounded transactions (`CONTROL_BATCH` jobs each), so a queue of a million
jobs is removed without holding the writer: other commits, dispatch included, go between
the steps.
"""

import asyncio

from overhop.broker.broker import Broker
from overhop.broker.dispatch import QueueRuntime
from overhop.broker.workers import SubscriptionEnd
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState, parse_queue_config
from overhop.storage import operations as job_ops

log = get_logger("overhop.queue_control")

# Jobs removed per transaction by CLEARQUEUE and OBLITERATE: about a millisecond or two of
# writer time, so a dispatch commit never waits long behind a removal step.
CONTROL_BATCH = 500


def add_queue(broker: Broker, name: str, config: QueueConfig) -> "asyncio.Future[QueueRecord]":
    if name.startswith("_"):
        raise RequestError(ErrorCode.QUEUE_SYSTEM, "queue names starting with '_' are "
                           "reserved for system queues")
    if name in broker.queues:
        raise RequestError(ErrorCode.QUEUE_EXISTS, f"queue {name!r} already exists")
    most = broker.config.queues.max_queues
    if sum(not r.record.is_system for r in broker.queues.values()) >= most:
        raise RequestError(ErrorCode.TOO_MANY_QUEUES, f"the server holds {most} queues, its "
                           "limit (queues.max_queues); remove one first")
    if name in broker.obliterating:
        raise RequestError(ErrorCode.QUEUE_EXISTS,
                           f"queue {name!r} is still being obliterated; add it again "
                           "once OBLITERATE has answered")
    record = broker.new_queue_record(name, config)
    runtime = QueueRuntime(record)
    broker.queues[name] = runtime

    def settle(future: "asyncio.Future[QueueRecord]") -> None:
        if future.exception() is None:
            log.info("queue_added", queue=name, qid=record.queue_id)
        elif broker.queues.get(name) is runtime:
            del broker.queues[name]

    future = broker.writer.submit(job_ops.add_queue, record, grows=True)
    future.add_done_callback(settle)
    return future

def remove_queue(broker: Broker, name: str) -> "asyncio.Future[None]":
    runtime = broker.user_queue(name)
    del broker.queues[name]

    def settle(future: "asyncio.Future[None]") -> None:
        if future.exception() is not None:
            broker.queues.setdefault(name, runtime)
            return
        broker.detach_queue(runtime, SubscriptionEnd.QUEUE_REMOVED)
        log.info("queue_removed", queue=name)

    future = broker.writer.submit(job_ops.remove_queue, name)
    future.add_done_callback(settle)
    return future

def set_queue_state(broker: Broker, name: str, state: QueueState) -> "asyncio.Future[QueueRecord]":
    runtime = broker.user_queue(name)
    previous = runtime.record
    if previous.state == state:
        code = (ErrorCode.QUEUE_ALREADY_PAUSED if state == QueueState.PAUSED
                else ErrorCode.QUEUE_NOT_PAUSED)
        raise RequestError(code, f"queue {name!r} is already {state.value}")
    runtime.record = previous.with_state(state)
    optimistic = runtime.record

    def settle(future: "asyncio.Future[QueueRecord]") -> None:
        if future.exception() is not None:
            if runtime.record is optimistic:
                runtime.record = previous
            return
        log.info("queue_paused" if state == QueueState.PAUSED else "queue_resumed",
                 queue=name)

    future = broker.writer.submit(job_ops.set_queue_state, name, state)
    future.add_done_callback(settle)
    if state == QueueState.ACTIVE:
        runtime.new_pending = True
        broker.run_maintenance(runtime, broker.clock())
        broker.pump(runtime)
    return future


def change_settings(broker: Broker, name: str, changes: dict[str, object]
                    ) -> "asyncio.Future[QueueRecord]":
    """SETQUEUE: merge `changes` into the queue's settings, persist, apply at once."""
    runtime = broker.user_queue(name)
    previous = runtime.record
    config = parse_queue_config(changes, base=previous.config)
    optimistic = QueueRecord(previous.queue_id, previous.name, previous.state,
                             previous.created_at_ms, config)
    runtime.record = optimistic

    def settle(future: "asyncio.Future[QueueRecord]") -> None:
        if future.exception() is not None:
            if runtime.record is optimistic:
                runtime.record = previous
            return
        log.info("queue_settings_changed", queue=name, settings=sorted(changes))

    future = broker.writer.submit(job_ops.set_queue_config, name, config)
    future.add_done_callback(settle)
    broker.cancel_rate_timer(name)  # the window may have changed: plan it afresh
    broker.pump(runtime)  # a raised concurrency or rate limit dispatches at once
    return future


def _waiting_after(broker: Broker, runtime: QueueRuntime, added_before: int) -> int:
    committed = broker.store.counts(runtime.record.name)[JobStatus.WAITING]
    return committed + (runtime.waiting_added - added_before)


def clear_queue(broker: Broker, name: str) -> "asyncio.Future[dict[JobStatus, int]]":
    """CLEARQUEUE: remove the queue's new, waiting and delayed jobs that exist now.

    Jobs enqueued after this request was handled stay: every step removes only jobs whose
    id sorts before a boundary id taken now (ids grow with creation)."""
    runtime = broker.user_queue(name)
    boundary = broker.job_id_boundary()
    removed = {status: 0 for status in job_ops.CLEARABLE_STATUSES}
    done: asyncio.Future[dict[JobStatus, int]] = asyncio.get_running_loop().create_future()
    added_before = runtime.waiting_added

    def step_done(future: "asyncio.Future[job_ops.Removed]") -> None:
        if future.exception() is not None:
            done.set_exception(future.exception())  # type: ignore[arg-type]
            return
        step = future.result()
        for status, count in step.counts.items():
            removed[status] += count
        if step.more:
            submit_step()
            return
        runtime.waiting_estimate = _waiting_after(broker, runtime, added_before)
        runtime.next_due_ms = broker.store.first_due_ms(name)
        log.info("queue_cleared", queue=name, jobs=sum(removed.values()))
        done.set_result(removed)

    def submit_step() -> None:
        broker.writer.submit(job_ops.clear_queue_batch, name, CONTROL_BATCH,
                             boundary).add_done_callback(step_done)

    submit_step()
    return done


def obliterate_queue(broker: Broker, name: str, force: bool) -> "asyncio.Future[int]":
    """OBLITERATE: the queue and every job of it. Refused while jobs are active unless
    forced; forced, the outstanding deliveries are fenced (their outcomes are refused).
    The queue is gone for every request handled after this one; its name can be added
    again once the removal has finished (until then ADDQUEUE answers QUEUE_EXISTS)."""
    runtime = broker.user_queue(name)
    active = broker.store.counts(name)[JobStatus.ACTIVE]
    if (active or runtime.active) and not force:
        raise RequestError(ErrorCode.QUEUE_HAS_ACTIVE_JOBS,
                           f"queue {name!r} has {max(active, runtime.active)} active jobs; "
                           "wait for them or obliterate with force")
    broker.obliterating.add(name)
    broker.detach_queue(runtime, SubscriptionEnd.QUEUE_OBLITERATED)
    fenced = broker.fence_queue_deliveries(name, runtime)
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    removed = [0]

    def fail(exc: BaseException) -> None:
        broker.obliterating.discard(name)
        done.set_exception(exc)

    def queue_deleted(future: "asyncio.Future[None]") -> None:
        if future.exception() is not None:
            fail(future.exception())  # type: ignore[arg-type]
            return
        broker.obliterating.discard(name)
        log.info("queue_obliterated", queue=name, jobs=removed[0], fenced_deliveries=fenced)
        done.set_result(removed[0])

    def step_done(future: "asyncio.Future[job_ops.Removed]") -> None:
        if future.exception() is not None:
            fail(future.exception())  # type: ignore[arg-type]
            return
        step = future.result()
        removed[0] += step.removed
        if step.more:
            submit_step()
        else:
            broker.writer.submit(job_ops.delete_empty_queue, name).add_done_callback(
                queue_deleted)

    def submit_step() -> None:
        broker.writer.submit(job_ops.obliterate_batch, name, CONTROL_BATCH).add_done_callback(
            step_done)

    submit_step()
    return done
