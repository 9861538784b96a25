"""Test harness: waiting for the server to reach a state, and running a worker in a test.

Waiting is real requests in a loop bounded by a deadline. Between polls the loop yields
for a few milliseconds so a busy poll does not starve the worker under test; the
deadline, not the pause, decides when a test gives up.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from overhop_client import AsyncClient, Job, Worker

T = TypeVar("T")
# Generous for a loaded CI machine; a state that is never reached fails the test after it.
DEADLINE_S = 20.0
POLL_PAUSE_S = 0.01


async def wait_until(read: Callable[[], Awaitable[T]], accept: Callable[[T], bool],
                     what: str, deadline_s: float = DEADLINE_S) -> T:
    """Call `read` until `accept` likes its value; that value. AssertionError at the deadline."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while True:
        value = await read()
        if accept(value):
            return value
        if loop.time() > give_up:
            raise AssertionError(f"{what}: not reached in {deadline_s} s; last seen {value!r}")
        await asyncio.sleep(POLL_PAUSE_S)


async def wait_for_job(client: AsyncClient, jid: str, accept: Callable[[Job], bool],
                       what: str = "job state") -> Job:
    async def read() -> Job | None:
        return await client.job(jid)

    job = await wait_until(read, lambda j: j is not None and accept(j), f"{jid}: {what}")
    assert job is not None
    return job


async def wait_for_status(client: AsyncClient, jid: str, status: str) -> Job:
    return await wait_for_job(client, jid, lambda job: job.status == status, f"status {status}")


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator["asyncio.Task[None]"]:
    """Run the worker for the block, once it is subscribed to every handler's queue; then
    stop it gracefully. Its errors surface here."""
    task = asyncio.create_task(worker.run_async())

    async def state() -> bool:
        return worker.connected or task.done()

    await wait_until(state, bool, "worker connected and subscribed")
    try:
        yield task
    finally:
        await asyncio.wait_for(worker.stop(), DEADLINE_S)
        await task
