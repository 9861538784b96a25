"""The job record as typed results: what JOB and LSJOB answer, and its parts.

`from_wire` reads the fields it knows and ignores others, so a server that adds fields does
not break this client. Times are aware `datetime`s, durations `timedelta`s.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from overhop_client.queue_settings import Backoff
from overhop_client.times import parse_ms, parse_time


class JobStatus(StrEnum):
    NEW = "new"
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BlockReason(StrEnum):
    """Why a job that is not running is not running (`BlockedBy.reason`)."""

    QUEUE_PAUSED = "queue_paused"
    SCHEDULED = "scheduled"
    """Delayed until its start time (`until`)."""
    BACKING_OFF = "backing_off"
    """Delayed after a failed attempt until `until`."""
    QUEUE_MISSING = "queue_missing"
    BEING_ADVANCED = "being_advanced"
    """`new` in an active queue: the server is moving it to waiting or delayed."""
    CONCURRENCY_LIMIT = "concurrency_limit"
    GROUP_LIMIT = "group_limit"
    """Its group has the queue's `group_concurrency_limit` of jobs running (`group`,
    `active`, `limit`)."""
    RATE_LIMITED = "rate_limited"
    """The queue's rate limit is used up until `until`."""
    NO_WORKER_CREDIT = "no_worker_credit"
    """No subscription of the queue has a credit left (or there is none)."""
    IN_LINE = "in_line"
    """Dispatch is under way; older jobs go first."""


_REASONS = frozenset(reason.value for reason in BlockReason)


@dataclass(frozen=True, slots=True)
class BlockedBy:
    """What holds a job back. `reason` is a `BlockReason` value (a plain string when this
    client does not know it); `details` holds the other fields the server gave (for
    `concurrency_limit`: `active`, `limit`; for `no_worker_credit`: `subscriptions`)."""

    reason: str
    until: datetime | None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "BlockedBy":
        reason = p.get("reason", "")
        known: str = BlockReason(reason) if reason in _REASONS else reason
        return cls(known, parse_time(p.get("until")),
                   {k: v for k, v in p.items() if k not in ("reason", "until")})


@dataclass(frozen=True, slots=True)
class JobAttempt:
    """One ended attempt from a job's history."""

    attempt: int
    outcome: str
    """completed, failed, lease_expired, disconnected, stale_worker, server_restart,
    withdrawn, released or server_shutdown."""
    worker_id: str | None
    delivery_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    error: dict[str, Any] | None
    """What the worker sent with FAIL: `{message, details?}`."""
    counted: bool = True
    """Whether this outcome used up the attempt (not for withdrawn, released, shutdown)."""

    @property
    def error_message(self) -> str | None:
        return None if self.error is None else self.error.get("message")

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobAttempt":
        return cls(
            attempt=p.get("attempt", 0),
            outcome=p.get("outcome", ""),
            worker_id=p.get("worker_id"),
            delivery_id=p.get("delivery_id"),
            started_at=parse_time(p.get("started_at")),
            ended_at=parse_time(p.get("ended_at")),
            error=p.get("error"),
            counted=bool(p.get("counted", True)),
        )


@dataclass(frozen=True, slots=True)
class JobDelivery:
    """The delivery an active job is out on."""

    delivery_id: str
    worker_id: str | None
    started_at: datetime | None
    acked: bool | None
    lease_expires_at: datetime | None
    progress: Any


@dataclass(frozen=True, slots=True)
class JobBackoff:
    kind: Backoff
    max: timedelta | None
    jitter: bool


@dataclass(frozen=True, slots=True)
class JobOverrides:
    """The settings the job was enqueued with itself; None: it follows its queue."""

    max_attempts: int | None = None
    retry_interval: timedelta | None = None
    lease: timedelta | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobOverrides":
        return cls(p.get("max_attempts"), parse_ms(p.get("retry_interval_ms")),
                   parse_ms(p.get("lease_ms")))


@dataclass(frozen=True, slots=True)
class JobLogLine:
    """One line a worker logged for the job (JOBLOG), with the server's time."""

    at: datetime | None
    line: str


