"""`overhop worker quiet|stop|concurrency NAME`: an admin's commands to running workers.

NAME is the name a worker registered with (`Worker(name=...)`), or a worker id from
`overhop status`; every worker of that name is told (WORKERCTL). They need `admin` on `*`.
No worker of that name is `overhop: WORKER_NOT_FOUND: ...` and exit 1.
"""

from datetime import timedelta

import click
from overhop_client import AsyncClient

from overhop.cli.render import emit_json
from overhop.cli.session import call, common

# Within `overhop`'s own reply budget (60 s per call) and the server's bound of a day.
MAX_GRACE_S = 86_400.0


def _told(as_json: bool, what: str, workers: int) -> None:
    if as_json:
        emit_json({"workers": workers})
    else:
        click.echo(f"{what}: {workers} worker{'' if workers == 1 else 's'}")


@click.command("quiet")
@click.argument("name")
@common
def quiet_command(name: str, url: str, as_json: bool) -> None:
    """Make worker NAME take no new jobs and finish its running ones (it stays connected)."""
    async def quiet(client: AsyncClient) -> int:
        return await client.quiet_worker(name)

    _told(as_json, "told to go quiet", call(url, quiet))


@click.command("stop")
@click.argument("name")
@click.option("--grace", type=click.FloatRange(0, MAX_GRACE_S), default=None,
              metavar="SECONDS",
              help="How long running jobs may take (default: the worker's shutdown_grace).")
@common
def stop_command(name: str, grace: float | None, url: str, as_json: bool) -> None:
    """Make worker NAME give back unstarted jobs, finish running ones, and exit."""
    async def stop(client: AsyncClient) -> int:
        return await client.stop_worker(name, None if grace is None
                                        else timedelta(seconds=grace))

    _told(as_json, "told to stop", call(url, stop))


@click.command("concurrency")
@click.argument("name")
@click.argument("concurrency", type=click.IntRange(1, 10_000), metavar="N")
@common
def concurrency_command(name: str, concurrency: int, url: str, as_json: bool) -> None:
    """Make worker NAME run up to N jobs at once per queue, from now on."""
    async def resize(client: AsyncClient) -> int:
        return await client.set_worker_concurrency(name, concurrency)

    _told(as_json, f"told to run {concurrency} at once", call(url, resize))
