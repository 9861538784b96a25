"""The dashboard's JSON: the overview, a queue's jobs, one job, the workers, the schedules.

Every read is bounded: the overview reads each queue's counters and oldest waiting job
(two short read transactions per queue); a page of jobs is at most `MAX_PAGE` jobs and
`PAGE_BYTES` of records; a job's payload and result are cut at `MAX_SHOWN_BYTES`.
"""

import json
from typing import Any

import msgpack

from overhop import __version__
from overhop.broker.explain import explain_job, queue_dispatch_stats
from overhop.broker.runtime import QueueRuntime
from overhop.clock import to_rfc3339
from overhop.http.sentences import blocked_sentence
from overhop.http.sources import Sources, rss_bytes
from overhop.model.jobs import JobRecord, JobStatus, effective_priority
from overhop.model.queues import QueueState
from overhop.model.uniqueness import unique_until

# Rows one page of the queue view shows at most: a screenful or a few, never a scan.
MAX_PAGE = 200
# Records one page reads at most (the page stops early past it), like LSJOB's bound.
PAGE_BYTES = 4 * 1024 * 1024
# Payloads and results are shown up to this many characters of pretty JSON; the rest is
# behind the download link, so a 8 MiB payload never lands in a page.
MAX_SHOWN_BYTES = 64 * 1024


def _time(ms: int | None) -> str | None:
    return None if ms is None else to_rfc3339(ms)


async def queue_summary(sources: Sources, runtime: QueueRuntime, now_ms: int
                        ) -> dict[str, Any]:
    record = runtime.record
    counts = await sources.reads.counts(record.name)
    dispatch = await queue_dispatch_stats(sources.broker, runtime, now_ms)
    oldest_ms = dispatch["oldest_waiting_age_ms"]
    waiting = counts[JobStatus.WAITING]
    paused = record.state == QueueState.PAUSED
    badges = []
    if paused and (waiting or counts[JobStatus.NEW]):
        badges.append("paused with jobs waiting")
    if waiting and not paused and not runtime.subscriptions:
        badges.append("jobs waiting, no worker subscribed")
    elif waiting and not paused and dispatch["credits"] == 0:
        badges.append("jobs waiting, no worker credit")
    return {
        "name": record.name,
        "state": record.state.value,
        "paused": paused,
        "counts": {status.label: counts[status] for status in JobStatus},
        "oldest_waiting_age_seconds": None if oldest_ms is None else oldest_ms / 1000,
        "concurrency": dispatch["concurrency"],
        "rate": dispatch["rate"],
        "subscriptions": dispatch["subscriptions"],
        "credits": dispatch["credits"],
        "config": record.config.to_wire(),
        "created_at": to_rfc3339(record.created_at_ms),
        "badges": badges,
    }


async def server_summary(sources: Sources) -> dict[str, Any]:
    usage = await sources.reads.usage()
    return {
        "version": __version__,
        "pid": sources.pid,
        "uptime_seconds": round(sources.uptime_seconds(), 1),
        "rss_bytes": rss_bytes(),
        "storage": {"used_bytes": usage.used_bytes, "map_size_bytes": usage.map_size_bytes,
                    "file_bytes": usage.file_bytes,
                    "max_bytes": sources.config.storage.max_map_size_bytes,
                    "space_low": sources.writer.space_low},
        "connections": len(sources.connections),
        "workers": len(sources.broker.workers),
        "deliveries": len(sources.broker.deliveries),
        "read_only": sources.config.http.read_only,
    }


async def overview(sources: Sources) -> dict[str, Any]:
    now = sources.clock()
    queues = [await queue_summary(sources, runtime, now)
              for name, runtime in sorted(sources.broker.queues.items())
              if not runtime.record.is_system]
    return {"server": await server_summary(sources), "queues": queues}


def _pretty(data: bytes | None) -> tuple[str | None, int, bool]:
    """MessagePack bytes as indented JSON: (text cut at MAX_SHOWN_BYTES, full length, cut)."""
    if data is None:
        return None, 0, False
    text = pretty_json(data)
    if len(text) <= MAX_SHOWN_BYTES:
        return text, len(text), False
    return text[:MAX_SHOWN_BYTES], len(text), True


def pretty_json(data: bytes) -> str:
    value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)


def dumps(data: object) -> str:
    """Compact JSON of a view; bytes and other values MessagePack may hold (in progress,
    worker metadata) are shown as text rather than failing the page."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes: {value[:32].hex()}{'…' if len(value) > 32 else ''}>"
    return repr(value)


def job_row(job: JobRecord) -> dict[str, Any]:
    """One line of a queue's job list."""
    last_error = None
    for entry in reversed(job.history):
        error = entry.get("error")
        if isinstance(error, dict):
            last_error = str(error.get("message", ""))[:200]
            break
    return {"jid": job.job_id, "status": job.status.label, "task": job.task,
            "priority": effective_priority(job), "group": job.group,
            "created_at": to_rfc3339(job.created_at_ms),
            "execution_start_at": to_rfc3339(job.execution_start_at_ms),
            "finished_at": _time(job.finished_at_ms), "attempts": job.attempts_so_far,
            "worker_id": job.worker_id, "last_error": last_error}


