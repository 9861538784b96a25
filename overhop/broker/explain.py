""""Why is this job not running?": what holds a job back, and a queue's dispatch picture.

Read-only, computed from the broker's in-memory view and the store's indexes; nothing here
changes state.
"""

from typing import Any

from overhop.broker.runtime import QueueRuntime
from overhop.broker.service import Broker
from overhop.clock import to_rfc3339
from overhop.model.jobs import FINISHED_STATUSES, JobRecord, JobStatus
from overhop.model.queues import QueueState


def _credits(runtime: QueueRuntime) -> int:
    return sum(s.credits for s in runtime.subscriptions if s.active)


async def explain_job(broker: Broker, job: JobRecord, now_ms: int) -> dict[str, Any] | None:
    """What holds a job that is not running, or None for active and finished jobs.

    Reasons, checked in this order: `queue_missing`; `queue_paused`; for delayed jobs
    `backing_off` or `scheduled` (with `until`); for new jobs `being_advanced`;
    `concurrency_limit`; `group_limit` (its group's active jobs at the queue's group
    limit); `rate_limited` (with `until`); `no_worker_credit`; else `in_line`
    (dispatch is under way, older jobs first).
    """
    if job.status == JobStatus.ACTIVE or job.status in FINISHED_STATUSES:
        return None
    runtime = broker.queues.get(job.queue_name)
    if runtime is None:
        return {"reason": "queue_missing"}
    if runtime.record.state == QueueState.PAUSED:
        return {"reason": "queue_paused"}
    if job.status == JobStatus.DELAYED:
        reason = "backing_off" if job.attempts_so_far else "scheduled"
        return {"reason": reason, "until": to_rfc3339(job.execution_start_at_ms)}
    if job.status == JobStatus.NEW:
        return {"reason": "being_advanced"}
    config = runtime.record.config
    if config.concurrency_limit is not None and runtime.active >= config.concurrency_limit:
        return {"reason": "concurrency_limit", "active": runtime.active,
                "limit": config.concurrency_limit}
    group_limit = config.group_concurrency_limit
    if job.group is not None and group_limit is not None:
        active = await broker.reads.group_active(job.queue_name, job.group)
        if active >= group_limit:
            return {"reason": "group_limit", "group": job.group, "active": active,
                    "limit": group_limit}
    if runtime.rate_allowance(now_ms) <= 0:
        opening = runtime.rate.next_opening_ms(config.rate_window_ms)
        return {"reason": "rate_limited",
                "until": to_rfc3339(opening) if opening is not None else None}
    if _credits(runtime) == 0:
        return {"reason": "no_worker_credit", "subscriptions": len(runtime.subscriptions)}
    return {"reason": "in_line"}


async def queue_dispatch_stats(broker: Broker, runtime: QueueRuntime, now_ms: int
                               ) -> dict[str, Any]:
    """QSTATS' picture of dispatch: concurrency, rate, credits, the oldest waiting job."""
    config = runtime.record.config
    oldest = await broker.reads.oldest_created_ms(runtime.record.name, JobStatus.WAITING)
    rate: dict[str, Any] | None = None
    if config.rate_limit is not None:
        rate = {"limit": config.rate_limit, "window_ms": config.rate_window_ms,
                "started_in_window": runtime.rate.started(config.rate_window_ms, now_ms)}
    return {
        "concurrency": {"active": runtime.active, "limit": config.concurrency_limit},
        "rate": rate,
        "subscriptions": len(runtime.subscriptions),
        "credits": _credits(runtime),
        "oldest_waiting_age_ms": None if oldest is None else max(0, now_ms - oldest),
        "state": runtime.record.state.value,
    }
