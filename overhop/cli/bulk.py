"""`overhop bulk QUEUE --status S --action A`: act on every job of a queue in one status
(the server works in bounded batches), and `overhop cancel JID`, the short form of
`overhop job cancel JID`.

    overhop bulk QUEUE --status failed --action retry
    overhop bulk QUEUE --status completed|failed|cancelled --action remove
    overhop bulk QUEUE --status new|waiting|delayed --action cancel [--reason TEXT]
"""

import click
from overhop_client import JobStatus

from overhop.cli.exits import USAGE_EXIT, fail
from overhop.cli.jobs import job_cancel
from overhop.cli.render import emit_json
from overhop.cli.session import call, common

# Which statuses each action takes (the server's rule, checked here for a one-line usage
# error before connecting).
ACTIONS = {
    "retry": (JobStatus.FAILED,),
    "remove": (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED),
    "cancel": (JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED),
}
_DONE = {"retry": "retried", "remove": "removed", "cancel": "cancelled"}


@click.command("bulk")
@click.argument("queue")
@click.option("--status", "status", required=True,
              type=click.Choice([status.value for status in JobStatus]))
@click.option("--action", "action", required=True, type=click.Choice(list(ACTIONS)))
@click.option("--reason", metavar="TEXT", default=None, help="Why (--action cancel).")
@common
def bulk_command(queue: str, status: str, action: str, reason: str | None, url: str,
                 as_json: bool) -> None:
    """Retry, remove or cancel every job of QUEUE in one status that exists now."""
    if JobStatus(status) not in ACTIONS[action]:
        takes = ", ".join(s.value for s in ACTIONS[action])
        fail(f"--action {action} takes --status {takes}, not {status}", USAGE_EXIT)
    if reason is not None and action != "cancel":
        fail("--reason goes with --action cancel", USAGE_EXIT)
    count = call(url, lambda client: client.bulk(queue, status, action, reason))
    if as_json:
        emit_json({"q": queue, "status": status, "action": action, "count": count})
    else:
        click.echo(f"{count} {status} jobs of {queue} {_DONE[action]}")


cancel_command = click.Command("cancel", callback=job_cancel.callback, params=job_cancel.params,
                               help=job_cancel.help)
