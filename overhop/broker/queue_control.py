"""Queue control over live work: settings changed on a running queue, clearing a queue's
pending jobs, and obliterating a queue with everything in it.

Clearing and obliterating run as a sequence of bounded transactions (`CONTROL_BATCH` jobs
each), so a queue of a million jobs is removed without holding the writer: other commits,
dispatch included, go between the steps.
"""

import structlog

from overhop.broker import job_ops
from overhop.broker.broker import Broker
from overhop.broker.dispatch import QueueRuntime
from overhop.broker.jobs import JobStatus
from overhop.broker.queues import QueueConfig, QueueRecord, parse_queue_config
from overhop.wire.errors import ErrorCode, RequestError

log = structlog.get_logger("overhop.queue_control")

# Jobs removed per transaction by CLEARQUEUE and OBLITERATE: about a millisecond or two of
# writer time, so a dispatch commit never waits long behind a removal step.
CONTROL_BATCH = 500


async def change_settings(broker: Broker, name: str, changes: dict[str, object]
                          ) -> QueueRecord:
    """SETQUEUE: merge `changes` into the queue's settings, persist, apply at once."""
    runtime = broker.user_queue(name)
    previous = runtime.record
    config = parse_queue_config(changes, base=previous.config)
    optimistic = QueueRecord(previous.queue_id, previous.name, previous.state,
                             previous.created_at_ms, config)
    runtime.record = optimistic  # requests behind this one see the new settings
    try:
        stored = await broker.writer.submit(job_ops.set_queue_config(name, config))
    except Exception:
        if runtime.record is optimistic:
            runtime.record = previous
        raise
    log.info("queue_settings_changed", queue=name, settings=sorted(changes))
    broker.pump(runtime)  # a raised concurrency or rate limit dispatches at once
    return stored


def _waiting_after(broker: Broker, runtime: QueueRuntime, added_before: int) -> int:
    committed = broker.store.counts(runtime.record.name)[JobStatus.WAITING]
    return committed + (runtime.waiting_added - added_before)


async def clear_queue(broker: Broker, name: str) -> dict[JobStatus, int]:
    """CLEARQUEUE: remove the queue's new, waiting and delayed jobs, in bounded steps."""
    runtime = broker.user_queue(name)
    removed = {status: 0 for status in job_ops.CLEARABLE_STATUSES}
    while True:
        added_before = runtime.waiting_added
        step = await broker.writer.submit(job_ops.clear_queue_batch(name, CONTROL_BATCH))
        for status, count in step.counts.items():
            removed[status] += count
        if not step.more:
            break
    runtime.waiting_estimate = _waiting_after(broker, runtime, added_before)
    runtime.next_due_ms = broker.store.first_due_ms(name)
    runtime.new_pending = False
    log.info("queue_cleared", queue=name, jobs=sum(removed.values()))
    return removed


async def obliterate_queue(broker: Broker, name: str, force: bool) -> int:
    """OBLITERATE: the queue and every job of it. Refused while jobs are active unless
    forced; forced, the outstanding deliveries are fenced (their outcomes are refused)."""
    runtime = broker.user_queue(name)
    active = broker.store.counts(name)[JobStatus.ACTIVE]
    if (active or runtime.active) and not force:
        raise RequestError(ErrorCode.QUEUE_HAS_ACTIVE_JOBS,
                           f"queue {name!r} has {max(active, runtime.active)} active jobs; "
                           "wait for them or obliterate with force")
    broker.obliterating.add(name)
    broker.detach_queue(runtime)
    fenced = broker.fence_queue_deliveries(name, runtime)
    removed = 0
    try:
        while True:
            step = await broker.writer.submit(job_ops.obliterate_batch(name, CONTROL_BATCH))
            removed += step.removed
            if not step.more:
                break
        await broker.writer.submit(job_ops.delete_empty_queue(name))
    finally:
        broker.obliterating.discard(name)
    log.info("queue_obliterated", queue=name, jobs=removed, fenced_deliveries=fenced)
    return removed


def describe_settings(config: QueueConfig) -> dict[str, object]:
    return config.to_wire()
