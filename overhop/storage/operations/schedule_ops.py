"""The schedule operations of the writer seam (codes 27 to 30); `catalogue.py` holds the
rest and lists these in its table. A schedule record crosses the seam as its stored bytes
(`storage/schedule_records.py`), the job a fire enqueues as a job record's bytes."""

from dataclasses import dataclass
from typing import Any

from overhop.model.jobs import JobRecord
from overhop.model.schedules import ScheduleRecord
from overhop.storage.operations.base import Operation, OperationCode
from overhop.storage.records import decode_job, encode_job
from overhop.storage.schedule_records import decode_schedule, encode_schedule


def _schedule(wire: Any) -> ScheduleRecord:
    return decode_schedule(wire)


@dataclass(frozen=True, slots=True)
class PutSchedule(Operation[ScheduleRecord]):
    """Add a schedule, or replace the one of that name (keeping its last fire and
    creation time); the record as stored."""

    record: ScheduleRecord
    code = OperationCode.PUT_SCHEDULE
    grows = True
    subject = "new schedules are"
    decode_result = staticmethod(_schedule)

    def to_wire(self) -> list[Any]:
        return [self.code, encode_schedule(self.record)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "PutSchedule":
        return cls(decode_schedule(wire[1]))


@dataclass(frozen=True, slots=True)
class RemoveSchedule(Operation[None]):
    name: str
    code = OperationCode.REMOVE_SCHEDULE
    subject = "removing a schedule is"


@dataclass(frozen=True, slots=True)
class SetSchedulePaused(Operation[ScheduleRecord]):
    """Pause or resume; resuming counts occurrences from `now_ms` on (no back-fill)."""

    name: str
    paused: bool
    now_ms: int
    code = OperationCode.SET_SCHEDULE_PAUSED
    subject = "pausing or resuming a schedule is"
    decode_result = staticmethod(_schedule)


@dataclass(frozen=True, slots=True)
class FireSchedule(Operation[str | None]):
    """Enqueue `job` for the schedule's occurrence `occurrence_ms` and store that
    occurrence as its last fire, in one transaction: the job id; None (nothing written)
    when the schedule is gone or paused, or that occurrence is fired already."""

    name: str
    occurrence_ms: int
    job: JobRecord
    code = OperationCode.FIRE_SCHEDULE
    grows = True
    subject = "scheduled jobs are"

    def to_wire(self) -> list[Any]:
        return [self.code, self.name, self.occurrence_ms, encode_job(self.job)]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "FireSchedule":
        return cls(wire[1], wire[2], decode_job(wire[3]))


SCHEDULE_OPERATIONS: tuple[type[Operation[Any]], ...] = (
    PutSchedule, RemoveSchedule, SetSchedulePaused, FireSchedule)
