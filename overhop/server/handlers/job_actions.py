"""Job action handlers: CANCEL and BULK."""

from typing import TYPE_CHECKING, Any

from overhop.broker.service import BulkAction
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import DEFAULT_CANCEL_REASON, STATUS_LABELS, JobRecord, JobStatus
from overhop.model.queues import parse_queue_name
from overhop.server.context import ServerContext
from overhop.server.handlers.replies import Reply, job_id
from overhop.wire.payloads import parse_optional_str, parse_str

if TYPE_CHECKING:
    from overhop.server.connection import Connection

# A reason is a short sentence for people (shown by JOB, pushed in ABORT and RESULT).
MAX_REASON_LENGTH = 1024


def handle_cancel(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.cancel_job(job_id(p), _reason(p)), _cancel_reply


def _cancel_reply(job: JobRecord) -> dict[str, Any]:
    """`cancelled`: ended already; `active`: its worker was told, and it ends `cancelled`
    when the attempt does."""
    return {"status": job.status.label}


def handle_bulk(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    label = parse_str(p, "status")
    if label not in STATUS_LABELS:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'status' must be one of {', '.join(STATUS_LABELS)}")
    action = parse_str(p, "action")
    if action not in BulkAction.__members__.values():
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'action' must be one of {', '.join(a.value for a in BulkAction)}")
    task = ctx.broker.bulk(queue_name, JobStatus.parse(label), BulkAction(action), _reason(p))
    return task, _bulk_reply


def _bulk_reply(done: tuple[int, bool]) -> dict[str, Any]:
    count, more = done
    return {"count": count, "more": more}


def _reason(p: dict[str, Any]) -> str:
    reason = parse_optional_str(p, "reason", max_length=MAX_REASON_LENGTH)
    return DEFAULT_CANCEL_REASON if reason is None else reason
