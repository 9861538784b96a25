"""Stable ERR codes and the exceptions that carry them.

Codes describe what the client sees, never our internals. Exceptions become ERR frames in
exactly one place (`overhop.server.connection`). `protocol/PROTOCOL.md` lists every code;
a test keeps the list and this enum equal.
"""

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # Framing and envelope: the stream or the message is unusable.
    FRAME_EMPTY = "FRAME_EMPTY"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    MALFORMED = "MALFORMED"
    BAD_ENVELOPE = "BAD_ENVELOPE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    TOO_MANY_VALUES = "TOO_MANY_VALUES"
    FRAME_TIMEOUT = "FRAME_TIMEOUT"
    INPUT_BUFFER_FULL = "INPUT_BUFFER_FULL"
    # Session: a message the connection's state does not allow.
    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    REGISTER_TIMEOUT = "REGISTER_TIMEOUT"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    # Authentication and permissions.
    AUTH_FAILED = "AUTH_FAILED"
    FORBIDDEN = "FORBIDDEN"
    USER_EXISTS = "USER_EXISTS"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    # Payload validation.
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    # Queues.
    QUEUE_NAME_INVALID = "QUEUE_NAME_INVALID"
    QUEUE_NOT_FOUND = "QUEUE_NOT_FOUND"
    QUEUE_EXISTS = "QUEUE_EXISTS"
    QUEUE_SYSTEM = "QUEUE_SYSTEM"
    QUEUE_ALREADY_PAUSED = "QUEUE_ALREADY_PAUSED"
    QUEUE_NOT_PAUSED = "QUEUE_NOT_PAUSED"
    QUEUE_NOT_EMPTY = "QUEUE_NOT_EMPTY"
    QUEUE_HAS_ACTIVE_JOBS = "QUEUE_HAS_ACTIVE_JOBS"
    TOO_MANY_QUEUES = "TOO_MANY_QUEUES"
    # Cluster mode: another broker owns the queue (details: q, owner).
    QUEUE_MOVED = "QUEUE_MOVED"
    # Subscriptions.
    ALREADY_SUBSCRIBED = "ALREADY_SUBSCRIBED"
    SUBSCRIPTION_NOT_FOUND = "SUBSCRIPTION_NOT_FOUND"
    # Jobs.
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_STATUS_CONFLICT = "JOB_STATUS_CONFLICT"
    OVERRIDE_NOT_ALLOWED = "OVERRIDE_NOT_ALLOWED"
    RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    TASK_NAME_INVALID = "TASK_NAME_INVALID"
    # Deliveries (QUEST and its outcomes).
    DELIVERY_NOT_FOUND = "DELIVERY_NOT_FOUND"
    DELIVERY_STALE = "DELIVERY_STALE"
    DELIVERY_ALREADY_ACKED = "DELIVERY_ALREADY_ACKED"
    # Results (WATCH).
    WATCH_LIMIT = "WATCH_LIMIT"
    # Worker control (WORKERCTL).
    WORKER_NOT_FOUND = "WORKER_NOT_FOUND"
    # Schedules (ADDSCHEDULE and the like).
    BAD_CRON = "BAD_CRON"
    BAD_TIMEZONE = "BAD_TIMEZONE"
    SCHEDULE_NOT_FOUND = "SCHEDULE_NOT_FOUND"
    TOO_MANY_SCHEDULES = "TOO_MANY_SCHEDULES"
    # Storage.
    STORAGE_FULL = "STORAGE_FULL"
    INTERNAL = "INTERNAL"


class OverhopError(Exception):
    """An error the client is told about with an ERR frame.

    `closes` says whether the connection is closed after the ERR is sent.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    closes: bool = False

    def __init__(self, code: ErrorCode, message: str, *, closes: bool = False,
                 details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.closes = closes
        self.details = details


class ProtocolError(OverhopError):
    """The peer broke the framing, the envelope or the session grammar: the connection closes."""

    def __init__(self, code: ErrorCode, message: str, rid: str | None = None) -> None:
        super().__init__(code, message, closes=True)
        self.rid = rid


class RequestError(OverhopError):
    """A well-formed request that cannot be carried out: ERR, and the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(code, message, closes=False, details=details)

    def in_batch(self, index: int) -> "RequestError":
        """This error as the refusal of job `index` of a batch (ENQUEUEMANY)."""
        return RequestError(self.code, f"job {index}: {self.message}", {"index": index})


class DeferredRefusal(Exception):
    """A request is refused, but which refusal it gets needs a storage read (which the
    event loop must await): `decide()` raises the `OverhopError` to send. The connection
    answers it like any other pending reply."""

    def __init__(self, decide: "Callable[[], Awaitable[None]]") -> None:
        super().__init__("refusal decided by a storage read")
        self.decide = decide
