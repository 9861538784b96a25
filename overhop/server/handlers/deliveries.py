"""Worker handlers: subscriptions and credits, and a delivery's ACK, JOBBEAT, JOBLOG,
COMPLETE, FAIL and RELEASE.

COMPLETE, FAIL and RELEASE take `credit` (a bool, absent: false): the outcome, once taken,
gives its subscription one credit back at once (`Broker.complete` and the others)."""

from typing import TYPE_CHECKING, Any

from overhop.clock import to_rfc3339
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobStatus
from overhop.model.queues import parse_queue_name
from overhop.server.context import ServerContext
from overhop.wire.encoding import encode_value
from overhop.wire.payloads import (
    parse_flag,
    parse_int,
    parse_str,
)

if TYPE_CHECKING:
    from overhop.server.connection import Connection

from overhop.server.handlers.replies import EMPTY, Reply, empty, job_id


def handle_subscribe(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    credits = parse_int(p, "credits", low=0, high=2**31, default=0)
    subscription = ctx.broker.subscribe(conn.require_worker(), queue_name, credits)
    return {"sid": subscription.subscription_id}


def handle_unsubscribe(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    ctx.broker.unsubscribe(conn.require_worker(), parse_str(p, "sid"))
    return EMPTY


def handle_credit(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    credits = parse_int(p, "credits", low=1, high=2**31)
    ctx.broker.credit(conn.require_worker(), parse_str(p, "sid"), credits)
    return EMPTY


def _delivery(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Any:
    return ctx.broker.worker_delivery(conn.require_worker(), parse_str(p, "did"), job_id(p))


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
    credit = parse_flag(p, "credit")
    delivery = _delivery(ctx, conn, p)
    result = _bounded_value(ctx, p["result"], "the result") if "result" in p else None
    return ctx.broker.complete(delivery, result, credit), empty


def handle_fail(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    credit = parse_flag(p, "credit")
    delivery = _delivery(ctx, conn, p)
    error = p.get("error")
    if type(error) is not dict or type(error.get("message")) is not str:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "'error' must be a map with a string 'message'")
    _bounded_value(ctx, error, "the error")
    return ctx.broker.fail(delivery, error, credit), _outcome_reply


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


def handle_release(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    credit = parse_flag(p, "credit")
    return ctx.broker.release(_delivery(ctx, conn, p), credit), empty


# Log lines one JOBLOG may carry: a batch from a busy handler, not a whole log file.
MAX_LOG_LINES_PER_MESSAGE = 100


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
