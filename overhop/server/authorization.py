"""Who may do what: the one table of message type -> verb and where its queue is, the
check the connection makes before any handler runs, and the filter that trims listings
(LSQUEUE, STATUS) to the queues a user may read.

A connection without a user (an open server: no users, loopback) is never checked. A
refused request gets FORBIDDEN naming the verb and the queue, changes nothing, and is
logged with the user. See overhop/auth/permissions.py for the verbs.
"""

from collections.abc import Callable
from enum import Enum
from typing import Any

from overhop.auth.permissions import Permission, Verb, allows, holds_verb
from overhop.broker.workers import Worker
from overhop.errors import ErrorCode, RequestError
from overhop.wire.messages import MessageType


class QueueSource(Enum):
    """Where a request names the queue the permission is checked on."""

    NONE = "none"  # no queue: the verb on pattern `*` is needed
    LISTING = "listing"  # a listing: the verb on any pattern; the reply is filtered
    Q = "q"  # the `q` field
    NAME = "name"  # the `name` field (ADDQUEUE)
    JID = "jid"  # the queue part of the `jid` field (`<queue>:<uuid>`)
    SID = "sid"  # the queue of this worker's subscription `sid`
    WORKER = "worker"  # no queue; the verb on `*` only when the request names a worker
    SCHEDULE = "schedule"  # the queue the schedule named by `name` fires into


M = MessageType
# Every client message: the verb it needs (None: none) and where its queue is.
RULES: dict[MessageType, tuple[Verb | None, QueueSource]] = {
    M.HELLO: (None, QueueSource.NONE),
    M.REGISTER: (None, QueueSource.NONE),
    M.AUTH: (None, QueueSource.NONE),
    M.PING: (None, QueueSource.NONE),
    M.GOODBYE: (None, QueueSource.NONE),
    M.UNSUBSCRIBE: (None, QueueSource.NONE),  # only gives something up
    M.ENQUEUE: (Verb.PRODUCE, QueueSource.Q),
    M.ENQUEUEMANY: (Verb.PRODUCE, QueueSource.Q),
    M.SUBSCRIBE: (Verb.CONSUME, QueueSource.Q),
    M.CREDIT: (Verb.CONSUME, QueueSource.SID),
    M.ACK: (Verb.CONSUME, QueueSource.JID),
    M.JOBBEAT: (Verb.CONSUME, QueueSource.JID),
    M.JOBLOG: (Verb.CONSUME, QueueSource.JID),
    M.COMPLETE: (Verb.CONSUME, QueueSource.JID),
    M.FAIL: (Verb.CONSUME, QueueSource.JID),
    M.RELEASE: (Verb.CONSUME, QueueSource.JID),
    M.QUEUE: (Verb.READ, QueueSource.Q),
    M.JOB: (Verb.READ, QueueSource.JID),
    M.LSJOB: (Verb.READ, QueueSource.Q),
    M.WATCH: (Verb.READ, QueueSource.JID),  # a job's outcome is a read of it
    M.UNWATCH: (None, QueueSource.NONE),  # only gives something up
    M.QSTATS: (Verb.READ, QueueSource.Q),
    M.LSQUEUE: (Verb.READ, QueueSource.LISTING),
    M.STATUS: (Verb.READ, QueueSource.LISTING),
    M.ADDQUEUE: (Verb.MANAGE, QueueSource.NAME),
    M.SETQUEUE: (Verb.MANAGE, QueueSource.Q),
    M.PAUSE: (Verb.MANAGE, QueueSource.Q),
    M.RESUME: (Verb.MANAGE, QueueSource.Q),
    M.CLEARQUEUE: (Verb.MANAGE, QueueSource.Q),
    M.RETRY: (Verb.MANAGE, QueueSource.JID),
    M.RMJOB: (Verb.MANAGE, QueueSource.JID),
    M.CANCEL: (Verb.MANAGE, QueueSource.JID),
    M.BULK: (Verb.MANAGE, QueueSource.Q),
    M.RMQUEUE: (Verb.ADMIN, QueueSource.Q),
    M.OBLITERATE: (Verb.ADMIN, QueueSource.Q),
    M.USERADD: (Verb.ADMIN, QueueSource.NONE),
    M.USERLIST: (Verb.ADMIN, QueueSource.NONE),
    M.USERRM: (Verb.ADMIN, QueueSource.NONE),
    M.USERPERMIT: (Verb.ADMIN, QueueSource.NONE),
    # Controlling workers is admin's; a worker's report of itself (no `worker`) needs none.
    M.WORKERCTL: (Verb.ADMIN, QueueSource.WORKER),
    # A schedule is part of its queue's set-up, like its settings: `manage` on the queue.
    M.ADDSCHEDULE: (Verb.MANAGE, QueueSource.Q),
    M.RMSCHEDULE: (Verb.MANAGE, QueueSource.SCHEDULE),
    M.PAUSESCHEDULE: (Verb.MANAGE, QueueSource.SCHEDULE),
    M.RESUMESCHEDULE: (Verb.MANAGE, QueueSource.SCHEDULE),
    M.LSSCHEDULE: (Verb.READ, QueueSource.LISTING),
    # Every client needs the routes; the reply names only the queues the user holds some
    # verb on.
    M.ROUTES: (None, QueueSource.LISTING),
}
# Listings and the key of their rows' queue names: the rows a user may not read are cut.
_LISTED = {"queues": "name", "schedules": "q"}


