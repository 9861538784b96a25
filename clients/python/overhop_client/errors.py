"""Exceptions: one class per ERR code the server sends, and `ConnectionLost`.

Every server error is an `OverhopError` carrying `.code` (the wire code), `.message` and
`.details`. `error_from_wire` turns an ERR payload into the class registered for its code
in `ERROR_CLASSES`; a code this client does not know yet becomes a plain `OverhopError`
with that code, so a newer server never breaks an older client.
"""

from typing import Any, ClassVar


class OverhopError(Exception):
    """The server refused a request (an ERR reply)."""

    code: str = "UNKNOWN"
    closes_connection: ClassVar[bool] = False
    """True for the codes after which the server always closes the connection."""

    def __init__(self, message: str, details: Any = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ServerUnreachable(ConnectionError):
    """No connection to the server could be made (refused, unreachable, unknown host).

    `address` is the `host:port` tried; the message says why, in one line. It is a
    ConnectionError, so code that retries on OSError (as the worker runner does) still does.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot connect to {address}: {reason}")
        self.address = address
        self.reason = reason


class ConnectionLost(ConnectionError):
    """The connection closed before the reply came, or was already closed.

    `error` holds the server's connection-level ERR (for example REGISTER_TIMEOUT or
    SHUTTING_DOWN) when it said why it closed the connection.
    """

    def __init__(self, message: str = "connection lost", error: OverhopError | None = None
                 ) -> None:
        super().__init__(message if error is None else f"{message}: {error}")
        self.error = error


class _ClosingError(OverhopError):
    """Framing, envelope and session errors: the server closes the connection after them."""

    closes_connection = True


# -- framing and envelope --------------------------------------------------------------
class FrameEmptyError(_ClosingError):
    code = "FRAME_EMPTY"


class FrameTooLargeError(_ClosingError):
    code = "FRAME_TOO_LARGE"


class MalformedError(_ClosingError):
    code = "MALFORMED"


class BadEnvelopeError(_ClosingError):
    code = "BAD_ENVELOPE"


class UnsupportedVersionError(_ClosingError):
    code = "UNSUPPORTED_VERSION"


class UnknownTypeError(_ClosingError):
    code = "UNKNOWN_TYPE"


class TooManyValuesError(_ClosingError):
    """The frame held more values than the server checks in one frame (32,768)."""

    code = "TOO_MANY_VALUES"


class FrameTimeoutError(_ClosingError):
    """A frame was not complete within the server's `wire.frame_timeout_ms`."""

    code = "FRAME_TIMEOUT"


class InputBufferFullError(_ClosingError):
    """The server held too many partial frames, and this connection held the most."""

    code = "INPUT_BUFFER_FULL"


# -- session ---------------------------------------------------------------------------
class ProtocolViolationError(_ClosingError):
    code = "PROTOCOL_VIOLATION"


class RegisterTimeoutError(_ClosingError):
    code = "REGISTER_TIMEOUT"


class TooManyConnectionsError(_ClosingError):
    code = "TOO_MANY_CONNECTIONS"


class ShuttingDownError(_ClosingError):
    code = "SHUTTING_DOWN"


# -- payloads and queues ---------------------------------------------------------------
class InvalidPayloadError(OverhopError):
    code = "INVALID_PAYLOAD"


class QueueNameInvalidError(OverhopError):
    code = "QUEUE_NAME_INVALID"


class QueueNotFoundError(OverhopError):
    code = "QUEUE_NOT_FOUND"


class QueueExistsError(OverhopError):
    code = "QUEUE_EXISTS"


class QueueSystemError(OverhopError):
    code = "QUEUE_SYSTEM"


class QueueAlreadyPausedError(OverhopError):
    code = "QUEUE_ALREADY_PAUSED"


class QueueNotPausedError(OverhopError):
    code = "QUEUE_NOT_PAUSED"


class QueueNotEmptyError(OverhopError):
    code = "QUEUE_NOT_EMPTY"


class TooManyQueuesError(OverhopError):
    """ADDQUEUE when the server already has `queues.max_queues` queues."""

    code = "TOO_MANY_QUEUES"


class QueueHasActiveJobsError(OverhopError):
    """OBLITERATE without `force` of a queue whose jobs are out with workers."""

    code = "QUEUE_HAS_ACTIVE_JOBS"


# -- subscriptions ---------------------------------------------------------------------
class AlreadySubscribedError(OverhopError):
    code = "ALREADY_SUBSCRIBED"


class SubscriptionNotFoundError(OverhopError):
    code = "SUBSCRIPTION_NOT_FOUND"


# -- jobs ------------------------------------------------------------------------------
class JobNotFoundError(OverhopError):
    code = "JOB_NOT_FOUND"


class JobStatusConflictError(OverhopError):
    code = "JOB_STATUS_CONFLICT"


class OverrideNotAllowedError(OverhopError):
    code = "OVERRIDE_NOT_ALLOWED"


class ResultTooLargeError(OverhopError):
    code = "RESULT_TOO_LARGE"


class PayloadTooLargeError(OverhopError):
    code = "PAYLOAD_TOO_LARGE"


class TaskNameInvalidError(OverhopError):
    """A task name breaks the naming rule (letters, digits, '_', '.', ':', '-')."""

    code = "TASK_NAME_INVALID"


