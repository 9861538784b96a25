"""Job handlers: ENQUEUE, ENQUEUEMANY, JOB, LSJOB, RMJOB, RETRY."""

from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any

from overhop.broker.enqueue import EnqueueRequest
from overhop.clock import MAX_TIME_MS, now_ms
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    STATUS_LABELS,
    JobRecord,
    JobStatus,
    uuid_of_job_id,
)
from overhop.model.queues import parse_queue_name
from overhop.model.tasks import parse_optional_task_name
from overhop.model.uniqueness import parse_optional_group, parse_unique
from overhop.server.context import ServerContext
from overhop.wire.encoding import encode_value
from overhop.wire.payloads import (
    parse_int,
    parse_optional_int,
    parse_optional_str,
    parse_optional_time,
    parse_str,
)

if TYPE_CHECKING:
    from overhop.server.connection import Connection

from overhop.server.handlers.replies import (
    EMPTY,
    Reply,
    describe_job,
    empty,
    job_id,
    pending,
)

# Room a QUEST needs beside the job payload (ids, counters, envelope): a job payload may
# use the rest of an envelope, so that the QUEST carrying it is never over the limit.
QUEST_OVERHEAD_BYTES = 4096
# A traceparent is 55 bytes and a tracestate at most 512 (W3C): 4 KiB leaves room for
# baggage without letting headers grow every job record.
HEADERS_MAX_BYTES = 4096


def handle_enqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    request = parse_enqueue_request(ctx, _enqueue_queue(ctx, p), p, _QUEUE_AND_PAYLOAD)
    watcher = conn.require_worker() if _watch(p) else None
    job_id, added = ctx.broker.enqueue(request, watcher)
    if request.unique_key is None:
        return added, _jid_reply
    return added, partial(_unique_reply, job_id)


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
            requests.append(parse_enqueue_request(ctx, queue_name, item, _PAYLOAD_ONLY))
        except RequestError as exc:
            raise exc.in_batch(index) from None
    watcher = conn.require_worker() if _watch(p) else None
    job_ids, added = ctx.broker.enqueue_many(queue_name, requests, watcher)
    if all(request.unique_key is None for request in requests):
        return added, _jids_reply
    return added, partial(_unique_many_reply, job_ids)


def _watch(p: dict[str, Any]) -> bool:
    """ENQUEUE's and ENQUEUEMANY's `watch`: push the job's final outcome (RESULT)."""
    watch = p.get("watch", False)
    if type(watch) is not bool:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'watch' must be a bool")
    return watch


