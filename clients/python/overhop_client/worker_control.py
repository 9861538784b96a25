"""What the worker runner tells the server of itself, for an admin's control and STATUS.

An admin's WORKERCTL reaches the runner as a CONTROL push (`Worker._on_control`): quiet,
stop, or a new concurrency. The runner reports its state and concurrency back
(`report_state`) after connecting and after each change, so STATUS shows what it does.
The thread pool of plain-function handlers is sized from the routes' concurrency, so it is
remade when that changes (`pool_size`).
"""

import logging
from collections.abc import Iterable
from enum import StrEnum

from overhop_client.client import AsyncClient
from overhop_client.errors import ConnectionLost, OverhopError
from overhop_client.worker_routes import Route

log = logging.getLogger("overhop_client.worker")


class WorkerState(StrEnum):
    """What the worker is doing, as it reports it to the server (STATUS shows it)."""

    RUNNING = "running"
    QUIET = "quiet"  # takes no new jobs; running ones finish; stays connected
    STOPPING = "stopping"  # gives back unstarted jobs, finishes running ones, leaves


def pool_size(routes: Iterable[Route], threads: int | None) -> int:
    """Threads for plain-function handlers: `threads`, else their queues' concurrency."""
    return threads or sum(route.concurrency for route in routes if not route.is_async) or 1


async def report_state(client: AsyncClient | None, state: WorkerState,
                       routes: Iterable[Route]) -> None:
    """Tell the server this worker's state and concurrency (its queues' largest)."""
    if client is None or client.closed:
        return
    concurrency = max((route.concurrency for route in routes), default=None)
    try:
        await client.report_worker_state(state.value, concurrency)
    except (OverhopError, ConnectionLost) as exc:
        log.info("state_not_reported: %r", exc)
