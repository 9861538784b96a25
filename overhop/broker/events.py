"""What the broker tells a worker's connection on its own: domain events, not frames.

The broker hands these to the worker's `Peer`; the server alone turns them into QUEST,
SUBEND, RESULT, ABORT and CONTROL frames (`overhop/server/pushes.py`), so the broker never
builds wire messages.
"""

from dataclasses import dataclass
from enum import StrEnum

from overhop.model.jobs import JobRecord
from overhop.model.queues import JobPolicy


class SubscriptionEnd(StrEnum):
    """Why the server ended a subscription on its own (the `reason` of a SUBEND push)."""

    QUEUE_REMOVED = "queue_removed"
    QUEUE_OBLITERATED = "queue_obliterated"
    QUEUE_MOVED = "queue_moved"  # cluster mode: another broker owns the queue now


@dataclass(frozen=True, slots=True)
class JobAssigned:
    """A job's move to active is committed: the worker is to run it (a QUEST)."""

    delivery_id: str
    subscription_id: str
    job: JobRecord
    policy: JobPolicy
    ack_timeout_ms: int


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """A subscription ended because its queue went away or moved (a SUBEND)."""

    subscription_id: str
    queue_name: str
    reason: SubscriptionEnd
    owner: str | None = None  # QUEUE_MOVED: the new owner's address, if known


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The job this delivery runs was CANCELled (durably): its worker is to stop (an
    ABORT); whatever ends the attempt ends the job `cancelled`."""

    delivery_id: str
    job_id: str
    reason: str


class FinalStatus(StrEnum):
    """How a watched job ended, as RESULT says it."""

    COMPLETED = "completed"
    FAILED = "failed"
    REMOVED = "removed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class JobFinished:
    """A watched job reached its final outcome, durably (a RESULT push).

    A completed job carries its `result` (encoded, as stored); a failed or cancelled one
    the `job` record (its history holds the errors, its `cancel_reason` why); a removed one
    nothing more.
    """

    job_id: str
    status: FinalStatus
    result: bytes | None = None
    job: JobRecord | None = None


class ControlAction(StrEnum):
    """What an admin tells a worker to do (WORKERCTL's `action`, CONTROL's `action`)."""

    QUIET = "quiet"  # take no new jobs, finish the running ones, stay connected
    STOP = "stop"  # give back unstarted jobs, finish running ones within a grace, leave
    CONCURRENCY = "concurrency"  # run this many jobs at once per queue from now on


@dataclass(frozen=True, slots=True)
class WorkerControlled:
    """An admin's command for this worker (a CONTROL push)."""

    action: ControlAction
    concurrency: int | None = None
    """For CONCURRENCY: jobs at once per queue."""
    grace_ms: int | None = None
    """For STOP: how long running jobs may take before they are given back."""
