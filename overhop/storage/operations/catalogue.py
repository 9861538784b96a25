"""The writer seam: every write the server can ask of storage, as a closed set of values.

Each operation is a frozen dataclass whose class declares its `code` (one number per
operation, all in `OperationCode`), whether it `grows` the store (refused with
STORAGE_FULL when space is low) and, as its type parameter, its result type. Their fields
are plain values and records; nothing else crosses the seam.

Between the server and the LMDB writer process an operation travels as a MessagePack
array, `[code, field, ...]` (`to_wire`, `from_wire`): a job or queue record as the bytes
it is stored as, a queue config likewise, enums as numbers. A result travels in a wire
form too (the apply functions return it: a job record as its stored bytes, `Taken`,
`Moved` and `Removed` as arrays), which `decode_result` turns into the result type.
docs/storage.md lists the table; a second storage engine implements the same operations.
"""

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage.operations.base import Moved, Operation, OperationCode, Removed, Taken
from overhop.storage.operations.catalogue_actions import (
    CancelJob,
    CancelJobsBatch,
    RemoveJobsBatch,
    RetryFailedBatch,
)
from overhop.storage.operations.ownership_ops import OWNERSHIP_OPERATIONS
from overhop.storage.operations.schedule_ops import SCHEDULE_OPERATIONS
from overhop.storage.records import (
    decode_job,
    decode_queue,
    decode_queue_config,
    encode_job,
    encode_queue,
    encode_queue_config,
)

# -- queues ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Barrier(Operation[None]):
    """Writes nothing: it resolves once everything submitted before it has (a way to wait
    for the writer)."""

    code = OperationCode.BARRIER
    subject = "a barrier"