def _attempt(entry: dict[str, Any], worker_names: dict[str, str]) -> dict[str, Any]:
    error = entry.get("error")
    wid = entry.get("worker_id")
    return {
        "attempt": entry.get("attempt"), "outcome": entry.get("outcome"),
        "counted": entry.get("counted"), "worker_id": wid,
        "worker_name": worker_names.get(wid) if isinstance(wid, str) else None,
        "started_at": _time(entry.get("started_at_ms")),
        "ended_at": _time(entry.get("ended_at_ms")),
        "error": None if not isinstance(error, dict) else {
            "message": str(error.get("message", "")),
            "details": None if error.get("details") is None else str(error["details"])},
    }


async def job_detail(sources: Sources, job: JobRecord) -> dict[str, Any]:
    broker = sources.broker
    now = sources.clock()
    policy = broker.policy(job)
    blocked = await explain_job(broker, job, now)
    delivery = broker.deliveries.get(job.delivery_id) if job.delivery_id else None
    payload, payload_bytes, payload_cut = _pretty(job.payload)
    result, result_bytes, result_cut = _pretty(job.result)
    names = {wid: str(w.metadata.get("name") or "") for wid, w in broker.workers.items()}
    return {
        "jid": job.job_id, "queue": job.queue_name, "status": job.status.label,
        "task": job.task, "created_at": to_rfc3339(job.created_at_ms),
        "execution_start_at": to_rfc3339(job.execution_start_at_ms),
        "finished_at": _time(job.finished_at_ms),
        "priority": effective_priority(job), "group": job.group,
        "unique_key": job.unique_key, "unique_until": unique_until(job),
        "unique_expires_at": _time(job.unique_expires_at_ms),
        "attempts": job.attempts_so_far, "max_attempts": policy.max_attempts,
        "lease_ms": policy.lease_ms,
        "payload": payload, "payload_length": payload_bytes, "payload_cut": payload_cut,
        "result": result, "result_length": result_bytes, "result_cut": result_cut,
        "history": [_attempt(entry, names) for entry in job.history],
        "logs": [{"at": to_rfc3339(at), "line": line} for at, line in job.logs],
        "logs_dropped": job.logs_dropped,
        "progress": None if delivery is None else delivery.progress,
        "delivery": None if delivery is None else {
            "delivery_id": delivery.delivery_id, "worker_id": delivery.worker.worker_id,
            "worker_name": names.get(delivery.worker.worker_id), "acked": delivery.acked,
            "sent_at": to_rfc3339(delivery.sent_at_ms),
            "lease_expires_at": _time(delivery.lease_deadline_ms) if delivery.acked else None},
        "blocked_by": blocked,
        "blocked_sentence": blocked_sentence(blocked, job.queue_name),
        "headers": job.headers or {},
    }


def workers(sources: Sources) -> dict[str, Any]:
    broker = sources.broker
    tally = broker.tally
    rows = []
    for worker in sorted(broker.workers.values(), key=lambda w: w.registered_at_ms):
        meta = worker.metadata
        label = tally.worker_label(meta.get("name"))
        totals = {outcome: count for (name, outcome), count in tally.worker_jobs.items()
                  if name == label}
        rows.append({
            "wid": worker.worker_id, "conn_id": worker.peer.conn_id,
            "name": meta.get("name"), "host": meta.get("host"), "pid": meta.get("pid"),
            "labels": meta.get("labels") or {},
            "registered_at": to_rfc3339(worker.registered_at_ms),
            "last_seen_at": to_rfc3339(worker.last_seen_ms),
            "subscriptions": [{"sid": s.subscription_id, "queue": s.queue_name,
                               "credits": s.credits}
                              for s in worker.subscriptions.values()],
            "jobs": [{"jid": d.job_id, "delivery_id": d.delivery_id, "acked": d.acked,
                      "sent_at": to_rfc3339(d.sent_at_ms)}
                     for d in worker.deliveries.values()],
            "totals_label": label, "totals": totals,
        })
    return {"workers": rows}


def schedules(sources: Sources) -> dict[str, Any]:
    """Every schedule (at most `schedules.max_schedules`) with its next and last run and
    the jobs it has fired since the server started."""
    broker = sources.broker
    fired = broker.tally.schedule_fires
    rows = []
    for name in sorted(broker.schedules):
        runtime = broker.schedules[name]
        record = runtime.record
        rows.append({
            "name": name, "queue": record.queue_name, "cron": record.cron,
            "tz": record.timezone, "missed": record.missed.value, "paused": record.paused,
            "next_run_at": _time(runtime.next_run_ms),
            "last_run_at": _time(record.last_fire_ms),
            "created_at": to_rfc3339(record.created_at_ms),
            "fired_since_start": fired.get(name, 0),
        })
    return {"schedules": rows}
