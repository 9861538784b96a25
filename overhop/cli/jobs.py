"""`overhop job JID`, `overhop job retry|rm|cancel JID` and `overhop jobs`: one job, or
one page of a queue's jobs in one status.

    overhop job JID | overhop job retry JID | overhop job rm JID
    overhop job cancel JID [--reason TEXT]   (also `overhop cancel JID`)
    overhop jobs QUEUE --status STATUS [--page N | --after JID] [--page-size N] [--task NAME]
"""

import uuid
from typing import Any

import click
from overhop_client import AsyncClient, Job, JobPage, JobStatus, MessageType, OverhopError
from overhop_client.times import format_time

from overhop.cli.enqueue import checked_task, task_option
from overhop.cli.exits import ERROR_EXIT, USAGE_EXIT, CliFailure, fail
from overhop.cli.render import cell, emit_json, fields, table
from overhop.cli.session import call, common


class JobGroup(click.Group):
    """`overhop job JID` shows the job; `overhop job retry|rm|cancel JID` act on it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        plain = [arg for arg in args if arg not in ("-h", "--help")]
        if plain and not any(arg in self.commands for arg in args):
            args = ["show", *args]
        return super().parse_args(ctx, args)


def _blocked_text(job: Job) -> str | None:
    blocked = job.blocked_by
    if blocked is None:
        return None
    text = str(blocked.reason)
    if blocked.until is not None:
        text += f" until {format_time(blocked.until)}"
    if blocked.details:
        text += " (" + ", ".join(f"{k} {cell(v)}" for k, v in blocked.details.items()) + ")"
    return text


def render_job(job: Job) -> str:
    """The job's fields, its history, its log and why it waits, as text."""
    delivery = job.delivery
    own = [name for name, value in (("max_attempts", job.overrides.max_attempts),
                                   ("retry_interval", job.overrides.retry_interval),
                                   ("lease", job.overrides.lease)) if value is not None]
    pairs: list[tuple[str, Any]] = [
        ("jid", job.jid), ("queue", job.queue), ("task", job.task), ("priority", job.priority),
        ("group", job.group),
        ("unique key", None if job.unique_key is None else
         f"{job.unique_key} (held until "
         f"{job.unique_expires_at if job.unique_until == 'ttl' else job.unique_until})"),
        ("status", job.status.value),
        ("blocked by", _blocked_text(job)),
        ("attempts", f"{job.attempts_so_far} of {job.max_attempts}"),
        ("retry interval", job.retry_interval), ("lease", job.lease),
        ("backoff", None if job.backoff is None else job.backoff.kind.value),
        ("own settings", ", ".join(own) or None),
        ("created", job.created_at), ("starts at", job.execution_start_at),
        ("finished", job.finished_at), ("payload", job.payload), ("result", job.result),
        ("cancel reason", job.cancel_reason),
    ]
    if delivery is not None:
        pairs += [("delivery", delivery.delivery_id), ("worker", delivery.worker_id),
                  ("lease expires", delivery.lease_expires_at),
                  ("progress", delivery.progress)]
    parts = [fields(pairs), ""]
    if job.history:
        parts += ["history:", table(
            ["ATTEMPT", "OUTCOME", "COUNTED", "WORKER", "STARTED", "ENDED", "ERROR"],
            [[a.attempt, a.outcome, a.counted, a.worker_id, a.started_at, a.ended_at,
              a.error_message] for a in job.history]), ""]
    else:
        parts += ["history: none", ""]
    if job.logs:
        dropped = f" ({job.logs_dropped} older lines dropped)" if job.logs_dropped else ""
        parts += [f"logs{dropped}:", *(f"{cell(entry.at)}  {entry.line}" for entry in job.logs)]
    else:
        parts += ["logs: none"]
    return "\n".join(parts)


@click.group("job", cls=JobGroup)
def job_group() -> None:
    """Show a job (`overhop job JID`), retry a failed one, cancel or remove one."""


@job_group.command("show")
@click.argument("jid")
@common
def job_show(jid: str, url: str, as_json: bool) -> None:
    """Show the job JID with its history, logs and what holds it back."""
    raw = call(url, lambda client: client.request(MessageType.JOB, {"jid": jid}))
    if not raw:
        fail(f"no job {jid}", ERROR_EXIT)
    if as_json:
        emit_json(raw)
    else:
        click.echo(render_job(Job.from_wire(raw)))