# -- deliveries ------------------------------------------------------------------------
class DeliveryNotFoundError(OverhopError):
    code = "DELIVERY_NOT_FOUND"


class DeliveryStaleError(OverhopError):
    code = "DELIVERY_STALE"


class DeliveryAlreadyAckedError(OverhopError):
    code = "DELIVERY_ALREADY_ACKED"


# -- results ---------------------------------------------------------------------------
class WatchLimitError(OverhopError):
    """The connection would watch more jobs at once than the server allows (10,000)."""

    code = "WATCH_LIMIT"


# -- worker control --------------------------------------------------------------------
class WorkerNotFoundError(OverhopError):
    """WORKERCTL named no connected worker (by id or by name)."""

    code = "WORKER_NOT_FOUND"


# -- schedules -------------------------------------------------------------------------
class BadCronError(OverhopError):
    """The cron expression does not parse, or has no occurrence to come."""

    code = "BAD_CRON"


class BadTimezoneError(OverhopError):
    """The time zone is not an IANA name the server knows."""

    code = "BAD_TIMEZONE"


class ScheduleNotFoundError(OverhopError):
    code = "SCHEDULE_NOT_FOUND"


class TooManySchedulesError(OverhopError):
    """The server holds as many schedules as it allows (`schedules.max_schedules`)."""

    code = "TOO_MANY_SCHEDULES"


# -- storage and the server itself -----------------------------------------------------
class StorageFullError(OverhopError):
    code = "STORAGE_FULL"


class StorageUnavailableError(OverhopError):
    """The server's database cannot be reached or cannot write now (a failover of the
    PostgreSQL engine, a lost quorum): try again. The request did not take effect, unless
    the message says the commit was under way (then it may have, as after a crash)."""

    code = "STORAGE_UNAVAILABLE"


class InternalError(OverhopError):
    code = "INTERNAL"


# -- cluster mode ------------------------------------------------------------------------
class QueueMovedError(OverhopError):
    """Cluster mode: another broker owns the queue the request acts on; nothing changed.
    `owner` is its address (`host:port`), or None while no broker holds the queue. A
    client given the brokers' addresses follows it on its own and raises this only when
    the queue found no owner in time."""

    code = "QUEUE_MOVED"

    @property
    def queue(self) -> str | None:
        """The queue the request acts on (`details["q"]`)."""
        queue = self.details.get("q") if isinstance(self.details, dict) else None
        return queue if isinstance(queue, str) else None

    @property
    def owner(self) -> str | None:
        """The owner's address (`details["owner"]`), None while no broker holds the queue."""
        owner = self.details.get("owner") if isinstance(self.details, dict) else None
        return owner if isinstance(owner, str) and owner else None


# -- authentication and permissions ------------------------------------------------------
class AuthFailedError(_ClosingError):
    """Unknown user or wrong password (the server does not say which), or a SCRAM message
    it could not use. `details["delay_ms"]`: how long the server made this answer wait."""

    code = "AUTH_FAILED"


class ForbiddenError(OverhopError):
    """The user lacks the verb on the queue; `details` names both (`verb`, `queue`)."""

    code = "FORBIDDEN"


class UserExistsError(OverhopError):
    code = "USER_EXISTS"


class UserNotFoundError(OverhopError):
    code = "USER_NOT_FOUND"


def _codes(*classes: type[OverhopError]) -> dict[str, type[OverhopError]]:
    return {cls.code: cls for cls in classes}


ERROR_CLASSES: dict[str, type[OverhopError]] = _codes(
    FrameEmptyError, FrameTooLargeError, MalformedError, BadEnvelopeError,
    UnsupportedVersionError, UnknownTypeError, ProtocolViolationError, RegisterTimeoutError,
    TooManyConnectionsError, ShuttingDownError, InvalidPayloadError, QueueNameInvalidError,
    QueueNotFoundError, QueueExistsError, QueueSystemError, QueueAlreadyPausedError,
    QueueNotPausedError, QueueNotEmptyError, QueueHasActiveJobsError, AlreadySubscribedError,
    SubscriptionNotFoundError, JobNotFoundError, JobStatusConflictError,
    OverrideNotAllowedError, ResultTooLargeError, PayloadTooLargeError, TaskNameInvalidError,
    DeliveryNotFoundError, DeliveryStaleError, DeliveryAlreadyAckedError, WatchLimitError,
    WorkerNotFoundError,
    StorageFullError, StorageUnavailableError, InternalError, QueueMovedError,
    TooManyValuesError, FrameTimeoutError,
    InputBufferFullError, TooManyQueuesError, AuthFailedError, ForbiddenError,
    UserExistsError, UserNotFoundError, BadCronError, BadTimezoneError,
    ScheduleNotFoundError, TooManySchedulesError,
)
"""ERR code -> exception class. A code missing here becomes a plain `OverhopError`."""


def error_from_wire(payload: dict[str, Any]) -> OverhopError:
    """The exception for an ERR payload `{code, msg?, details?}`."""
    code = payload.get("code")
    code = code if isinstance(code, str) and code else "UNKNOWN"
    message = payload.get("msg")
    message = message if isinstance(message, str) else ""
    cls = ERROR_CLASSES.get(code, OverhopError)
    return cls(message, payload.get("details"), code=code)
