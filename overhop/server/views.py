"""Domain records as the wire shows them (the reply shapes of QUEUE, JOB, LSJOB, ...)."""

from typing import Any

from overhop.broker.workers import Delivery
from overhop.clock import to_rfc3339
from overhop.model.jobs import DEFAULT_PRIORITY, JobRecord, effective_priority
from overhop.model.queues import JobPolicy, QueueRecord
from overhop.model.schedules import ScheduleRecord
from overhop.model.uniqueness import unique_until
from overhop.wire.codec import decode_value


def queue_view(queue: QueueRecord) -> dict[str, Any]:
    return {
        "id": queue.queue_id,
        "name": queue.name,
        "config": queue.config.to_wire(),
        "state": queue.state.value,
        "created_at": to_rfc3339(queue.created_at_ms),
        "system": queue.is_system,
    }


def _time(ms: int | None) -> str | None:
    return None if ms is None else to_rfc3339(ms)


def history_view(entry: dict[str, Any]) -> dict[str, Any]:
    view = {key: value for key, value in entry.items()
            if key not in ("started_at_ms", "ended_at_ms")}
    view["started_at"] = _time(entry.get("started_at_ms"))
    view["ended_at"] = _time(entry.get("ended_at_ms"))
    return view


def job_view(job: JobRecord, policy: JobPolicy, delivery: Delivery | None = None,
             blocked_by: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job record as JOB and LSJOB show it. `max_attempts`, `retry_interval_ms`,
    `lease_ms` and `backoff` are the values in force (`overrides` lists the job's own)."""
    runtime: dict[str, Any] = {"attempts_so_far": job.attempts_so_far}
    if job.delivery_id is not None:
        runtime["delivery_id"] = job.delivery_id
        runtime["worker_id"] = job.worker_id
        runtime["started_at"] = _time(job.started_at_ms)
    if delivery is not None:
        runtime["acked"] = delivery.acked
        if delivery.acked:
            runtime["lease_expires_at"] = _time(delivery.lease_deadline_ms)
        if delivery.progress is not None:
            runtime["progress"] = delivery.progress
    return {
        "uuid": job.uuid,
        "jid": job.job_id,
        "queue_name": job.queue_name,
        "payload": None if job.payload is None else decode_value(job.payload),
        "status": job.status.label,
        "execution_start_at": to_rfc3339(job.execution_start_at_ms),
        "max_attempts": policy.max_attempts,
        "retry_interval_ms": policy.retry_interval_ms,
        "lease_ms": policy.lease_ms,
        "backoff": policy.to_wire(),
        "overrides": {name: value for name, value in (
            ("max_attempts", job.max_attempts), ("retry_interval_ms", job.retry_interval_ms),
            ("lease_ms", job.lease_ms)) if value is not None},
        "created_at": to_rfc3339(job.created_at_ms),
        "finished_at": _time(job.finished_at_ms),
        "result": None if job.result is None else decode_value(job.result),
        "history": [history_view(entry) for entry in job.history],
        "logs": [{"at": to_rfc3339(at_ms), "line": line} for at_ms, line in job.logs],
        "logs_dropped": job.logs_dropped,
        "blocked_by": blocked_by,
        "runtime": runtime,
        "headers": job.headers or {},
        "task": job.task,
        "priority": effective_priority(job),
        "cancel_reason": job.cancel_reason,
        "group": job.group,
        "unique_key": job.unique_key,
        "unique_until": unique_until(job),
        "unique_expires_at": _time(job.unique_expires_at_ms),
    }


def schedule_view(record: ScheduleRecord, next_run_ms: int | None) -> dict[str, Any]:
    """A schedule as LSSCHEDULE shows it (and ADDSCHEDULE, PAUSESCHEDULE... reply)."""
    job = record.job
    return {
        "name": record.name,
        "q": record.queue_name,
        "cron": record.cron,
        "tz": record.timezone,
        "missed": record.missed.value,
        "paused": record.paused,
        "next_run_at": _time(next_run_ms),
        "last_run_at": _time(record.last_fire_ms),
        "created_at": to_rfc3339(record.created_at_ms),
        "job_payload": None if job.payload is None else decode_value(job.payload),
        "overrides": {name: value for name, value in (
            ("max_attempts", job.max_attempts), ("retry_interval_ms", job.retry_interval_ms),
            ("lease_ms", job.lease_ms)) if value is not None},
        "headers": job.headers or {},
        "task": job.task,
        "priority": DEFAULT_PRIORITY if job.priority is None else job.priority,
    }
