"""Schedules: cron expressions the server keeps, each enqueuing a job at every occurrence.

`ScheduleInfo` is a schedule as the server lists it (LSSCHEDULE, and the replies of
ADDSCHEDULE, PAUSESCHEDULE and RESUMESCHEDULE); `schedule_fields` builds ADDSCHEDULE's
payload. The `AsyncClient` methods are `add_schedule`, `schedules`, `remove_schedule`,
`pause_schedule` and `resume_schedule`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from overhop_client.times import parse_time


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
                    missed: MissedPolicy | str, job: Mapping[str, object]
                    ) -> dict[str, object]:
    """ADDSCHEDULE's payload: the schedule's own fields and `job`, its jobs' ENQUEUE
    fields (as `AsyncClient.enqueue` builds them)."""
    p: dict[str, object] = {**job, "name": name, "q": queue, "cron": cron,
                            "missed": MissedPolicy(missed).value}
    if timezone is not None:
        p["tz"] = timezone
    return p
