"""Schedules: a cron expression in a time zone that enqueues a job at each occurrence.

The record (`ScheduleRecord`), its name rule, and the policy for occurrences missed while
the server was down. When occurrences fall is `model/cron.py`'s job; firing them is the
broker's (`broker/schedules.py`); docs/scheduling.md explains the whole.
"""

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from overhop.errors import ErrorCode, RequestError

# Letters, digits, `_ . -`, starting with a letter or digit: safe in a URL, a shell and a
# storage key; 128 characters like a queue name.
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class MissedPolicy(StrEnum):
    """What happens at start to occurrences that fell while the server was down."""

    SKIP = "skip"  # fire none of them: the next future occurrence is the next fire
    ONCE = "once"  # fire one job for all of them, stamped with the latest


@dataclass(frozen=True, slots=True)
class ScheduleJob:
    """The job each occurrence enqueues: ENQUEUE's fields (payload as encoded bytes)."""

    payload: bytes | None = None
    max_attempts: int | None = None
    retry_interval_ms: int | None = None
    lease_ms: int | None = None
    headers: dict[str, str] | None = None
    task: str | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule as stored.

    `last_fire_ms` is the occurrence (not the wall time) of the last job fired; an
    occurrence at or before it never fires again. `counted_from_ms` is when the schedule
    was added or last resumed: occurrences at or before it are not fired either, so a
    resume (or a restart after one) never back-fills the time it was paused.
    """

    name: str
    queue_name: str
    cron: str
    timezone: str
    job: ScheduleJob
    missed: MissedPolicy
    paused: bool
    last_fire_ms: int | None
    counted_from_ms: int
    created_at_ms: int

    @property
    def fired_up_to_ms(self) -> int:
        """Occurrences at or before this are done with (fired, or not to be fired)."""
        if self.last_fire_ms is None:
            return self.counted_from_ms
        return max(self.last_fire_ms, self.counted_from_ms)

    def with_paused(self, paused: bool, now_ms: int) -> "ScheduleRecord":
        if paused:
            return replace(self, paused=True)
        return replace(self, paused=False, counted_from_ms=now_ms)

    def with_fire(self, occurrence_ms: int) -> "ScheduleRecord":
        return replace(self, last_fire_ms=occurrence_ms)


def parse_schedule_name(value: Any, *, field: str = "name") -> str:
    if type(value) is not str or not value:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"'{field}' must be a non-empty string")
    if not SCHEDULE_NAME_PATTERN.fullmatch(value):
        raise RequestError(
            ErrorCode.INVALID_PAYLOAD,
            f"invalid schedule name {value!r}: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 128 characters")
    return value


def parse_missed_policy(value: Any) -> MissedPolicy:
    if value is None:
        return MissedPolicy.SKIP
    try:
        return MissedPolicy(value)
    except ValueError:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           "'missed' must be \"skip\" or \"once\"") from None
