"""`overhop enqueue`: add one job, its payload given as JSON.

    overhop enqueue QUEUE [PAYLOAD_JSON | - | @FILE] [--delay-ms MS | --at RFC3339]
                    [--task NAME] [--priority 1..9] [--group G]
                    [--unique-key K [--unique-for start|finish|MS]] ...

The payload is the argument itself, or, for `-`, standard input, or, for `@FILE`, that
file's text. A payload that is not JSON or cannot be sent, a file that cannot be read, or a
bad `--at` time or task name, is exit 2.
"""

import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import click
from overhop_client.codec import check_value
from overhop_client.tasks import check_task_name

from overhop.cli.exits import USAGE_EXIT, CliFailure, fail
from overhop.cli.render import emit_json
from overhop.cli.session import call, common
from overhop.model.jobs import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY


def read_payload_text(argument: str | None) -> str | None:
    """The payload's JSON text: the argument, standard input for `-`, a file for `@FILE`."""
    if argument == "-":
        return sys.stdin.read()
    if argument is not None and argument.startswith("@"):
        try:
            with open(argument[1:], encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliFailure(f"cannot read the payload file {argument[1:]!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}", USAGE_EXIT) from None
    return argument


def parse_payload(text: str | None) -> Any:
    """The job payload from its JSON text; CliFailure (exit 2) when it is not usable."""
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliFailure(f"the payload is not valid JSON: {exc}", USAGE_EXIT) from None
    try:
        check_value(payload)
    except (TypeError, ValueError) as exc:
        raise CliFailure(f"the payload cannot be sent: {exc}", USAGE_EXIT) from None
    return payload


F = TypeVar("F", bound=Callable[..., Any])


def task_option(help_text: str) -> Callable[[F], F]:
    """The `--task NAME` option (enqueue, jobs); check its value with `checked_task`."""
    return click.option("--task", metavar="NAME", default=None, help=help_text)


def checked_task(task: str | None) -> str | None:
    """--task's value, or one line saying the naming rule and exit 2."""
    try:
        return None if task is None else check_task_name(task)
    except ValueError as exc:
        fail(f"--task: {exc}", USAGE_EXIT)


def priority_option(help_text: str) -> Callable[[F], F]:
    """The `--priority N` option (enqueue, schedule add); check it with `checked_priority`."""
    return click.option("--priority", type=int, default=None, metavar="N",
                        help=f"{help_text} ({MIN_PRIORITY} to {MAX_PRIORITY}; "
                             f"{DEFAULT_PRIORITY} when not given).")


def checked_priority(priority: int | None) -> int | None:
    """--priority's value, or one line saying the range and exit 2."""
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        fail(f"--priority must be {MIN_PRIORITY} to {MAX_PRIORITY}, not {priority}",
             USAGE_EXIT)
    return priority


def parse_when(text: str) -> datetime:
    """An RFC 3339 time with an offset or Z; CliFailure (exit 2) otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliFailure(f"--at: {text!r} is not an RFC 3339 time", USAGE_EXIT) from None
    if when.tzinfo is None:
        raise CliFailure(f"--at: {text!r} needs an offset or Z", USAGE_EXIT)
    return when


@click.command("enqueue")
@click.argument("queue")
@click.argument("payload_json", required=False, metavar="[PAYLOAD_JSON | - | @FILE]")
@click.option("--delay-ms", type=click.IntRange(0), default=None,
              help="Start it this long after it is stored.")
@click.option("--at", "at", default=None, metavar="RFC3339", help="Start it at this time.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=None)
@click.option("--retry-interval-ms", type=click.IntRange(1, 86_400_000), default=None)
@click.option("--lease-ms", type=click.IntRange(100, 86_400_000), default=None)
@task_option("The job's task: which of the queue's handlers runs it.")
@priority_option("The job's priority: higher runs first")
@click.option("--group", default=None, metavar="G",
              help="The job's group (a tenant): the queue's group limit and turns apply.")
@click.option("--unique-key", default=None, metavar="K",
              help="Add nothing while another job of the queue holds this key.")
@click.option("--unique-for", default=None, metavar="start|finish|MS",
              help="How long the job holds its key: until it starts, until it finishes "
                   "(the default), or MS milliseconds.")
@common
def enqueue_command(queue: str, payload_json: str | None, delay_ms: int | None,
                    at: str | None, max_attempts: int | None, retry_interval_ms: int | None,
                    lease_ms: int | None, task: str | None, priority: int | None,
                    group: str | None, unique_key: str | None, unique_for: str | None,
                    url: str, as_json: bool) -> None:
    """Add a job to QUEUE; PAYLOAD_JSON is the job's payload as JSON (`-`: read it from
    standard input; `@FILE`: from FILE). With --unique-key, prints the id of the job
    holding the key (and, with --json, whether this one was a duplicate)."""
    try:
        payload = parse_payload(read_payload_text(payload_json))
        run_at = None if at is None else parse_when(at)
        held_for = parse_unique_for(unique_key, unique_for)
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    task = checked_task(task)
    checked_priority(priority)
    if run_at is not None and delay_ms is not None:
        fail("give --delay-ms or --at, not both", USAGE_EXIT)
    added = call(url, lambda client: client.enqueue_unique(
        queue, payload, run_at=run_at,
        delay=None if delay_ms is None else timedelta(milliseconds=delay_ms),
        max_attempts=max_attempts,
        retry_interval=None if retry_interval_ms is None
        else timedelta(milliseconds=retry_interval_ms),
        lease=None if lease_ms is None else timedelta(milliseconds=lease_ms), task=task,
        priority=priority, group=group, unique_key=unique_key, unique_for=held_for))
    if as_json:
        emit_json({"jid": added.jid} if unique_key is None
                  else {"jid": added.jid, "duplicate": added.duplicate})
    else:
        click.echo(added.jid)


def parse_unique_for(unique_key: str | None, text: str | None
                     ) -> Literal["start", "finish"] | timedelta | None:
    """--unique-for's value; CliFailure (exit 2) when it is not start, finish or a number
    of milliseconds, or comes without --unique-key."""
    if text is None:
        return None
    if unique_key is None:
        raise CliFailure("--unique-for needs --unique-key", USAGE_EXIT)
    if text == "start":
        return "start"
    if text == "finish":
        return "finish"
    if not text.isdigit() or int(text) < 1:
        raise CliFailure(f"--unique-for: {text!r} is not start, finish or milliseconds",
                         USAGE_EXIT)
    return timedelta(milliseconds=int(text))