def queue_of(source: QueueSource, payload: dict[str, Any], worker: Worker | None,
             schedule_queue: Callable[[str], str | None]) -> str | None:
    """The queue a request names, or None when it names none (or names it so badly that
    the handler will refuse it anyway: a missing or non-string field, an unknown
    schedule)."""
    if source is QueueSource.Q or source is QueueSource.NAME:
        value = payload.get(source.value)
        return value if type(value) is str else None
    if source is QueueSource.JID:
        jid = payload.get("jid")
        return jid.rpartition(":")[0] if type(jid) is str else None
    if source is QueueSource.SID and worker is not None:
        subscription = worker.subscriptions.get(payload.get("sid"))  # type: ignore[arg-type]
        return None if subscription is None else subscription.queue_name
    if source is QueueSource.SCHEDULE:
        name = payload.get("name")
        return schedule_queue(name) if type(name) is str else None
    return None


def _is_self_report(payload: dict[str, Any]) -> bool:
    """WORKERCTL without `worker`: a worker's report of its own state."""
    return payload.get("worker") is None


def authorize(log: Any, user: str, permissions: frozenset[Permission],
              message_type: MessageType, payload: dict[str, Any], worker: Worker | None,
              schedule_queue: Callable[[str], str | None]) -> None:
    """Raise FORBIDDEN (and log it on `log`) unless `permissions` allow this request."""
    verb, source = RULES[message_type]
    if verb is None or (source is QueueSource.WORKER and _is_self_report(payload)):
        return
    if source is QueueSource.LISTING:
        if holds_verb(permissions, verb):
            return
        queue = None
    else:
        queue = queue_of(source, payload, worker, schedule_queue)
        if queue is None and source not in (QueueSource.NONE, QueueSource.WORKER):
            return  # a malformed request: the handler refuses it with INVALID_PAYLOAD
        if allows(permissions, verb, queue):
            return
    log.warning("request_forbidden", user=user, message=message_type.name, verb=verb.value,
                queue=queue)
    where = f"queue {queue!r}" if queue is not None else "every queue ('*')"
    raise RequestError(ErrorCode.FORBIDDEN,
                       f"user {user!r} may not {message_type.name}: it needs '{verb}' on "
                       f"{where}", details={"verb": verb.value, "queue": queue})


def is_listing(message_type: MessageType) -> bool:
    """The reply lists queues, cut to the user's by `filter_reply`."""
    return RULES[message_type][1] is QueueSource.LISTING


def filter_reply(permissions: frozenset[Permission], message_type: MessageType,
                 reply: dict[str, Any]) -> dict[str, Any]:
    """LSQUEUE and STATUS list only the queues the user may read, LSSCHEDULE only the
    schedules of those queues, ROUTES only the queues the user holds some verb on."""
    if RULES[message_type][1] is not QueueSource.LISTING:
        return reply
    if message_type is M.ROUTES:
        return {**reply, "queues": {name: owner for name, owner in reply["queues"].items()
                                    if any(allows(permissions, verb, name) for verb in Verb)}}
    for key, queue_key in _LISTED.items():
        if key in reply:
            reply = {**reply, key: [row for row in reply[key]
                                    if allows(permissions, Verb.READ, row.get(queue_key))]}
    return reply
