"""The writer process's dispatch table: an operation's code to the function that applies
it, `apply(txn, op, jobs_config)`, which returns the result in wire form."""

from collections.abc import Callable
from typing import Any

from overhop.config.sections import JobsConfig
from overhop.storage.operations import apply_actions as actions
from overhop.storage.operations import apply_jobs as jobs
from overhop.storage.operations import apply_queues as queues
from overhop.storage.operations import apply_schedules as schedules
from overhop.storage.operations import apply_users as users
from overhop.storage.operations.base import OperationCode
from overhop.storage.store_txn import StoreTxn

Apply = Callable[[StoreTxn, Any, JobsConfig], Any]

_BY_CODE: dict[OperationCode, Apply] = {
    OperationCode.BARRIER: queues.apply_barrier,
    OperationCode.ADD_QUEUE: queues.apply_add_queue,
    OperationCode.REMOVE_QUEUE: queues.apply_remove_queue,
    OperationCode.SET_QUEUE_STATE: queues.apply_set_queue_state,
    OperationCode.ENQUEUE: jobs.apply_enqueue,
    OperationCode.ENQUEUE_MANY: jobs.apply_enqueue_many,
    OperationCode.TAKE_WAITING: jobs.apply_take_waiting,
    OperationCode.COMPLETE: jobs.apply_complete,
    OperationCode.END_ATTEMPT: jobs.apply_end_attempt,
    OperationCode.RETRY_FAILED: jobs.apply_retry_failed,
    OperationCode.REMOVE_JOB: jobs.apply_remove_job,
    OperationCode.PROMOTE_DUE: queues.apply_promote_due,
    OperationCode.ADVANCE_NEW: queues.apply_advance_new,
    OperationCode.RECOVER_ACTIVE: queues.apply_recover_active,
    OperationCode.SET_QUEUE_CONFIG: queues.apply_set_queue_config,
    OperationCode.CLEAR_QUEUE_BATCH: queues.apply_clear_queue_batch,
    OperationCode.OBLITERATE_BATCH: queues.apply_obliterate_batch,
    OperationCode.DELETE_EMPTY_QUEUE: queues.apply_delete_empty_queue,
    OperationCode.PRUNE_FINISHED: queues.apply_prune_finished,
    OperationCode.APPEND_LOGS: jobs.apply_append_logs,
    OperationCode.ADD_USER: users.apply_add_user,
    OperationCode.REMOVE_USER: users.apply_remove_user,
    OperationCode.SET_USER_PERMISSIONS: users.apply_set_user_permissions,
    OperationCode.CANCEL_JOB: actions.apply_cancel_job,
    OperationCode.RETRY_FAILED_BATCH: actions.apply_retry_failed_batch,
    OperationCode.REMOVE_JOBS_BATCH: actions.apply_remove_jobs_batch,
    OperationCode.CANCEL_JOBS_BATCH: actions.apply_cancel_jobs_batch,
    OperationCode.PUT_SCHEDULE: schedules.apply_put_schedule,
    OperationCode.REMOVE_SCHEDULE: schedules.apply_remove_schedule,
    OperationCode.SET_SCHEDULE_PAUSED: schedules.apply_set_schedule_paused,
    OperationCode.FIRE_SCHEDULE: schedules.apply_fire_schedule,
    OperationCode.CLAIM_QUEUE: queues.apply_ownership,
    OperationCode.RELEASE_QUEUE: queues.apply_ownership,
}
# By code, for the writer's loop (every code, in order).
APPLY: dict[int, Apply] = {code: _BY_CODE[code] for code in OperationCode}