@job_group.command("retry")
@click.argument("jid")
@common
def job_retry(jid: str, url: str, as_json: bool) -> None:
    """Give the failed job JID a fresh set of attempts."""
    status = call(url, lambda client: client.retry_job(jid))
    if as_json:
        emit_json({"jid": jid, "status": status.value})
    else:
        click.echo(f"job {jid} is {status.value} again")


@job_group.command("rm")
@click.argument("jid")
@common
def job_rm(jid: str, url: str, as_json: bool) -> None:
    """Remove the job JID (any status but active)."""
    call(url, lambda client: client.remove_job(jid))
    if as_json:
        emit_json({"jid": jid, "removed": True})
    else:
        click.echo(f"job {jid} removed")


@job_group.command("cancel")
@click.argument("jid")
@click.option("--reason", metavar="TEXT", default=None,
              help="Why (stored with the job, told to its worker and watchers).")
@common
def job_cancel(jid: str, reason: str | None, url: str, as_json: bool) -> None:
    """Cancel the job JID: at once if it has not started; if it runs, its worker is told
    to stop and it ends cancelled when that attempt ends. It never runs again."""
    status = call(url, lambda client: client.cancel(jid, reason))
    if as_json:
        emit_json({"jid": jid, "status": status.value})
    elif status == JobStatus.CANCELLED:
        click.echo(f"job {jid} cancelled")
    else:
        click.echo(f"job {jid} is active: its worker was told to stop; it ends cancelled "
                   "when that attempt ends")


# LSJOB's fields as the CLI's flags, for the server's refusals of a page.
_FLAGS = (("page on with 'after' (the previous page's 'next_after')",
           "page on with --after JID (the 'more: --after JID' line of the previous page)"),
          ("'page_size'", "--page-size"), ("'after'", "--after"), ("page ", "--page "))


def _in_flags(message: str) -> str:
    """The server's words about LSJOB's fields, naming the CLI's flags instead."""
    for field, flag in _FLAGS:
        message = message.replace(field, flag, 1)
    return message


def _is_job_id_of(text: str, queue: str) -> bool:
    queue_part, _, uuid_part = text.rpartition(":")
    try:
        uuid.UUID(uuid_part)
    except ValueError:
        return False
    return queue_part == queue


@click.command("jobs")
@click.argument("queue")
@click.option("--status", "status", required=True,
              type=click.Choice([status.value for status in JobStatus]))
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1), default=None,
              help="Jobs per page (default: the server's).")
@click.option("--after", metavar="JID", default=None,
              help="Start after this job (the 'next' a page printed); any depth.")
@task_option("Only jobs of this task (page on with --after; a page may be short).")
@common
def jobs_command(queue: str, status: str, page: int, page_size: int | None,
                 after: str | None, task: str | None, url: str, as_json: bool) -> None:
    """List one page of QUEUE's jobs in one status, oldest first."""
    request: dict[str, Any] = {"q": queue, "status": status, "page": page}
    if page_size is not None:
        request["page_size"] = page_size
    if checked_task(task) is not None:
        if page != 1:
            fail("give --task with --after, not --page: a filtered page reads a bounded "
                 "number of jobs", USAGE_EXIT)
        request["task"] = task
    if after is not None:
        if page != 1:
            fail("give --after or --page, not both", USAGE_EXIT)
        if not _is_job_id_of(after, queue):
            fail(f"--after: {after!r} is not a job id of queue {queue!r}", USAGE_EXIT)
        request["after"] = after

    async def list_page(client: AsyncClient) -> dict[str, Any]:
        try:
            return await client.request(MessageType.LSJOB, request)
        except OverhopError as exc:
            if exc.code == "INVALID_PAYLOAD":
                raise CliFailure(_in_flags(exc.message), USAGE_EXIT) from None
            raise

    raw = call(url, list_page)
    if as_json:
        emit_json(raw)
        return
    listing = JobPage.from_wire(raw)
    click.echo(table(["JID", "STATUS", "PRI", "ATTEMPTS", "CREATED", "STARTS AT",
                      "BLOCKED BY", "TASK"],
                     [[job.jid, job.status.value, job.priority,
                       f"{job.attempts_so_far}/{job.max_attempts}",
                       job.created_at, job.execution_start_at, _blocked_text(job), job.task]
                      for job in listing]))
    note = " (truncated: ask with a smaller --page-size)" if listing.truncated else ""
    of_task = "" if listing.task is None else f", task {listing.task}"
    click.echo(f"page {listing.page}, {len(listing)} jobs, page size "
               f"{listing.page_size}{of_task}{note}")
    if listing.next_after is not None:
        click.echo(f"more: --after {listing.next_after}")
