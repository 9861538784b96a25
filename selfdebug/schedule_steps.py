"""The self-debug walk's schedule steps: ADDSCHEDULE, LSSCHEDULE, PAUSESCHEDULE,
RESUMESCHEDULE and RMSCHEDULE of one schedule on the walk's queue.

Its expression fires once a year (midnight of January 1st, in Berlin), so it never fires
during the walk and the queue's job counts stay what the later steps expect.
"""

from typing import Any

from overhop_client.messages import MessageType

from selfdebug import checks
from selfdebug.steps import State, Step

SCHEDULE = "self-debug-yearly"
CRON = "0 0 1 1 *"
TIMEZONE = "Europe/Berlin"


def schedule_steps(queue: str) -> list[Step]:
    ok = MessageType.OK

    def schedule(paused: bool) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            checks.equal(p.get("name"), SCHEDULE, "name")
            checks.equal(p.get("q"), queue, "q")
            checks.equal(p.get("cron"), CRON, "cron")
            checks.equal(p.get("tz"), TIMEZONE, "tz")
            checks.equal(p.get("paused"), paused, "paused")
            checks.equal(p.get("last_run_at"), None, "last_run_at")
            checks.time(p, "created_at")
            if paused:
                checks.equal(p.get("next_run_at"), None, "next_run_at")
            else:
                next_run = checks.time(p, "next_run_at")
                checks.equal((next_run.month, next_run.day), (12, 31), "next_run_at day")
        return check

    def listed(state: State, p: dict[str, Any]) -> None:
        rows = checks.field(p, "schedules")
        checks.equal([row.get("name") for row in rows], [SCHEDULE], "schedules")
        checks.equal(p.get("next_after"), None, "next_after")
        schedule(False)(state, rows[0])

    def named(state: State) -> dict[str, Any]:
        return {"name": SCHEDULE}

    return [
        Step("ADDSCHEDULE", MessageType.ADDSCHEDULE, ok,
             "45 ADDSCHEDULE: OK schedule {name, q, cron, tz, next_run_at, ...}",
             lambda state: {"name": SCHEDULE, "q": queue, "cron": CRON, "tz": TIMEZONE,
                            "job_payload": {"yearly": True}},
             schedule(False)),
        Step("LSSCHEDULE", MessageType.LSSCHEDULE, ok,
             "46 LSSCHEDULE: OK {schedules, next_after}", check=listed),
        Step("PAUSESCHEDULE", MessageType.PAUSESCHEDULE, ok,
             "48 PAUSESCHEDULE: OK schedule, paused, next_run_at nil", named, schedule(True)),
        Step("RESUMESCHEDULE", MessageType.RESUMESCHEDULE, ok,
             "49 RESUMESCHEDULE: OK schedule with its next_run_at", named, schedule(False)),
        Step("RMSCHEDULE", MessageType.RMSCHEDULE, ok, "47 RMSCHEDULE: OK {}", named,
             lambda state, p: checks.empty(p)),
    ]
