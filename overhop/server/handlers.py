"""The handler table: one function per client message type.

Handlers hold no business logic: parse the payload, make one call into the broker, shape
the reply. A handler returns the OK payload at once, or a `Pending` (a future and the
function that turns its result into the OK payload) when the answer waits for a commit.
Errors are raised as `OverhopError`; the connection turns them into ERR frames.
"""

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from overhop.broker import queue_control
from overhop.broker.broker import EnqueueRequest
from overhop.broker.explain import explain_job, queue_dispatch_stats
from overhop.clock import MAX_TIME_MS, now_ms, to_rfc3339
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import STATUS_LABELS, JobRecord, JobStatus
from overhop.model.queues import QueueState, parse_queue_config, parse_queue_name
from overhop.server.context import ServerContext
from overhop.server.status import status_report
from overhop.server.views import job_view, queue_view
from overhop.wire.codec import encode_value, fitting_prefix
from overhop.wire.messages import MessageType
from overhop.wire.payloads import (
    parse_int,
    parse_optional_int,
    parse_optional_map,
    parse_optional_str,
    parse_optional_time,
    parse_str,
)

if TYPE_CHECKING:
    from overhop.server.connection import Connection

Pending = tuple["asyncio.Future[Any]", Callable[[Any], dict[str, Any]]]
Reply = dict[str, Any] | Pending
Handler = Callable[[ServerContext, "Connection", dict[str, Any]], Reply]

_EMPTY: dict[str, Any] = {}
# Worker metadata is for people reading STATUS: short strings, a few labels.
MAX_METADATA_STRING = 256
MAX_LABELS = 32
# Room a QUEST needs beside the job payload (ids, counters, envelope): a job payload may
# use the rest of an envelope, so that the QUEST carrying it is never over the limit.
QUEST_OVERHEAD_BYTES = 4096


def _empty(_: Any) -> dict[str, Any]:
    return {}


def handle_register(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    metadata: dict[str, Any] = {}
    for key in ("name", "host"):
        value = parse_optional_str(p, key, max_length=MAX_METADATA_STRING)
        if value is not None:
            metadata[key] = value
    pid = parse_optional_int(p, "pid", low=0)
    if pid is not None:
        metadata["pid"] = pid
    labels = parse_optional_map(p, "labels")
    if labels is not None:
        if len(labels) > MAX_LABELS or not all(
            len(k) <= MAX_METADATA_STRING and type(v) is str and len(v) <= MAX_METADATA_STRING
            for k, v in labels.items()
        ):
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               f"'labels' must map at most {MAX_LABELS} keys to short strings")
        metadata["labels"] = labels
    worker = conn.become_worker(metadata)
    config = ctx.config
    return {
        "wid": worker.worker_id,
        # What a client needs to pace itself: how long it may stay silent, how fast it
        # must ACK, and the sizes the server accepts.
        "limits": {
            "heartbeat_interval_ms": config.heartbeat.interval_ms,
            "stale_after_ms": config.worker.stale_after_ms,
            "ack_timeout_ms": config.dispatch.ack_timeout_ms,
            "max_envelope_size_bytes": config.wire.max_envelope_size_bytes,
            "max_job_payload_bytes": config.wire.max_envelope_size_bytes - QUEST_OVERHEAD_BYTES,
            "max_result_bytes": config.jobs.max_result_bytes,
            "max_log_line_bytes": config.jobs.max_log_line_bytes,
            "max_enqueue_batch": config.jobs.max_enqueue_batch,
            "max_requests_in_flight": config.server.max_requests_in_flight,
        },
    }


def handle_queue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    runtime = ctx.broker.queues.get(parse_queue_name(p.get("q")))
    return _EMPTY if runtime is None else queue_view(runtime.record)


