"""Typed results: the server's reply maps as dataclasses, times as aware `datetime`s.

Each `from_wire` reads the fields it knows and ignores any others, so a server that adds
fields does not break this client. Durations the server gives in milliseconds are
`timedelta`s here, except on `Quest`, which mirrors the push field for field. Job records
are in `overhop_client.jobs`, queue settings in `overhop_client.queue_settings`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from overhop_client.jobs import JobStatus
from overhop_client.queue_settings import QueueConfig
from overhop_client.times import parse_ms, parse_time


class QueueState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


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
class JobCounts:
    """How many jobs of a queue are in each status."""

    new: int = 0
    waiting: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return (self.new + self.waiting + self.delayed + self.active + self.completed
                + self.failed + self.cancelled)

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "JobCounts":
        return cls(**{status.value: p.get(status.value, 0) for status in JobStatus})


@dataclass(frozen=True, slots=True)
class RateStats:
    """A queue's rate limit and how much of the current window is used."""

    limit: int
    window: timedelta
    started_in_window: int
    """Jobs started in the last `window`."""

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "RateStats":
        return cls(p.get("limit", 0), timedelta(milliseconds=p.get("window_ms", 0)),
                   p.get("started_in_window", 0))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """QSTATS: a queue's job counts and its dispatch picture."""

    queue: str
    counts: JobCounts
    in_flight: int
    """Deliveries out now (the concurrency slots in use)."""
    concurrency_limit: int | None
    subscriptions: int
    credits: int
    """Credits all subscriptions of the queue hold together."""
    rate: RateStats | None = None
    """None when the queue has no rate limit."""
    oldest_waiting_age: timedelta | None = None
    """How long the oldest waiting job has been waiting; None when none waits."""
    state: QueueState = QueueState.ACTIVE

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "QueueStats":
        concurrency = p.get("concurrency") or {}
        rate = p.get("rate")
        return cls(
            queue=p["q"],
            counts=JobCounts.from_wire(p.get("stats") or {}),
            in_flight=concurrency.get("active", 0),
            concurrency_limit=concurrency.get("limit"),
            subscriptions=p.get("subscriptions", 0),
            credits=p.get("credits", 0),
            rate=None if not rate else RateStats.from_wire(rate),
            oldest_waiting_age=parse_ms(p.get("oldest_waiting_age_ms")),
            state=QueueState(p.get("state", QueueState.ACTIVE)),
        )


@dataclass(frozen=True, slots=True)
class ClearedJobs:
    """What CLEARQUEUE removed, per status."""

    new: int = 0
    waiting: int = 0
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.new + self.waiting + self.delayed

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "ClearedJobs":
        return cls(p.get("new", 0), p.get("waiting", 0), p.get("delayed", 0))


@dataclass(frozen=True, slots=True)
class LogTotals:
    """A job's log after a JOBLOG: lines kept, and lines dropped over its life."""

    kept: int
    dropped: int


# The server's default `jobs.max_enqueue_batch`, for a server that does not say.
DEFAULT_MAX_ENQUEUE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server told this connection at REGISTER, for pacing and sizing."""

    heartbeat_interval: timedelta
    """The server's timer tick: leases and stale workers are checked this often."""
    stale_after: timedelta
    """A worker holding jobs that stays silent this long is dropped."""
    ack_timeout: timedelta
    max_envelope_size_bytes: int
    max_job_payload_bytes: int
    max_result_bytes: int
    max_log_line_bytes: int
    max_enqueue_batch: int = DEFAULT_MAX_ENQUEUE_BATCH
    """The most jobs one ENQUEUEMANY may add."""

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "ServerLimits":
        return cls(
            heartbeat_interval=timedelta(milliseconds=p["heartbeat_interval_ms"]),
            stale_after=timedelta(milliseconds=p["stale_after_ms"]),
            ack_timeout=timedelta(milliseconds=p["ack_timeout_ms"]),
            max_envelope_size_bytes=p["max_envelope_size_bytes"],
            max_job_payload_bytes=p["max_job_payload_bytes"],
            max_result_bytes=p["max_result_bytes"],
            max_log_line_bytes=p["max_log_line_bytes"],
            max_enqueue_batch=p.get("max_enqueue_batch", DEFAULT_MAX_ENQUEUE_BATCH),
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A connection as STATUS shows it. `state` ("running", "quiet", "stopping") and
    `concurrency` (jobs at once per queue; None when it never said) are what the worker
    last reported, or an admin last set with WORKERCTL."""

    worker_id: str
    registered_at: datetime | None
    last_seen_at: datetime | None
    metadata: dict[str, Any]
    subscriptions: int
    deliveries: int
    name: str | None = None
    state: str = "running"
    concurrency: int | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "WorkerInfo":
        return cls(p["wid"], parse_time(p.get("registered_at")),
                   parse_time(p.get("last_seen_at")), p.get("metadata") or {},
                   p.get("subscriptions", 0), p.get("deliveries", 0), p.get("name"),
                   p.get("state", "running"), p.get("concurrency"))


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
    outcome (ACK, JOBBEAT, JOBLOG, COMPLETE, FAIL, RELEASE) quotes it with `jid`."""

    did: str
    sid: str
    jid: str
    queue: str
    attempt: int
    max_attempts: int
    lease_ms: int
    ack_timeout_ms: int
    payload: Any
    headers: dict[str, str] | None = None
    """The job's ENQUEUE headers (trace context), None when it has none."""
    task: str | None = None
    """The job's task (which of the queue's handlers runs it), None when it has none."""

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Quest":
        return cls(p["did"], p["sid"], p["jid"], p["q"], p["attempt"], p["max_attempts"],
                   p["lease_ms"], p["ack_timeout_ms"], p.get("job_payload"), p.get("headers"),
                   p.get("task"))


@dataclass(frozen=True, slots=True)
class Bye:
    """The server is shutting down: it closes the connection within `grace_ms`."""

    reason: str
    grace_ms: int

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Bye":
        return cls(p.get("reason", ""), p.get("grace_ms", 0))


class ControlAction(StrEnum):
    """What an admin tells a worker (WORKERCTL's and CONTROL's `action`)."""

    QUIET = "quiet"
    STOP = "stop"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class WorkerControl:
    """An admin's command to this worker (a CONTROL push): `concurrency` goes with
    CONCURRENCY; `grace` (None: the worker's own) with STOP."""

    action: ControlAction
    concurrency: int | None = None
    grace: timedelta | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "WorkerControl":
        grace_ms = p.get("grace_ms")
        return cls(ControlAction(p["action"]), p.get("concurrency"),
                   None if grace_ms is None else timedelta(milliseconds=grace_ms))


@dataclass(frozen=True, slots=True)
class Abort:
    """ABORT: the job of delivery `did` was cancelled (CANCEL) while this worker ran it."""

    jid: str
    did: str
    reason: str

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "Abort":
        return cls(str(p.get("jid", "")), str(p.get("did", "")), str(p.get("reason", "")))


QUEUE_MOVED_REASON = "queue_moved"
"""SUBEND's reason in a cluster when another broker owns the queue now."""


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """The server ended subscription `sid` on its own: its queue was removed
    (`reason` "queue_removed"), obliterated ("queue_obliterated"), or, in a cluster, moved
    to another broker ("queue_moved": `owner` is its address, None while no broker holds
    the queue)."""

    sid: str
    queue: str
    reason: str
    owner: str | None = None

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "SubscriptionEnded":
        owner = p.get("owner")
        return cls(p["sid"], p["q"], p.get("reason", ""),
                   owner if isinstance(owner, str) and owner else None)
