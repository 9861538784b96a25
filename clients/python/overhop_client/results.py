"""Typed results: the server's reply maps as dataclasses, times as aware `datetime`s.

Each `from_wire` reads the fields it knows and ignores any others, so a server that adds
fields does not break this client. Durations the server gives in milliseconds are
`timedelta`s here, except on `Quest`, which mirrors the push field for field.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    NEW = "new"
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


class QueueState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class Backoff(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string from the server as an aware datetime; None stays None."""
    return None if value is None else datetime.fromisoformat(value)


def parse_ms(value: Any) -> timedelta | None:
    return None if value is None else timedelta(milliseconds=value)


def to_ms(value: timedelta) -> int:
    """Whole milliseconds of a duration, as the wire wants them."""
    return round(value / timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings; None means the server's default from its `[jobs]` config."""

    concurrency_limit: int | None = None
    allow_job_overrides: bool = True
    max_attempts: int | None = None
    retry_interval: timedelta | None = None
    backoff: Backoff = Backoff.FIXED
    backoff_max: timedelta | None = None
    backoff_jitter: bool = False
    lease: timedelta | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "QueueConfig":
        return cls(
            concurrency_limit=p.get("concurrency_limit"),
            allow_job_overrides=p.get("allow_job_overrides", True),
            max_attempts=p.get("max_attempts"),
            retry_interval=parse_ms(p.get("retry_interval_ms")),
            backoff=Backoff(p.get("backoff", Backoff.FIXED)),
            backoff_max=parse_ms(p.get("backoff_max_ms")),
            backoff_jitter=p.get("backoff_jitter", False),
            lease=parse_ms(p.get("lease_ms")),
        )


@dataclass(frozen=True, slots=True)
class QueueInfo:
    id: str
    name: str
    config: QueueConfig
    state: QueueState
    created_at: datetime | None
    system: bool

    @property
    def paused(self) -> bool:
        return self.state == QueueState.PAUSED

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "QueueInfo":
        return cls(
            id=p["id"],
            name=p["name"],
            config=QueueConfig.from_wire(p.get("config") or {}),
            state=QueueState(p["state"]),
            created_at=parse_time(p.get("created_at")),
            system=p.get("system", p["name"].startswith("_")),
        )


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
class Job:
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

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobPage":
        return cls(p["q"], JobStatus(p["status"]), p["page"], p["page_size"],
                   [Job.from_wire(job) for job in p.get("jobs") or ()],
                   bool(p.get("truncated", False)))


@dataclass(frozen=True, slots=True)
class JobCounts:
    """How many jobs of a queue are in each status."""

    new: int = 0
    waiting: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return (self.new + self.waiting + self.delayed + self.active + self.completed
                + self.failed)

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobCounts":
        return cls(**{status.value: p.get(status.value, 0) for status in JobStatus})


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    counts: JobCounts
    in_flight: int
    """Deliveries out now (the concurrency slots in use)."""
    concurrency_limit: int | None
    subscriptions: int
    credits: int
    """Credits all subscriptions of the queue hold together."""

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "QueueStats":
        concurrency = p.get("concurrency") or {}
        return cls(
            queue=p["q"],
            counts=JobCounts.from_wire(p.get("stats") or {}),
            in_flight=concurrency.get("active", 0),
            concurrency_limit=concurrency.get("limit"),
            subscriptions=p.get("subscriptions", 0),
            credits=p.get("credits", 0),
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    registered_at: datetime | None
    last_seen_at: datetime | None
    metadata: dict[str, Any]
    subscriptions: int
    deliveries: int

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "WorkerInfo":
        return cls(p["wid"], parse_time(p.get("registered_at")),
                   parse_time(p.get("last_seen_at")), p.get("metadata") or {},
                   p.get("subscriptions", 0), p.get("deliveries", 0))


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A queue as STATUS shows it; `counts` is None for system queues."""

    info: QueueInfo
    counts: JobCounts | None
    subscriptions: int
    active_deliveries: int

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "QueueStatus":
        stats = p.get("stats")
        return cls(QueueInfo.from_wire(p), None if stats is None else JobCounts.from_wire(stats),
                   p.get("subscriptions", 0), p.get("active_deliveries", 0))


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """The STATUS report. `raw` keeps the whole reply, sections this class does not type
    included."""

    version: str
    pid: int
    started_at: datetime | None
    uptime: timedelta
    config_source: str | None
    rss_bytes: int
    connections: int
    workers: list[WorkerInfo]
    deliveries: int
    storage: dict[str, Any]
    queues: list[QueueStatus]
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "ServerStatus":
        application = p.get("application") or {}
        pools = p.get("pools") or {}
        return cls(
            version=application.get("version", ""),
            pid=application.get("pid", 0),
            started_at=parse_time(application.get("started_at")),
            uptime=timedelta(seconds=application.get("uptime_seconds", 0)),
            config_source=application.get("config_source"),
            rss_bytes=(p.get("memory") or {}).get("rss_bytes", 0),
            connections=pools.get("connections", 0),
            workers=[WorkerInfo.from_wire(w) for w in pools.get("worker_list") or ()],
            deliveries=pools.get("deliveries", 0),
            storage=p.get("storage") or {},
            queues=[QueueStatus.from_wire(q) for q in p.get("queues") or ()],
            raw=p,
        )


@dataclass(frozen=True, slots=True)
class FailOutcome:
    """What became of a job after FAIL: `delayed` (a retry at `retry_at`) or `failed`."""

    status: JobStatus
    attempts_so_far: int
    retry_at: datetime | None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "FailOutcome":
        return cls(JobStatus(p["status"]), p.get("attempts_so_far", 0),
                   parse_time(p.get("retry_at")))


@dataclass(frozen=True, slots=True)
class Quest:
    """A job pushed to this worker (QUEST). `did` names this delivery of the job: every
    outcome (ACK, JOBBEAT, COMPLETE, FAIL, RELEASE) quotes it with `jid`."""

    did: str
    sid: str
    jid: str
    queue: str
    attempt: int
    max_attempts: int
    lease_ms: int
    ack_timeout_ms: int
    payload: Any

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Quest":
        return cls(p["did"], p["sid"], p["jid"], p["q"], p["attempt"], p["max_attempts"],
                   p["lease_ms"], p["ack_timeout_ms"], p.get("job_payload"))


@dataclass(frozen=True, slots=True)
class Bye:
    """The server is shutting down: it closes the connection within `grace_ms`."""

    reason: str
    grace_ms: int

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Bye":
        return cls(p.get("reason", ""), p.get("grace_ms", 0))
