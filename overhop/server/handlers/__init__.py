"""The handler table: one function per client message type.

Handlers hold no business logic: parse the payload into typed values, make one call into
the broker's service, shape the reply. A handler returns the OK payload at once, or a
`Pending` (a future and the function that turns its result into the OK payload) when the
answer waits for a commit. Errors are raised as `OverhopError`; the connection turns them
into ERR frames.
"""

from overhop.server.handlers.cluster import handle_routes
from overhop.server.handlers.deliveries import (
    handle_ack,
    handle_complete,
    handle_credit,
    handle_fail,
    handle_jobbeat,
    handle_joblog,
    handle_release,
    handle_subscribe,
    handle_unsubscribe,
)
from overhop.server.handlers.job_actions import handle_bulk, handle_cancel
from overhop.server.handlers.jobs import (
    handle_enqueue,
    handle_enqueuemany,
    handle_job,
    handle_lsjob,
    handle_retry,
    handle_rmjob,
    handle_unwatch,
    handle_watch,
)
from overhop.server.handlers.queues import (
    handle_addqueue,
    handle_clearqueue,
    handle_lsqueue,
    handle_obliterate,
    handle_pause,
    handle_qstats,
    handle_queue,
    handle_resume,
    handle_rmqueue,
    handle_setqueue,
    handle_status,
)
from overhop.server.handlers.replies import Handler, Pending, Reply
from overhop.server.handlers.schedules import (
    handle_addschedule,
    handle_lsschedule,
    handle_pauseschedule,
    handle_resumeschedule,
    handle_rmschedule,
)
from overhop.server.handlers.session import handle_goodbye, handle_register
from overhop.server.handlers.users import (
    handle_useradd,
    handle_userlist,
    handle_userpermit,
    handle_userrm,
)
from overhop.server.handlers.workers import handle_workerctl
from overhop.wire.messages import MessageType

__all__ = ["HANDLERS", "Handler", "Pending", "Reply"]

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
    MessageType.WATCH: handle_watch,
    MessageType.UNWATCH: handle_unwatch,
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
    MessageType.USERADD: handle_useradd,
    MessageType.USERLIST: handle_userlist,
    MessageType.USERRM: handle_userrm,
    MessageType.USERPERMIT: handle_userpermit,
    MessageType.CANCEL: handle_cancel,
    MessageType.BULK: handle_bulk,
    MessageType.WORKERCTL: handle_workerctl,
    MessageType.ADDSCHEDULE: handle_addschedule,
    MessageType.LSSCHEDULE: handle_lsschedule,
    MessageType.RMSCHEDULE: handle_rmschedule,
    MessageType.PAUSESCHEDULE: handle_pauseschedule,
    MessageType.RESUMESCHEDULE: handle_resumeschedule,
    MessageType.ROUTES: handle_routes,
}