@dataclass(frozen=True, slots=True)
class Job:
    """A job. `max_attempts`, `retry_interval`, `lease` and `backoff` are the values in
    force now (the job's own, else its queue's, else the server's); `overrides` says which
    the job set itself."""

    jid: str
    uuid: str
    queue: str
    payload: Any
    status: JobStatus
    execution_start_at: datetime | None
    max_attempts: int
    retry_interval: timedelta | None
    lease: timedelta | None
    backoff: JobBackoff | None
    created_at: datetime | None
    finished_at: datetime | None
    result: Any
    attempts_so_far: int
    delivery: JobDelivery | None
    history: list[JobAttempt] = field(default_factory=list)
    overrides: JobOverrides = field(default_factory=JobOverrides)
    logs: list[JobLogLine] = field(default_factory=list)
    """The lines workers logged, oldest first (the oldest drop out past the server's
    bounds: `logs_dropped` counts them)."""
    logs_dropped: int = 0
    blocked_by: BlockedBy | None = None
    """Why the job is not running; None while it runs and once it has finished."""
    task: str | None = None
    """The task named at ENQUEUE (which handler runs it), None when none."""
    priority: int = 5
    """The job's priority (1 to 9; 5 when ENQUEUE gave none)."""
    cancel_reason: str | None = None
    """Why it was cancelled: set once it is `cancelled`, and while an active job is being
    cancelled (it ends `cancelled` when its attempt does)."""
    group: str | None = None
    """The group (tenant) named at ENQUEUE, None when none."""
    unique_key: str | None = None
    """The unique key named at ENQUEUE, None when none."""
    unique_until: str | None = None
    """How the job holds its unique key: `start`, `finish` or `ttl` (until
    `unique_expires_at`)."""
    unique_expires_at: datetime | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Job":
        runtime = p.get("runtime") or {}
        delivery = None
        if runtime.get("delivery_id") is not None:
            delivery = JobDelivery(
                delivery_id=runtime["delivery_id"],
                worker_id=runtime.get("worker_id"),
                started_at=parse_time(runtime.get("started_at")),
                acked=runtime.get("acked"),
                lease_expires_at=parse_time(runtime.get("lease_expires_at")),
                progress=runtime.get("progress"),
            )
        backoff = p.get("backoff")
        blocked_by = p.get("blocked_by")
        return cls(
            jid=p["jid"],
            uuid=p.get("uuid", p["jid"].rsplit(":", 1)[-1]),
            queue=p["queue_name"],
            payload=p.get("payload"),
            status=JobStatus(p["status"]),
            execution_start_at=parse_time(p.get("execution_start_at")),
            max_attempts=p.get("max_attempts", 0),
            retry_interval=parse_ms(p.get("retry_interval_ms")),
            lease=parse_ms(p.get("lease_ms")),
            backoff=None if not backoff else JobBackoff(
                Backoff(backoff.get("kind", Backoff.FIXED)), parse_ms(backoff.get("max_ms")),
                bool(backoff.get("jitter"))),
            created_at=parse_time(p.get("created_at")),
            finished_at=parse_time(p.get("finished_at")),
            result=p.get("result"),
            attempts_so_far=runtime.get("attempts_so_far", 0),
            delivery=delivery,
            history=[JobAttempt.from_wire(entry) for entry in p.get("history") or ()],
            overrides=JobOverrides.from_wire(p.get("overrides") or {}),
            logs=[JobLogLine(parse_time(entry.get("at")), entry.get("line", ""))
                  for entry in p.get("logs") or ()],
            logs_dropped=p.get("logs_dropped", 0),
            blocked_by=None if not blocked_by else BlockedBy.from_wire(blocked_by),
            task=p.get("task"),
            priority=p.get("priority", 5),
            cancel_reason=p.get("cancel_reason"),
            group=p.get("group"),
            unique_key=p.get("unique_key"),
            unique_until=p.get("unique_until"),
            unique_expires_at=parse_time(p.get("unique_expires_at")),
        )


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of LSJOB. Iterating it iterates its jobs."""

    queue: str
    status: JobStatus
    page: int
    page_size: int
    jobs: list[Job]
    truncated: bool = False
    """The server stopped the page early (its records reached half the largest envelope):
    ask with a smaller `page_size` to see the rest."""
    next_after: str | None = None
    """The last job's id when more jobs follow: pass it as `after` for the next page.
    With a `task` filter, the last job the server read: go on until it is None."""
    task: str | None = None
    """The task filter the page was listed with, None without one."""

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobPage":
        return cls(p["q"], JobStatus(p["status"]), p["page"], p["page_size"],
                   [Job.from_wire(job) for job in p.get("jobs") or ()],
                   bool(p.get("truncated", False)), p.get("next_after"), p.get("task"))