def handle_lsqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    after = parse_optional_str(p, "after", max_length=128)
    limit = parse_int(p, "limit", low=1, high=100_000, default=100_000)
    names = sorted(name for name in ctx.broker.queues if after is None or name > after)
    views = (queue_view(ctx.broker.queues[name].record) for name in names[:limit])
    page, cut = fitting_prefix(views, ctx.config.wire.max_envelope_size_bytes // 2)
    more = cut or len(names) > limit
    return {"queues": page, "next_after": page[-1]["name"] if more else None}


def handle_subscribe(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    credits = parse_int(p, "credits", low=0, high=2**31, default=0)
    subscription = ctx.broker.subscribe(conn.require_worker(), queue_name, credits)
    return {"sid": subscription.subscription_id}


def handle_unsubscribe(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    ctx.broker.unsubscribe(conn.require_worker(), parse_str(p, "sid"))
    return _EMPTY


def handle_credit(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    credits = parse_int(p, "credits", low=1, high=2**31)
    ctx.broker.credit(conn.require_worker(), parse_str(p, "sid"), credits)
    return _EMPTY


def handle_addqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("name"), field="name")
    config = parse_queue_config(p.get("config"))
    return (queue_control.add_queue(ctx.broker, name, config),
            lambda record: {"qid": record.queue_id})


def handle_status(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return status_report(ctx)


def handle_rmqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return queue_control.remove_queue(ctx.broker, parse_queue_name(p.get("q"))), _empty


def handle_pause(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return (queue_control.set_queue_state(ctx.broker, parse_queue_name(p.get("q")),
                                          QueueState.PAUSED), _empty)


def handle_resume(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return (queue_control.set_queue_state(ctx.broker, parse_queue_name(p.get("q")),
                                          QueueState.ACTIVE), _empty)


def handle_enqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    request = _enqueue_request(ctx, _enqueue_queue(ctx, p), p, _QUEUE_AND_PAYLOAD)
    return ctx.broker.enqueue(request), _jid_reply


def handle_enqueuemany(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = _enqueue_queue(ctx, p)
    items = p.get("jobs")
    most = ctx.config.jobs.max_enqueue_batch
    if type(items) is not list or not 1 <= len(items) <= most:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'jobs' must be an array of 1 to {most} jobs")
    requests = []
    for index, item in enumerate(items):
        try:
            if type(item) is not dict:
                raise RequestError(ErrorCode.INVALID_PAYLOAD, "each job must be a map")
            if "q" in item:
                raise RequestError(ErrorCode.INVALID_PAYLOAD,
                                   "a job of ENQUEUEMANY takes its queue from 'q'")
            requests.append(_enqueue_request(ctx, queue_name, item, _PAYLOAD_ONLY))
        except RequestError as exc:
            raise exc.in_batch(index) from None
    return ctx.broker.enqueue_many(queue_name, requests), _jids_reply


def _enqueue_queue(ctx: ServerContext, p: dict[str, Any]) -> str:
    queue_name = p.get("q")
    if type(queue_name) is not str or queue_name not in ctx.broker.queues:
        queue_name = parse_queue_name(queue_name)  # existing queues have valid names
    return queue_name


def _enqueue_request(ctx: ServerContext, queue_name: str, p: dict[str, Any],
                     plain_keys: frozenset[str]) -> EnqueueRequest:
    """One job's fields (ENQUEUE's payload, or one job of ENQUEUEMANY)."""
    payload = encode_value(p["job_payload"]) if "job_payload" in p else None
    limit = ctx.config.wire.max_envelope_size_bytes - QUEST_OVERHEAD_BYTES
    if payload is not None and len(payload) > limit:
        raise RequestError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"the job payload is {len(payload)} bytes encoded; the limit is {limit}")
    if p.keys() <= plain_keys:  # the usual job: no options to parse
        return EnqueueRequest(queue_name, payload, None, None, None, None)
    scheduled_at = parse_optional_time(p, "scheduled_at")
    delay_ms = parse_optional_int(p, "delay_ms", low=0, high=MAX_TIME_MS)
    if delay_ms is not None:
        if scheduled_at is not None:
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               "give 'scheduled_at' or 'delay_ms', not both")
        scheduled_at = min(now_ms() + delay_ms, MAX_TIME_MS)
    return EnqueueRequest(
        queue_name=queue_name,
        payload=payload,
        scheduled_at_ms=scheduled_at,
        max_attempts=parse_optional_int(p, "max_attempts", low=1, high=1000),
        retry_interval_ms=parse_optional_int(p, "retry_interval_ms", low=1, high=86_400_000),
        lease_ms=parse_optional_int(p, "lease_ms", low=100, high=86_400_000),
    )


_QUEUE_AND_PAYLOAD = frozenset({"q", "job_payload"})
_PAYLOAD_ONLY = frozenset({"job_payload"})


def _jid_reply(job_id: str) -> dict[str, Any]:
    return {"jid": job_id}


def _jids_reply(job_ids: list[str]) -> dict[str, Any]:
    return {"jids": job_ids}


def _job_id(p: dict[str, Any]) -> str:
    return parse_str(p, "jid", max_length=200)


def _job_view(ctx: ServerContext, job: JobRecord, now: int) -> dict[str, Any]:
    broker = ctx.broker
    delivery = broker.deliveries.get(job.delivery_id) if job.delivery_id else None
    return job_view(job, broker.policy(job), delivery, explain_job(broker, job, now))


def handle_job(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    job = ctx.broker.job(_job_id(p))
    if job is None:
        return _EMPTY
    return _job_view(ctx, job, now_ms())


def handle_rmjob(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.remove_job(_job_id(p)), _empty


def handle_lsjob(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    label = parse_str(p, "status")
    if label not in STATUS_LABELS:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'status' must be one of {', '.join(STATUS_LABELS)}")
    pagination = ctx.config.pagination
    page_size = parse_int(p, "page_size", low=1, high=pagination.max_page_size,
                          default=pagination.page_size)
    page = parse_int(p, "page", low=1, high=2**31, default=1)
    after = _page_after(p, queue_name)
    if after is not None and page != 1:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "give 'after' or 'page', not both")
    skip = (page - 1) * page_size
    if skip > pagination.max_skip:
        raise RequestError(
            ErrorCode.INVALID_PAYLOAD,
            f"page {page} would skip {skip} jobs, more than {pagination.max_skip}: "
            "page on with 'after' (the previous page's 'next_after')")
    ctx.broker.user_queue(queue_name)
    now = now_ms()
    jobs, truncated, more = ctx.store.list_jobs(
        queue_name, JobStatus.parse(label), skip, page_size,
        ctx.config.wire.max_envelope_size_bytes // 2, after)
    return {"q": queue_name, "status": label, "page": page, "page_size": page_size,
            "truncated": truncated,
            "next_after": jobs[-1].job_id if more else None,
            "jobs": [_job_view(ctx, job, now) for job in jobs]}


def _page_after(p: dict[str, Any], queue_name: str) -> bytes | None:
    """LSJOB's `after`: the uuid bytes of a job id of this queue, or None."""
    after = parse_optional_str(p, "after", max_length=200)
    if after is None:
        return None
    queue_part, _, uuid_part = after.rpartition(":")
    try:
        if queue_part != queue_name:
            raise ValueError
        return uuid.UUID(uuid_part).bytes
    except ValueError:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'after' must be a job id of queue {queue_name!r}") from None


def handle_qstats(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    runtime = ctx.broker.user_queue(queue_name)
    counts = ctx.store.counts(queue_name)
    return {
        "q": queue_name,
        "stats": {status.label: counts[status] for status in JobStatus},
        **queue_dispatch_stats(ctx.broker, runtime, now_ms()),
    }


# -- job delivery ----------------------------------------------------------------------


def _delivery(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Any:
    return ctx.broker.worker_delivery(conn.require_worker(), parse_str(p, "did"), _job_id(p))


def _bounded_value(ctx: ServerContext, value: Any, what: str) -> bytes:
    encoded = encode_value(value)
    limit = ctx.config.jobs.max_result_bytes
    if len(encoded) > limit:
        raise RequestError(ErrorCode.RESULT_TOO_LARGE,
                           f"{what} is {len(encoded)} bytes encoded; the limit is {limit}")
    return encoded


def handle_ack(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    delivery = _delivery(ctx, conn, p)
    ctx.broker.ack(delivery)
    return {"lease_expires_at": to_rfc3339(delivery.lease_deadline_ms)}


def handle_complete(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    delivery = _delivery(ctx, conn, p)
    result = _bounded_value(ctx, p["result"], "the result") if "result" in p else None
    return ctx.broker.complete(delivery, result), _empty


def handle_fail(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    delivery = _delivery(ctx, conn, p)
    error = p.get("error")
    if type(error) is not dict or type(error.get("message")) is not str:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "'error' must be a map with a string 'message'")
    _bounded_value(ctx, error, "the error")
    return ctx.broker.fail(delivery, error), _outcome_reply


def _outcome_reply(job: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": job.status.label,
                             "attempts_so_far": job.attempts_so_far}
    if job.status == JobStatus.DELAYED:
        reply["retry_at"] = to_rfc3339(job.execution_start_at_ms)
    return reply


def handle_jobbeat(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    delivery = _delivery(ctx, conn, p)
    progress = p.get("progress")
    if progress is not None:
        _bounded_value(ctx, progress, "the progress")
    deadline = ctx.broker.heartbeat(delivery, progress)
    return {"lease_expires_at": to_rfc3339(deadline)}


def handle_goodbye(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    reason = parse_optional_str(p, "reason", max_length=MAX_METADATA_STRING)
    conn.say_goodbye(reason or "")
    return _EMPTY


def handle_retry(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.retry_job(_job_id(p)), lambda job: {"status": job.status.label}


def handle_release(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.release(_delivery(ctx, conn, p)), _empty


# -- queue control and job logs ----------------------------------------------------------

# Log lines one JOBLOG may carry: a batch from a busy handler, not a whole log file.
MAX_LOG_LINES_PER_MESSAGE = 100


def handle_setqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    changes = parse_optional_map(p, "config")
    if not changes:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'config' must name settings to change")
    parse_queue_config(changes)  # refuse a bad request before anything changes
    return (queue_control.change_settings(ctx.broker, name, changes),
            lambda record: {"config": record.config.to_wire()})


def handle_joblog(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    delivery = _delivery(ctx, conn, p)
    lines = p.get("lines")
    limit = ctx.config.jobs.max_log_line_bytes
    if (type(lines) is not list or not lines or len(lines) > MAX_LOG_LINES_PER_MESSAGE
            or not all(type(line) is str for line in lines)):
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'lines' must be a list of 1..{MAX_LOG_LINES_PER_MESSAGE} strings")
    if any(len(line.encode()) > limit for line in lines):
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"a log line is longer than {limit} bytes")
    return (ctx.broker.append_logs(delivery, lines),
            lambda job: {"logs": len(job.logs), "logs_dropped": job.logs_dropped})


def handle_clearqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    return (queue_control.clear_queue(ctx.broker, name),
            lambda removed: {"removed": {s.label: n for s, n in removed.items()}})


def handle_obliterate(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    force = p.get("force")
    if force is None:
        force = False
    if type(force) is not bool:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'force' must be a bool")
    return (queue_control.obliterate_queue(ctx.broker, name, force),
            lambda removed: {"removed": removed})


HANDLERS: dict[MessageType, Handler] = {
    MessageType.REGISTER: handle_register,
    MessageType.QUEUE: handle_queue,
    MessageType.LSQUEUE: handle_lsqueue,
    MessageType.SUBSCRIBE: handle_subscribe,
    MessageType.UNSUBSCRIBE: handle_unsubscribe,
    MessageType.CREDIT: handle_credit,
    MessageType.ADDQUEUE: handle_addqueue,
    MessageType.STATUS: handle_status,
    MessageType.RMQUEUE: handle_rmqueue,
    MessageType.PAUSE: handle_pause,
    MessageType.RESUME: handle_resume,
    MessageType.ENQUEUE: handle_enqueue,
    MessageType.ENQUEUEMANY: handle_enqueuemany,
    MessageType.JOB: handle_job,
    MessageType.RMJOB: handle_rmjob,
    MessageType.LSJOB: handle_lsjob,
    MessageType.QSTATS: handle_qstats,
    MessageType.ACK: handle_ack,
    MessageType.COMPLETE: handle_complete,
    MessageType.FAIL: handle_fail,
    MessageType.JOBBEAT: handle_jobbeat,
    MessageType.GOODBYE: handle_goodbye,
    MessageType.RETRY: handle_retry,
    MessageType.RELEASE: handle_release,
    MessageType.SETQUEUE: handle_setqueue,
    MessageType.JOBLOG: handle_joblog,
    MessageType.CLEARQUEUE: handle_clearqueue,
    MessageType.OBLITERATE: handle_obliterate,
}
