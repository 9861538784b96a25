"""What every operation is (`Operation`, its code in `OperationCode`) and the result types
that are not records (`Taken`, `Moved`, `Removed`); the operations are in `catalogue.py`."""

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Generic, TypeVar

from overhop.model.jobs import JobRecord, JobStatus

T = TypeVar("T")


class OperationCode(IntEnum):
    """Every operation's number on the wire. Never renumber: append."""

    BARRIER = 0
    ADD_QUEUE = 1
    REMOVE_QUEUE = 2
    SET_QUEUE_STATE = 3
    ENQUEUE = 4
    ENQUEUE_MANY = 5
    TAKE_WAITING = 6
    COMPLETE = 7
    END_ATTEMPT = 8
    RETRY_FAILED = 9
    REMOVE_JOB = 10
    PROMOTE_DUE = 11
    ADVANCE_NEW = 12
    RECOVER_ACTIVE = 13
    SET_QUEUE_CONFIG = 14
    CLEAR_QUEUE_BATCH = 15
    OBLITERATE_BATCH = 16
    DELETE_EMPTY_QUEUE = 17
    PRUNE_FINISHED = 18
    APPEND_LOGS = 19
    ADD_USER = 20
    REMOVE_USER = 21
    SET_USER_PERMISSIONS = 22
    CANCEL_JOB = 23
    RETRY_FAILED_BATCH = 24
    REMOVE_JOBS_BATCH = 25
    CANCEL_JOBS_BATCH = 26
    PUT_SCHEDULE = 27
    REMOVE_SCHEDULE = 28
    SET_SCHEDULE_PAUSED = 29
    FIRE_SCHEDULE = 30
    CLAIM_QUEUE = 31
    RELEASE_QUEUE = 32


class Operation(Generic[T]):
    """One write; `T` is its result. Subclasses are frozen slotted dataclasses."""

    __slots__ = ()
    code: ClassVar[OperationCode]
    grows: ClassVar[bool] = False
    # What a refusal for lack of space names, e.g. "new jobs are refused".
    subject: ClassVar[str]
    _fields: ClassVar[Any]  # an attrgetter of the fields in order, set by `_register`

    def to_wire(self) -> list[Any]:
        """`[code, field, ...]`; records as their stored bytes, enums as numbers."""
        return [self.code, *self._fields(self)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "Operation[Any]":
        return cls(*wire[1:])

    @staticmethod
    def decode_result(wire: Any) -> Any:
        """The result type from its wire form (as the apply function returned it); this
        default is for results that travel as they are (strings, lists of them, None)."""
        return wire


@dataclass(frozen=True, slots=True)
class Taken:
    """What a dispatch took: the jobs now active (in order), the waiting jobs left that a
    dispatch could take, and those held back because their group is at its limit."""

    jobs: list[JobRecord]
    waiting_left: int
    blocked: int = 0


@dataclass(frozen=True, slots=True)
class Moved:
    """How many jobs a maintenance step moved, whether more remain, the next due time."""

    moved: int
    more: bool
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class Removed:
    """Jobs one bounded removal step deleted, and whether any of its kind remain."""

    removed: int
    more: bool
    counts: dict[JobStatus, int]
