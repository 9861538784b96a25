"""Job statuses, the transitions between them, and the job record.

The transition table is data: the storage layer refuses any move it does not list, the
docs draw their diagram from it, and the lifecycle tests check against it.
"""

import uuid
from enum import IntEnum
from typing import Any

import msgspec


class JobStatus(IntEnum):
    """A job's status. The numbers are stored in index keys: never renumber them."""

    NEW = 1
    WAITING = 2
    DELAYED = 3
    ACTIVE = 4
    COMPLETED = 5
    FAILED = 6
    CANCELLED = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> "JobStatus":
        return cls[label.upper()]


STATUS_LABELS = tuple(s.label for s in JobStatus)

# Why each move happens, for the spec's diagram and the lifecycle tests.
TRANSITIONS: dict[tuple[JobStatus, JobStatus], str] = {
    (JobStatus.NEW, JobStatus.WAITING): "queue resumed, start time reached",
    (JobStatus.NEW, JobStatus.DELAYED): "queue resumed, start time in the future",
    (JobStatus.DELAYED, JobStatus.WAITING): "start time or backoff reached (queue active)",
    (JobStatus.WAITING, JobStatus.ACTIVE): "dispatched to a subscription (QUEST)",
    (JobStatus.ACTIVE, JobStatus.WAITING): "delivery withdrawn before ACK, or RELEASE",
    (JobStatus.ACTIVE, JobStatus.COMPLETED): "COMPLETE",
    (JobStatus.ACTIVE, JobStatus.DELAYED): "attempt ended without success, attempts remain",
    (JobStatus.ACTIVE, JobStatus.FAILED): "attempt ended without success, none remain",
    (JobStatus.FAILED, JobStatus.WAITING): "RETRY",
    (JobStatus.FAILED, JobStatus.NEW): "RETRY while the queue is paused",
    (JobStatus.NEW, JobStatus.CANCELLED): "CANCEL (or BULK cancel)",
    (JobStatus.WAITING, JobStatus.CANCELLED): "CANCEL (or BULK cancel)",
    (JobStatus.DELAYED, JobStatus.CANCELLED): "CANCEL (or BULK cancel)",
    (JobStatus.ACTIVE, JobStatus.CANCELLED): "the attempt of a job CANCELled while active ended",
}

# Priorities: a higher number is dispatched first; jobs without one have the default.
MIN_PRIORITY = 1
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
# Of every PRIORITY_FAIR_SHARE jobs a queue dispatches, one is its oldest waiting job
# whatever its priority: so no priority starves (see docs/scheduling.md).
PRIORITY_FAIR_SHARE = 10


def effective_priority(job: "JobRecord") -> int:
    """The job's priority, the default when ENQUEUE gave none."""
    return DEFAULT_PRIORITY if job.priority is None else job.priority


def priority_rank(priority: int | None) -> int:
    """The byte that orders waiting jobs in the index: 0 for the highest priority."""
    return MAX_PRIORITY - (DEFAULT_PRIORITY if priority is None else priority)


# Statuses a job never leaves on its own: they hold a finish time (the `by_finish` index)
# and retention prunes them.
FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# Statuses CANCEL moves to `cancelled` at once: work not started yet.
CANCELLABLE_NOW = frozenset({JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED})
# RMJOB may remove a job only in these statuses: never an active one (its worker holds it).
REMOVABLE_STATUSES = frozenset(
    {JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED, JobStatus.FAILED,
     JobStatus.COMPLETED, JobStatus.CANCELLED}
)
# When CANCEL gives no reason, the one stored (a reason set on an active job is also the
# mark that its attempt must end `cancelled`).
DEFAULT_CANCEL_REASON = "cancelled"


class AttemptOutcome(IntEnum):
    """How one delivery ended. `uses_attempt` says whether it counts as an attempt:
    COMPLETED counts (and ends the job); WITHDRAWN, RELEASED and SERVER_SHUTDOWN do not
    (the worker never started, gave it back unstarted, or was stopped by us); every other
    outcome counts and goes through the retry path."""

    COMPLETED = 1
    FAILED = 2
    LEASE_EXPIRED = 3
    DISCONNECTED = 4
    STALE_WORKER = 5
    SERVER_RESTART = 6
    WITHDRAWN = 7  # never acknowledged: the worker did not start it, no attempt is used
    RELEASED = 8  # given back by the worker with RELEASE: no attempt is used
    SERVER_SHUTDOWN = 9  # the server stopped before the outcome came: no attempt is used

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def uses_attempt(self) -> bool:
        return self not in (AttemptOutcome.WITHDRAWN, AttemptOutcome.RELEASED,
                            AttemptOutcome.SERVER_SHUTDOWN)


def uuid_of_job_id(job_id: str, queue_name: str) -> bytes:
    """The 16 uuid bytes of a job id of `queue_name` (`<queue>:<uuid>`), as given by a
    client to page on from; ValueError when it is not a job id of that queue."""
    queue_part, _, uuid_part = job_id.rpartition(":")
    if queue_part != queue_name:
        raise ValueError(f"{job_id!r} is not a job id of queue {queue_name!r}")
    return uuid.UUID(uuid_part).bytes


class JobRecord(msgspec.Struct, array_like=True):
    """One job as stored. `payload` and `result` are MessagePack bytes, kept as sent.

    A msgspec struct encoded as an array of its fields in this order: that array is the
    stored record (storage/records.py), so msgspec encodes and decodes it in C, checking
    each field's type as it goes. Never reorder the fields; append new ones with a default.

    `max_attempts`, `retry_interval_ms` and `lease_ms` are the job's own overrides, None
    when the job follows its queue's settings: those are read when they are needed (at
    dispatch, at a failure), so a queue's settings changed live apply to its waiting jobs.
    `logs` holds `[at_ms, line]` pairs appended by the worker holding the job. `headers`
    is the producer's optional map. Fields from `headers` on were appended later, so
    older records decode without them.
    """

    job_id: str
    queue_name: str
    status: JobStatus
    payload: bytes | None
    created_at_ms: int
    execution_start_at_ms: int
    max_attempts: int | None
    retry_interval_ms: int | None
    lease_ms: int | None
    reserved: Any = None  # was a per-job backoff in an early draft; kept for the layout
    attempts_so_far: int = 0
    delivery_id: str | None = None
    worker_id: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    result: bytes | None = None
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)
    logs: list[list[Any]] = msgspec.field(default_factory=list)
    logs_dropped: int = 0
    # Trace context and other propagation headers the producer sent with ENQUEUE (W3C
    # `traceparent`, `tracestate`): stored and handed to the worker, never interpreted.
    headers: dict[str, str] | None = None
    # The producer's optional task name: which of a queue's handlers runs the job.
    task: str | None = None
    # Why the job was cancelled (CANCEL's reason). Set on an active job when CANCEL comes
    # (durably: whatever ends that attempt, even a restart, ends the job `cancelled`), and
    # on every job that ends `cancelled`.
    cancel_reason: str | None = None
    # The producer's priority (MIN_PRIORITY..MAX_PRIORITY); None: DEFAULT_PRIORITY.
    priority: int | None = None
    # The producer's unique key, its scope (a `uniqueness.UniqueScope` number) and, for a
    # duration, when it ends: the key is held in the store's `unique` table while the job
    # holds it (model/uniqueness.py).
    unique_key: str | None = None
    unique_scope: int | None = None
    unique_expires_at_ms: int | None = None
    # The producer's group (a tenant): its queue's group limit and turns apply.
    group: str | None = None

    @property
    def uuid(self) -> str:
        return self.job_id.rsplit(":", 1)[1]