@dataclass(frozen=True, slots=True)
class AddQueue(Operation[QueueRecord]):
    record: QueueRecord
    code = OperationCode.ADD_QUEUE
    grows = True
    subject = "new queues are"

    def to_wire(self) -> list[Any]:
        return [self.code, encode_queue(self.record)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "AddQueue":
        return cls(decode_queue(wire[1]))

    @staticmethod
    def decode_result(wire: Any) -> QueueRecord:
        return decode_queue(wire)


@dataclass(frozen=True, slots=True)
class RemoveQueue(Operation[None]):
    name: str
    code = OperationCode.REMOVE_QUEUE
    subject = "removing a queue is"


_STATE_NUMBERS = {QueueState.ACTIVE: 1, QueueState.PAUSED: 2}
_STATES = {number: state for state, number in _STATE_NUMBERS.items()}


@dataclass(frozen=True, slots=True)
class SetQueueState(Operation[QueueRecord]):
    name: str
    state: QueueState
    code = OperationCode.SET_QUEUE_STATE
    subject = "pausing or resuming a queue is"

    def to_wire(self) -> list[Any]:
        return [self.code, self.name, _STATE_NUMBERS[self.state]]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "SetQueueState":
        return cls(wire[1], _STATES[wire[2]])

    @staticmethod
    def decode_result(wire: Any) -> QueueRecord:
        return decode_queue(wire)


@dataclass(frozen=True, slots=True)
class SetQueueConfig(Operation[QueueRecord]):
    name: str
    config: QueueConfig
    code = OperationCode.SET_QUEUE_CONFIG
    subject = "changing a queue's settings is"

    def to_wire(self) -> list[Any]:
        return [self.code, self.name, encode_queue_config(self.config)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "SetQueueConfig":
        return cls(wire[1], decode_queue_config(wire[2]))

    @staticmethod
    def decode_result(wire: Any) -> QueueRecord:
        return decode_queue(wire)


# -- jobs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueue(Operation[str]):
    """A new job (the server holds the record already); its id."""

    job: JobRecord
    code = OperationCode.ENQUEUE
    grows = True
    subject = "new jobs are"

    def to_wire(self) -> list[Any]:
        return [self.code, encode_job(self.job)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "Enqueue":
        return ReceivedEnqueue(decode_job(wire[1]), wire[1])


@dataclass(frozen=True, slots=True)
class ReceivedEnqueue(Enqueue):
    """An `Enqueue` as the writer process received it: with the record's bytes, which it
    stores as they came instead of encoding the record again."""

    stored: bytes


@dataclass(frozen=True, slots=True)
class EnqueueMany(Operation[list[str]]):
    """New jobs of one queue, all in one transaction; their ids in order."""

    queue_name: str
    jobs: list[JobRecord]
    code = OperationCode.ENQUEUE_MANY
    grows = True
    subject = "new jobs are"

    def to_wire(self) -> list[Any]:
        return [self.code, self.queue_name, [encode_job(job) for job in self.jobs]]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "EnqueueMany":
        return ReceivedEnqueueMany(wire[1], [decode_job(data) for data in wire[2]], wire[2])


@dataclass(frozen=True, slots=True)
class ReceivedEnqueueMany(EnqueueMany):
    """An `EnqueueMany` as the writer process received it (see `ReceivedEnqueue`)."""

    stored: list[bytes]


@dataclass(frozen=True, slots=True)
class TakeWaiting(Operation[Taken]):
    """Move the first waiting jobs (highest priority, then oldest) to active, one per
    (delivery id, worker id), unless a guard's end was not written; `dispatched` counts the
    queue's earlier dispatches, placing this batch's fair-share picks (see
    `apply_take_waiting`)."""

    queue_name: str
    assignments: list[tuple[str, str]]
    now_ms: int
    guards: list[tuple[str, str]]
    dispatched: int
    code = OperationCode.TAKE_WAITING
    subject = "dispatching jobs is"

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "TakeWaiting":
        return cls(wire[1], [(d, w) for d, w in wire[2]], wire[3],
                   [(d, j) for d, j in wire[4]], wire[5])

    @staticmethod
    def decode_result(wire: Any) -> Taken:
        return Taken([decode_job(data) for data in wire[0]], wire[1], wire[2])


@dataclass(frozen=True, slots=True)
class Complete(Operation[int]):
    """The job's new status number: completed, or cancelled (CANCELled while it ran)."""

    job_id: str
    delivery_id: str
    result: bytes | None
    now_ms: int
    history_limit: int
    code = OperationCode.COMPLETE
    subject = "completing a job is"


@dataclass(frozen=True, slots=True)
class EndAttempt(Operation[JobRecord]):
    """An attempt ended without success (FAIL, lease expiry, disconnect...)."""

    job_id: str
    delivery_id: str
    outcome: AttemptOutcome
    now_ms: int
    error: dict[str, Any] | None
    code = OperationCode.END_ATTEMPT
    subject = "ending an attempt is"

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "EndAttempt":
        return cls(wire[1], wire[2], AttemptOutcome(wire[3]), wire[4], wire[5])

    @staticmethod
    def decode_result(wire: Any) -> JobRecord:
        return decode_job(wire)


@dataclass(frozen=True, slots=True)
class RetryFailed(Operation[JobRecord]):
    job_id: str
    now_ms: int
    code = OperationCode.RETRY_FAILED
    subject = "retrying a job is"

    @staticmethod
    def decode_result(wire: Any) -> JobRecord:
        return decode_job(wire)


@dataclass(frozen=True, slots=True)
class RemoveJob(Operation[JobRecord]):
    job_id: str
    code = OperationCode.REMOVE_JOB
    subject = "removing a job is"

    @staticmethod
    def decode_result(wire: Any) -> JobRecord:
        return decode_job(wire)


@dataclass(frozen=True, slots=True)
class AppendLogs(Operation[JobRecord]):
    job_id: str
    delivery_id: str
    lines: list[str]
    now_ms: int
    code = OperationCode.APPEND_LOGS
    grows = True
    subject = "job log lines are"

    @staticmethod
    def decode_result(wire: Any) -> JobRecord:
        return decode_job(wire)


# -- maintenance and removal steps -------------------------------------------------------


def _moved(wire: Any) -> Moved:
    return Moved(wire[0], wire[1], wire[2])


def _removed(wire: Any) -> Removed:
    return Removed(wire[0], wire[1], {JobStatus(k): v for k, v in wire[2].items()})


@dataclass(frozen=True, slots=True)
class PromoteDue(Operation[Moved]):
    queue_name: str
    now_ms: int
    limit: int
    code = OperationCode.PROMOTE_DUE
    subject = "promoting due jobs is"
    decode_result = staticmethod(_moved)


@dataclass(frozen=True, slots=True)
class AdvanceNew(Operation[Moved]):
    queue_name: str
    now_ms: int
    limit: int
    code = OperationCode.ADVANCE_NEW
    subject = "advancing new jobs is"
    decode_result = staticmethod(_moved)


@dataclass(frozen=True, slots=True)
class RecoverActive(Operation[Moved]):
    queue_name: str
    now_ms: int
    limit: int
    code = OperationCode.RECOVER_ACTIVE
    subject = "recovering active jobs is"
    decode_result = staticmethod(_moved)


@dataclass(frozen=True, slots=True)
class ClearQueueBatch(Operation[Removed]):
    queue_name: str
    limit: int
    before: bytes
    code = OperationCode.CLEAR_QUEUE_BATCH
    subject = "clearing a queue is"
    decode_result = staticmethod(_removed)


@dataclass(frozen=True, slots=True)
class ObliterateBatch(Operation[Removed]):
    queue_name: str
    limit: int
    code = OperationCode.OBLITERATE_BATCH
    subject = "obliterating a queue is"
    decode_result = staticmethod(_removed)


@dataclass(frozen=True, slots=True)
class DeleteEmptyQueue(Operation[None]):
    queue_name: str
    code = OperationCode.DELETE_EMPTY_QUEUE
    subject = "obliterating a queue is"


@dataclass(frozen=True, slots=True)
class PruneFinished(Operation[Removed]):
    queue_name: str
    config: QueueConfig
    now_ms: int
    limit: int
    code = OperationCode.PRUNE_FINISHED
    subject = "retention is"
    decode_result = staticmethod(_removed)

    def to_wire(self) -> list[Any]:
        return [self.code, self.queue_name, encode_queue_config(self.config), self.now_ms,
                self.limit]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "PruneFinished":
        return cls(wire[1], decode_queue_config(wire[2]), wire[3], wire[4])


# -- users -----------------------------------------------------------------------------
# A user record crosses the seam as its stored bytes (storage/user_records.py).


@dataclass(frozen=True, slots=True)
class AddUser(Operation[None]):
    """A new user (USER_EXISTS if the name is taken), as its stored bytes; and the
    server's secret, stored with the first user (a server without users writes nothing)."""

    record: bytes
    secret: bytes
    code = OperationCode.ADD_USER
    grows = True
    subject = "new users are"


@dataclass(frozen=True, slots=True)
class RemoveUser(Operation[None]):
    name: str
    code = OperationCode.REMOVE_USER
    subject = "removing a user is"


@dataclass(frozen=True, slots=True)
class SetUserPermissions(Operation[None]):
    """Replace a user's permissions (`verb:pattern` strings); USER_NOT_FOUND."""

    name: str
    permissions: list[str]
    code = OperationCode.SET_USER_PERMISSIONS
    subject = "changing a user's permissions is"


OPERATIONS: tuple[type[Operation[Any]], ...] = (
    Barrier, AddQueue, RemoveQueue, SetQueueState, Enqueue, EnqueueMany, TakeWaiting,
    Complete, EndAttempt, RetryFailed, RemoveJob, PromoteDue, AdvanceNew, RecoverActive,
    SetQueueConfig, ClearQueueBatch, ObliterateBatch, DeleteEmptyQueue, PruneFinished,
    AppendLogs, AddUser, RemoveUser, SetUserPermissions, CancelJob, RetryFailedBatch,
    RemoveJobsBatch, CancelJobsBatch, *SCHEDULE_OPERATIONS, *OWNERSHIP_OPERATIONS,
)
# By code: the table both sides of the writer decode with (a mapping, since codes
# allocated to work not in this build leave gaps).
OPERATION_BY_CODE: dict[int, type[Operation[Any]]] = {
    cls.code: cls for cls in sorted(OPERATIONS, key=lambda cls: cls.code)}


def _fields_getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The fields of an operation, in order, as a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda op: (single(op),)
    return attrgetter(*names)


def _fast_init(cls: type[Operation[Any]], names: list[str]) -> Callable[..., None]:
    """An `__init__` that sets the slots through their descriptors: about half the cost of
    the one a frozen dataclass generates (which goes through `object.__setattr__` field by
    field), for what every write costs twice (built in the server, rebuilt in the writer
    process). Instances stay frozen: assigning a field still raises."""
    namespace: dict[str, Any] = {f"set_{name}": getattr(cls, name).__set__ for name in names}
    source = (f"def __init__(self, {', '.join(names)}):\n"
              + "".join(f"    set_{name}(self, {name})\n" for name in names))
    exec(source, namespace)  # the same technique as `dataclasses` itself
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _register() -> None:
    assert [cls.code for cls in OPERATION_BY_CODE.values()] == list(OperationCode), (
        "one class a code")
    for cls in OPERATIONS:
        names = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        cls._fields = staticmethod(_fields_getter(names))
        if names:
            cls.__init__ = _fast_init(cls, names)  # type: ignore[method-assign]


_register()

