"""Write operations: the closed table the server submits to the writer (`catalogue.py`),
and how the writer process applies each one (`apply_jobs.py`, `apply_queues.py`, through
`table.py`). The server imports from here; only the writer process imports the table."""

from overhop.storage.operations.apply_jobs import job_policy
from overhop.storage.operations.apply_queues import CLEARABLE_STATUSES
from overhop.storage.operations.base import (
    Moved,
    Operation,
    OperationCode,
    Removed,
    Taken,
)
from overhop.storage.operations.catalogue import (
    OPERATION_BY_CODE,
    OPERATIONS,
    AddQueue,
    AddUser,
    AdvanceNew,
    AppendLogs,
    Barrier,
    ClearQueueBatch,
    Complete,
    DeleteEmptyQueue,
    EndAttempt,
    Enqueue,
    EnqueueMany,
    ObliterateBatch,
    PromoteDue,
    PruneFinished,
    RecoverActive,
    RemoveJob,
    RemoveQueue,
    RemoveUser,
    RetryFailed,
    SetQueueConfig,
    SetQueueState,
    SetUserPermissions,
    TakeWaiting,
)
from overhop.storage.operations.schedule_ops import (
    FireSchedule,
    PutSchedule,
    RemoveSchedule,
    SetSchedulePaused,
)

__all__ = [
    "CLEARABLE_STATUSES", "OPERATIONS", "OPERATION_BY_CODE", "AddQueue", "AddUser", "AdvanceNew",
    "AppendLogs", "Barrier", "ClearQueueBatch", "Complete", "DeleteEmptyQueue", "EndAttempt",
    "Enqueue", "EnqueueMany", "FireSchedule", "Moved", "ObliterateBatch", "Operation",
    "OperationCode", "PromoteDue", "PruneFinished", "PutSchedule", "RecoverActive",
    "RemoveJob", "RemoveQueue", "RemoveSchedule", "RemoveUser", "Removed", "RetryFailed",
    "SetQueueConfig", "SetQueueState", "SetSchedulePaused", "SetUserPermissions",
    "TakeWaiting", "Taken", "job_policy",
]
