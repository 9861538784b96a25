"""`overhop schedule add|ls|rm|pause|resume`: the server's cron schedules.

    overhop schedule add NAME QUEUE CRON [--tz ZONE] [--payload JSON|-|@FILE]
                         [--missed skip|once] [--max-attempts N] [--task NAME]
                         [--priority N] ...
    overhop schedule ls
    overhop schedule rm|pause|resume NAME
"""

from datetime import datetime, timedelta
from typing import Any

import click
from overhop_client import AsyncClient, MessageType, ScheduleInfo
from overhop_client.times import format_time

from overhop.cli.enqueue import (
    checked_priority,
    checked_task,
    parse_payload,
    priority_option,
    read_payload_text,
    task_option,
)
from overhop.cli.exits import CliFailure, fail
from overhop.cli.render import cell, emit_json, fields, table
from overhop.cli.session import call, common


@click.group("schedule")
def schedule_group() -> None:
    """Add, list, pause, resume and remove cron schedules (see docs/scheduling.md)."""


def _rows(schedule: ScheduleInfo) -> list[tuple[str, Any]]:
    return [("name", schedule.name), ("queue", schedule.queue), ("cron", schedule.cron),
            ("tz", schedule.timezone), ("missed", schedule.missed.value),
            ("paused", schedule.paused), ("next run", schedule.next_run_at),
            ("last run", schedule.last_run_at)]


def _echo(schedule: ScheduleInfo, raw: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(raw)
    else:
        click.echo(fields(_rows(schedule)))


@schedule_group.command("add")
@click.argument("name")
@click.argument("queue")
@click.argument("cron")
@click.option("--tz", default=None, metavar="ZONE",
              help="IANA time zone of the expression (default UTC), e.g. Europe/Berlin.")
@click.option("--payload", "payload_json", default=None, metavar="JSON | - | @FILE",
              help="The jobs' payload as JSON (`-`: standard input; `@FILE`: a file).")
@click.option("--missed", type=click.Choice(["skip", "once"]), default="skip",
              show_default=True,
              help="Occurrences missed while the server was down: none fire, or one job.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=None)
@click.option("--retry-interval-ms", type=click.IntRange(1, 86_400_000), default=None)
@click.option("--lease-ms", type=click.IntRange(100, 86_400_000), default=None)
@task_option("The jobs' task: which of the queue's handlers runs them.")
@priority_option("The jobs' priority: higher runs first")
@common
def schedule_add(name: str, queue: str, cron: str, tz: str | None, payload_json: str | None,
                 missed: str, max_attempts: int | None, retry_interval_ms: int | None,
                 lease_ms: int | None, task: str | None, priority: int | None, url: str,
                 as_json: bool) -> None:
    """Enqueue a job into QUEUE at each occurrence of CRON (five fields, or six with
    seconds first; quote it); replaces a schedule of the same NAME."""
    try:
        payload = parse_payload(read_payload_text(payload_json))
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    task = checked_task(task)
    checked_priority(priority)

    def ms(value: int | None) -> timedelta | None:
        return None if value is None else timedelta(milliseconds=value)

    schedule = call(url, lambda client: client.add_schedule(
        name, queue, cron, timezone=tz, missed=missed, payload=payload,
        max_attempts=max_attempts, retry_interval=ms(retry_interval_ms),
        lease=ms(lease_ms), task=task, priority=priority))
    if as_json:
        emit_json({"name": schedule.name, "q": schedule.queue,
                   "next_run_at": cell_or_none(schedule.next_run_at)})
    else:
        click.echo(f"schedule {name} added; next run {cell(schedule.next_run_at)}")


def cell_or_none(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


@schedule_group.command("ls")
@common
def schedule_ls(url: str, as_json: bool) -> None:
    """List the schedules with their next and last runs."""
    raw = call(url, _all_rows)
    if as_json:
        emit_json({"schedules": raw})
        return
    rows = [[s.name, s.queue, s.cron, s.timezone, s.missed.value,
             "paused" if s.paused else "active", s.next_run_at, s.last_run_at]
            for s in (ScheduleInfo.from_wire(row) for row in raw)]
    click.echo(table(["NAME", "QUEUE", "CRON", "TZ", "MISSED", "STATE", "NEXT RUN",
                      "LAST RUN"], rows))


async def _all_rows(client: AsyncClient) -> list[dict[str, Any]]:
    """Every LSSCHEDULE row as the server sent it, page after page."""
    rows: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        reply = await client.request(MessageType.LSSCHEDULE,
                                     {} if after is None else {"after": after})
        rows.extend(reply.get("schedules") or ())
        after = reply.get("next_after")
        if not after:
            return rows


@schedule_group.command("rm")
@click.argument("name")
@common
def schedule_rm(name: str, url: str, as_json: bool) -> None:
    """Remove the schedule NAME (the jobs it enqueued stay)."""
    call(url, lambda client: client.remove_schedule(name))
    if as_json:
        emit_json({"name": name, "removed": True})
    else:
        click.echo(f"schedule {name} removed")


@schedule_group.command("pause")
@click.argument("name")
@common
def schedule_pause(name: str, url: str, as_json: bool) -> None:
    """Stop the schedule NAME firing until it is resumed."""
    raw = call(url, lambda client: client.request(MessageType.PAUSESCHEDULE, {"name": name}))
    _echo(ScheduleInfo.from_wire(raw), raw, as_json)


@schedule_group.command("resume")
@click.argument("name")
@common
def schedule_resume(name: str, url: str, as_json: bool) -> None:
    """Let the schedule NAME fire again (what it missed while paused is not run)."""
    raw = call(url, lambda client: client.request(MessageType.RESUMESCHEDULE, {"name": name}))
    _echo(ScheduleInfo.from_wire(raw), raw, as_json)