def handle_watch(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.watch(conn.require_worker(), job_id(p)), empty


def handle_unwatch(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    ctx.broker.unwatch(conn.require_worker(), job_id(p))
    return EMPTY


def _enqueue_queue(ctx: ServerContext, p: dict[str, Any]) -> str:
    queue_name = p.get("q")
    if type(queue_name) is not str or queue_name not in ctx.broker.queues:
        queue_name = parse_queue_name(queue_name)  # existing queues have valid names
    return queue_name


def parse_enqueue_request(ctx: ServerContext, queue_name: str, p: dict[str, Any],
                          plain_keys: frozenset[str]) -> EnqueueRequest:
    """One job's fields (ENQUEUE's payload, one job of ENQUEUEMANY, ADDSCHEDULE's job)."""
    payload = encode_value(p["job_payload"]) if "job_payload" in p else None
    limit = ctx.config.wire.max_envelope_size_bytes - QUEST_OVERHEAD_BYTES
    if payload is not None and len(payload) > limit:
        raise RequestError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"the job payload is {len(payload)} bytes encoded; the limit is {limit}")
    if p.keys() <= plain_keys:  # the usual job: no options to parse
        return EnqueueRequest(queue_name, payload, None, None, None, None)
    return _with_options(EnqueueRequest(queue_name, payload, None, None, None, None), p)


def _with_options(request: EnqueueRequest, p: dict[str, Any]) -> EnqueueRequest:
    """`request` with the job's options set: each parser runs only for the fields present
    (a job with one option pays for one)."""
    if "scheduled_at" in p or "delay_ms" in p:
        scheduled_at = parse_optional_time(p, "scheduled_at")
        delay_ms = parse_optional_int(p, "delay_ms", low=0, high=MAX_TIME_MS)
        if delay_ms is not None:
            if scheduled_at is not None:
                raise RequestError(ErrorCode.INVALID_PAYLOAD,
                                   "give 'scheduled_at' or 'delay_ms', not both")
            scheduled_at = min(now_ms() + delay_ms, MAX_TIME_MS)
        request.scheduled_at_ms = scheduled_at
    if "unique_key" in p or "unique_until" in p or "unique_ttl_ms" in p:
        request.unique_key, request.unique_scope, request.unique_expires_at_ms = (
            parse_unique(p, now_ms()))
    if "max_attempts" in p:
        request.max_attempts = parse_optional_int(p, "max_attempts", low=1, high=1000)
    if "retry_interval_ms" in p:
        request.retry_interval_ms = parse_optional_int(p, "retry_interval_ms", low=1,
                                                       high=86_400_000)
    if "lease_ms" in p:
        request.lease_ms = parse_optional_int(p, "lease_ms", low=100, high=86_400_000)
    if "headers" in p:
        request.headers = _headers(p)
    if "task" in p:
        request.task = parse_optional_task_name(p)
    if "priority" in p:
        request.priority = parse_optional_int(p, "priority", low=MIN_PRIORITY,
                                              high=MAX_PRIORITY)
    if "group" in p:
        request.group = parse_optional_group(p)
    return request


def _headers(p: dict[str, Any]) -> dict[str, str] | None:
    """ENQUEUE's optional `headers`: a map of strings (W3C `traceparent`, `tracestate`...),
    stored with the job and handed to its worker, at most HEADERS_MAX_BYTES in all."""
    headers = p.get("headers")
    if headers is None:
        return None
    if type(headers) is not dict or not all(
            type(k) is str and type(v) is str for k, v in headers.items()):
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'headers' must be a map of strings")
    if sum(len(k.encode()) + len(v.encode()) for k, v in headers.items()) > HEADERS_MAX_BYTES:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'headers' hold more than {HEADERS_MAX_BYTES} bytes")
    return headers or None


_QUEUE_AND_PAYLOAD = frozenset({"q", "job_payload", "watch"})


_PAYLOAD_ONLY = frozenset({"job_payload"})
PAYLOAD_ONLY = _PAYLOAD_ONLY


def _jid_reply(job_id: str) -> dict[str, Any]:
    return {"jid": job_id}


def _jids_reply(job_ids: list[str]) -> dict[str, Any]:
    return {"jids": job_ids}


def _unique_reply(job_id: str, holder: str) -> dict[str, Any]:
    """A job with a unique key: the id of the job holding the key, and whether that is
    another job (a duplicate: nothing was added)."""
    return {"jid": holder, "duplicate": holder != job_id}


def _unique_many_reply(job_ids: list[str], holders: list[str]) -> dict[str, Any]:
    return {"jids": holders,
            "duplicate": [holder != job_id for job_id, holder in zip(job_ids, holders,
                                                                     strict=True)]}


def handle_job(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return pending(ctx, _job_reply(ctx, ctx.broker.job(job_id(p))))


async def _job_reply(ctx: ServerContext, reading: Awaitable[JobRecord | None]
                     ) -> dict[str, Any]:
    job = await reading
    if job is None:
        return EMPTY
    return await describe_job(ctx, job, now_ms())


def handle_rmjob(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.remove_job(job_id(p)), empty


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
    task = parse_optional_task_name(p)
    if task is not None and page != 1:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "with 'task', page on with 'after' (the previous page's "
                           "'next_after'), not 'page'")
    ctx.broker.user_queue(queue_name)
    return pending(ctx, _lsjob_reply(ctx, queue_name, label, page, page_size, skip, task, after))


async def _lsjob_reply(ctx: ServerContext, queue_name: str, label: str, page: int,
                       page_size: int, skip: int, task: str | None, after: bytes | None
                       ) -> dict[str, Any]:
    now = now_ms()
    status = JobStatus.parse(label)
    max_bytes = ctx.config.wire.max_envelope_size_bytes // 2
    if task is None:
        jobs, truncated, more = await ctx.reads.list_jobs(
            queue_name, status, skip, page_size, max_bytes, after)
        next_after = jobs[-1].job_id if more else None
    else:
        jobs, truncated, next_after = await ctx.reads.list_task_jobs(
            queue_name, status, task, page_size, max_bytes,
            ctx.config.pagination.max_filter_scan, after)
    return {"q": queue_name, "status": label, "page": page, "page_size": page_size,
            "task": task, "truncated": truncated, "next_after": next_after,
            "jobs": [await describe_job(ctx, job, now) for job in jobs]}


def _page_after(p: dict[str, Any], queue_name: str) -> bytes | None:
    """LSJOB's `after`: the uuid bytes of a job id of this queue, or None."""
    after = parse_optional_str(p, "after", max_length=200)
    if after is None:
        return None
    try:
        return uuid_of_job_id(after, queue_name)
    except ValueError:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'after' must be a job id of queue {queue_name!r}") from None


def handle_retry(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.retry_job(job_id(p)), lambda job: {"status": job.status.label}
