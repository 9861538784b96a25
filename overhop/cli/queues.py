"""`overhop queues` and `overhop queue add|set|pause|resume|clear|rm|obliterate|stats`.

    overhop queues
    overhop queue add|set|pause|resume|clear|rm|obliterate|stats NAME ...
"""

from typing import Any

import click
from overhop_client import MessageType, QueueStats, ServerStatus

from overhop.cli.exits import ERROR_EXIT, USAGE_EXIT, fail
from overhop.cli.queue_settings import (
    config_rows,
    given_as_none,
    setting_options,
    settings_from_options,
)
from overhop.cli.render import duration, emit_json, fields, table
from overhop.cli.session import call, common


@click.command("queues")
@common
def queues_command(url: str, as_json: bool) -> None:
    """List the queues with their job counts (of every broker, in a cluster)."""
    replies = call(url, lambda client: client.request_everywhere(MessageType.STATUS))
    # In a cluster each broker's STATUS holds the queues it owns (a queue moving between
    # the requests may show twice: the first broker's view is kept).
    merged: dict[str, Any] = {}
    for reply in replies:
        for queue in reply.get("queues") or ():
            merged.setdefault(queue.get("name"), queue)
    raw = {"queues": list(merged.values())}
    if as_json:
        emit_json(raw)
        return
    status = ServerStatus.from_wire(raw)
    rows: list[list[Any]] = []
    for queue in sorted(status.queues, key=lambda q: q.info.name):
        counts = queue.counts
        numbers: list[int | None] = [None] * 7 if counts is None else [
            counts.new, counts.waiting, counts.delayed, counts.active, counts.completed,
            counts.failed, counts.cancelled]
        rows.append([queue.info.name, queue.info.state.value, *numbers,
                     queue.subscriptions, queue.info.config.concurrency_limit])
    click.echo(table(["NAME", "STATE", "NEW", "WAITING", "DELAYED", "ACTIVE", "COMPLETED",
                      "FAILED", "CANCELLED", "SUBSCRIPTIONS", "CONCURRENCY"], rows))


@click.group("queue")
def queue_group() -> None:
    """Create, change, pause, resume, clear, remove and inspect a queue."""


@queue_group.command("add")
@click.argument("name")
@setting_options(clearable=False)
@common
def queue_add(name: str, url: str, as_json: bool, **options: Any) -> None:
    """Create the queue NAME."""
    settings = settings_from_options(options, clearing=())
    qid = call(url, lambda client: client.add_queue(name, **settings))
    if as_json:
        emit_json({"q": name, "qid": qid})
    else:
        click.echo(f"queue {name} created (id {qid})")


@queue_group.command("set")
@click.argument("name")
@setting_options(clearable=True)
@common
@click.pass_context
def queue_set(ctx: click.Context, /, name: str, url: str, as_json: bool,
              **options: Any) -> None:
    """Change settings of the live queue NAME ('none' clears a setting)."""
    settings = settings_from_options(options, clearing=given_as_none(ctx))
    if not settings:
        fail("queue set: give at least one setting to change (see --help)", USAGE_EXIT)
    config = call(url, lambda client: client.set_queue(name, **settings))
    if as_json:
        emit_json({"q": name, "config": config.to_wire()})
    else:
        click.echo(f"queue {name} settings:")
        click.echo(fields(config_rows(config)))


def _queue_command(verb: str, method: str, done: str, reply: dict[str, Any],
                   summary: str) -> click.Command:
    """A command that calls one `AsyncClient` method with the queue name."""

    @click.command(verb, help=summary)
    @click.argument("name")
    @common
    def command(name: str, url: str, as_json: bool) -> None:
        call(url, lambda client: getattr(client, method)(name))
        if as_json:
            emit_json({"q": name, **reply})
        else:
            click.echo(f"queue {name} {done}")

    return command


queue_group.add_command(_queue_command("pause", "pause", "paused", {"state": "paused"},
                                       "Pause the queue NAME: no job of it is dispatched."))
queue_group.add_command(_queue_command("resume", "resume", "resumed", {"state": "active"},
                                       "Resume the queue NAME."))
queue_group.add_command(_queue_command("rm", "remove_queue", "removed", {"removed": True},
                                       "Remove the queue NAME (it must have no jobs)."))


@queue_group.command("clear")
@click.argument("name")
@common
def queue_clear(name: str, url: str, as_json: bool) -> None:
    """Remove the queue's jobs that have not started (new, waiting, delayed)."""
    removed = call(url, lambda client: client.clear_queue(name))
    if as_json:
        emit_json({"q": name, "removed": {"new": removed.new, "waiting": removed.waiting,
                                          "delayed": removed.delayed}})
    else:
        click.echo(f"removed {removed.total} jobs from {name} (new {removed.new}, "
                   f"waiting {removed.waiting}, delayed {removed.delayed})")


@queue_group.command("obliterate")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Even while jobs are out with workers (their outcomes are refused).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def queue_obliterate(name: str, force: bool, yes: bool, url: str, as_json: bool) -> None:
    """Remove the queue NAME and every job in it, whatever their status."""
    if not yes and not click.confirm(
            f"Obliterate queue {name} and every job in it?", default=False, err=True):
        fail(f"queue {name} left as it is", ERROR_EXIT)
    removed = call(url, lambda client: client.obliterate_queue(name, force=force))
    if as_json:
        emit_json({"q": name, "removed": removed})
    else:
        click.echo(f"queue {name} obliterated ({removed} jobs removed)")


@queue_group.command("stats")
@click.argument("name")
@common
def queue_stats(name: str, url: str, as_json: bool) -> None:
    """Job counts and the dispatch picture of the queue NAME."""
    raw = call(url, lambda client: client.request(MessageType.QSTATS, {"q": name}))
    if as_json:
        emit_json(raw)
        return
    stats = QueueStats.from_wire(raw)
    counts = stats.counts
    rate = None if stats.rate is None else (
        f"{stats.rate.started_in_window} of {stats.rate.limit} per "
        f"{duration(stats.rate.window)}")
    limit = "no limit" if stats.concurrency_limit is None else stats.concurrency_limit
    click.echo(fields([
        ("queue", stats.queue), ("state", stats.state.value),
        ("new", counts.new), ("waiting", counts.waiting), ("delayed", counts.delayed),
        ("active", counts.active), ("completed", counts.completed), ("failed", counts.failed),
        ("cancelled", counts.cancelled),
        ("in flight", f"{stats.in_flight} (limit: {limit})"), ("rate", rate),
        ("subscriptions", stats.subscriptions), ("credits", stats.credits),
        ("oldest waiting", stats.oldest_waiting_age),
    ]))
