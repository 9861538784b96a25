"""Schedules: cron expressions the server keeps, each enqueuing a job at every occurrence.

`ScheduleInfo` is a schedule as the server lists it (LSSCHEDULE, and the replies of
ADDSCHEDULE, PAUSESCHEDULE and RESUMESCHEDULE); `schedule_fields` builds ADDSCHEDULE's
payload. The `AsyncClient` methods are `add_schedule`, `schedules`, `remove_schedule`,
`pause_schedule` and `resume_schedule`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from overhop_client.codec import check_value
from overhop_client.times import parse_time, to_ms


class MissedPolicy(StrEnum):
    """What the server does at start with occurrences that fell while it was down."""

    SKIP = "skip"  # none of them fire
    ONCE = "once"  # one job for all of them


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    name: str
    queue: str
    cron: str
    timezone: str
    missed: MissedPolicy
    paused: bool
    next_run_at: datetime | None  # None while paused
    last_run_at: datetime | None  # the occurrence last fired, not when it ran
    created_at: datetime | None
    payload: Any
    overrides: dict[str, int]
    headers: dict[str, str]
    task: str | None = None
    """The task its jobs are enqueued with (which handler runs them), None when none."""
    priority: int = 5
    """The priority its jobs are enqueued with (1 to 9)."""

    @classmethod
    def from_wire(cls, p: dict[str, Any]) -> "ScheduleInfo":
        return cls(
            name=p["name"],
            queue=p["q"],
            cron=p["cron"],
            timezone=p.get("tz", "UTC"),
            missed=MissedPolicy(p.get("missed", "skip")),
            paused=bool(p.get("paused", False)),
            next_run_at=parse_time(p.get("next_run_at")),
            last_run_at=parse_time(p.get("last_run_at")),
            created_at=parse_time(p.get("created_at")),
            payload=p.get("job_payload"),
            overrides=dict(p.get("overrides") or {}),
            headers=dict(p.get("headers") or {}),
            task=p.get("task"),
            priority=p.get("priority", 5),
        )


def schedule_fields(name: str, queue: str, cron: str, *, timezone: str | None,
                    missed: MissedPolicy | str, payload: object, max_attempts: int | None,
                    retry_interval: timedelta | None, lease: timedelta | None,
                    headers: dict[str, str] | None, task: str | None = None,
                    priority: int | None = None) -> dict[str, object]:
    """ADDSCHEDULE's payload."""
    p: dict[str, object] = {"name": name, "q": queue, "cron": cron,
                            "missed": MissedPolicy(missed).value}
    if timezone is not None:
        p["tz"] = timezone
    if payload is not None:
        check_value(payload)
        p["job_payload"] = payload
    if max_attempts is not None:
        p["max_attempts"] = max_attempts
    if retry_interval is not None:
        p["retry_interval_ms"] = to_ms(retry_interval)
    if lease is not None:
        p["lease_ms"] = to_ms(lease)
    if headers:
        p["headers"] = dict(headers)
    if task is not None:
        p["task"] = task
    if priority is not None:
        p["priority"] = priority
    return p
