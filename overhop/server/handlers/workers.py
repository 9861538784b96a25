"""WORKERCTL: an admin's command to workers by name or id, or a worker's report of itself.

With `worker`, an admin (the `admin` verb on `*`) tells the workers with that id, or else
with that name, to go quiet, to stop, or to run a new number of jobs at once; each gets a
CONTROL push and the reply says how many there were. Without `worker`, the connection
reports its own state and concurrency, which STATUS then shows.
"""

from typing import TYPE_CHECKING, Any

from overhop.broker.events import ControlAction, WorkerControlled
from overhop.broker.worker_control import WorkerReport
from overhop.broker.workers import WorkerState
from overhop.errors import ErrorCode, RequestError
from overhop.server.context import ServerContext
from overhop.server.handlers.replies import EMPTY, Reply
from overhop.wire.payloads import parse_int, parse_optional_int, parse_optional_str, parse_str

if TYPE_CHECKING:
    from overhop.server.connection import Connection

REPORT = "report"
# Far above any one process's useful parallelism; it bounds a typo, not a deployment.
MAX_CONCURRENCY = 10_000
# A day: a grace longer than that is not a graceful stop but a forgotten one.
MAX_GRACE_MS = 86_400_000
# As REGISTER's `name` (handlers/session.MAX_METADATA_STRING); an id is 36 characters.
MAX_WORKER_NAME = 256


def handle_workerctl(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    action = parse_str(p, "action", max_length=32)
    target = parse_optional_str(p, "worker", max_length=MAX_WORKER_NAME)
    if target is None:
        ctx.broker.worker_reported(conn.require_worker(), _report(action, p))
        return EMPTY
    workers = ctx.broker.control_workers(target, _command(action, p))
    conn.log.info("workers_controlled", worker=target, action=action, workers=workers)
    return {"workers": workers}


def _command(action: str, p: dict[str, Any]) -> WorkerControlled:
    try:
        chosen = ControlAction(action)
    except ValueError:
        raise _invalid(f"'action' must be one of {', '.join(a.value for a in ControlAction)}"
                       " (with 'worker')") from None
    if chosen is ControlAction.CONCURRENCY:
        _refuse_extra(p, "grace_ms", chosen)
        return WorkerControlled(chosen, concurrency=parse_int(p, "concurrency", low=1,
                                                              high=MAX_CONCURRENCY))
    _refuse_extra(p, "concurrency", chosen)
    if chosen is ControlAction.STOP:
        return WorkerControlled(chosen, grace_ms=parse_optional_int(p, "grace_ms", low=0,
                                                                    high=MAX_GRACE_MS))
    _refuse_extra(p, "grace_ms", chosen)
    return WorkerControlled(chosen)


def _report(action: str, p: dict[str, Any]) -> WorkerReport:
    if action != REPORT:
        raise _invalid(f"'action' must be {REPORT!r} without 'worker' (a worker's report "
                       "of itself), or name the worker to control")
    _refuse_extra(p, "grace_ms", REPORT)
    try:
        state = WorkerState(parse_str(p, "state", max_length=32))
    except ValueError:
        raise _invalid(f"'state' must be one of {', '.join(s.value for s in WorkerState)}"
                       ) from None
    return WorkerReport(state, parse_optional_int(p, "concurrency", low=1,
                                                  high=MAX_CONCURRENCY))


def _refuse_extra(p: dict[str, Any], key: str, action: str) -> None:
    if key in p:
        raise _invalid(f"'{key}' does not go with action {action!r}")


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_PAYLOAD, message)
