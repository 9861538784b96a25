"""Schedule handlers: ADDSCHEDULE, LSSCHEDULE, RMSCHEDULE, PAUSESCHEDULE, RESUMESCHEDULE."""

from typing import TYPE_CHECKING, Any

from overhop.broker.schedules import ScheduleRuntime
from overhop.broker.service import ScheduleRequest
from overhop.clock import now_ms
from overhop.errors import ErrorCode, RequestError
from overhop.model.cron import MAX_CRON_LENGTH, MAX_TIMEZONE_LENGTH, spec_of
from overhop.model.queues import parse_queue_name
from overhop.model.schedules import (
    ScheduleJob,
    ScheduleRecord,
    parse_missed_policy,
    parse_schedule_name,
)
from overhop.server.context import ServerContext
from overhop.server.handlers.jobs import PAYLOAD_ONLY, parse_enqueue_request
from overhop.server.views import schedule_view
from overhop.wire.encoding import fitting_prefix
from overhop.wire.payloads import parse_int, parse_optional_str, parse_str

if TYPE_CHECKING:
    from overhop.server.connection import Connection

from overhop.server.handlers.replies import Reply, empty, pending

# ENQUEUE's fields a schedule's job takes; a start time makes no sense for one.
_JOB_FIELDS = ("job_payload", "max_attempts", "retry_interval_ms", "lease_ms", "headers",
               "task", "priority")


def handle_addschedule(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_schedule_name(p.get("name"))
    queue_name = parse_queue_name(p.get("q"))
    if p.get("scheduled_at") is not None or p.get("delay_ms") is not None:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "a schedule's jobs start at their occurrence: no 'scheduled_at' "
                           "or 'delay_ms'")
    if p.get("unique_key") is not None or p.get("group") is not None:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "a schedule's jobs take no 'unique_key' or 'group'")
    fields = {key: p[key] for key in _JOB_FIELDS if key in p}
    job = parse_enqueue_request(ctx, queue_name, fields, PAYLOAD_ONLY)
    request = ScheduleRequest(
        name=name, queue_name=queue_name,
        cron=parse_str(p, "cron", max_length=MAX_CRON_LENGTH),
        timezone=parse_optional_str(p, "tz", max_length=MAX_TIMEZONE_LENGTH),
        job=ScheduleJob(job.payload, job.max_attempts, job.retry_interval_ms, job.lease_ms,
                        job.headers, job.task, job.priority),
        missed=parse_missed_policy(p.get("missed")))
    return ctx.broker.add_schedule(request), _schedule_reply


def _schedule_reply(runtime: ScheduleRuntime) -> dict[str, Any]:
    return schedule_view(runtime.record, runtime.next_run_ms)


def handle_lsschedule(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    after = parse_optional_str(p, "after", max_length=128)
    limit = parse_int(p, "limit", low=1, high=100_000, default=100_000)
    if ctx.cluster is not None:
        return pending(ctx, _cluster_schedules(ctx, after, limit))
    return _schedule_page(ctx, {name: (runtime.record, runtime.next_run_ms)
                                for name, runtime in ctx.broker.schedules.items()},
                          after, limit)


async def _cluster_schedules(ctx: ServerContext, after: str | None, limit: int
                             ) -> dict[str, Any]:
    """Every schedule of the cluster: the ones this broker fires as it holds them, the
    others as stored, with their next occurrence from now."""
    now = now_ms()
    found: dict[str, tuple[ScheduleRecord, int | None]] = {}
    brokers = max(1, len(ctx.cluster.nodes)) if ctx.cluster is not None else 1
    most = ctx.config.schedules.max_schedules * brokers  # each broker holds at most this
    for record in await ctx.reads.load_schedules(most):
        found[record.name] = (record, None if record.paused
                              else spec_of(record).next_after(now))
    for name, runtime in ctx.broker.schedules.items():
        found[name] = (runtime.record, runtime.next_run_ms)
    return _schedule_page(ctx, found, after, limit)


def _schedule_page(ctx: ServerContext, found: dict[str, tuple[ScheduleRecord, int | None]],
                   after: str | None, limit: int) -> dict[str, Any]:
    names = sorted(name for name in found if after is None or name > after)
    views = (schedule_view(*found[name]) for name in names[:limit])
    page, cut = fitting_prefix(views, ctx.config.wire.max_envelope_size_bytes // 2)
    more = cut or len(names) > limit
    return {"schedules": page, "next_after": page[-1]["name"] if more else None}


def handle_rmschedule(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.remove_schedule(parse_schedule_name(p.get("name"))), empty


def handle_pauseschedule(ctx: ServerContext, conn: "Connection", p: dict[str, Any]
                         ) -> Reply:
    name = parse_schedule_name(p.get("name"))
    return ctx.broker.set_schedule_paused(name, True), _schedule_reply


def handle_resumeschedule(ctx: ServerContext, conn: "Connection", p: dict[str, Any]
                          ) -> Reply:
    name = parse_schedule_name(p.get("name"))
    return ctx.broker.set_schedule_paused(name, False), _schedule_reply
