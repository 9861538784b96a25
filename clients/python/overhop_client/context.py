"""`JobContext`: what a worker handler gets for one job, and what it may do while it runs.

Handlers run either on the event loop (async functions) or in a thread (plain functions),
so every method says which of the two it may be called from.
"""

import asyncio
import logging
from typing import Any, Unpack

from overhop_client.client import AsyncClient, EnqueueOptions
from overhop_client.codec import check_value
from overhop_client.errors import OverhopError
from overhop_client.results import Quest

log = logging.getLogger("overhop_client.worker")


class JobContext:
    """One delivered job: its payload and identity, plus progress, log and follow-up jobs."""

    def __init__(self, quest: Quest, client: AsyncClient, loop: asyncio.AbstractEventLoop
                 ) -> None:
        self.quest = quest
        self.logs: list[str] = []
        """Lines given to `log`, in order."""
        self._client = client
        self._loop = loop
        self._progress_sends: set[asyncio.Task[Any]] = set()

    @property
    def payload(self) -> Any:
        return self.quest.payload

    @property
    def jid(self) -> str:
        return self.quest.jid

    @property
    def queue(self) -> str:
        return self.quest.queue

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.quest.attempt

    @property
    def max_attempts(self) -> int:
        return self.quest.max_attempts

    @property
    def is_last_attempt(self) -> bool:
        return self.quest.attempt >= self.quest.max_attempts

    def progress(self, value: Any) -> None:
        """Record progress on the server (a JOBBEAT, which also extends the lease).

        Returns at once, from the loop or from a handler thread; the value must be
        MessagePack-able (checked here). The server keeps the latest value, shown in
        `Job.delivery.progress` while the job runs.
        """
        check_value(value)
        self._loop.call_soon_threadsafe(self._send_progress, value)

    def log(self, line: str) -> None:
        """Keep a log line for this job, in `logs`, and write it to the Python log.

        Local only for now: the protocol has no message for job logs yet, so the lines are
        not sent to the server and are gone when the handler's context is.
        """
        self.logs.append(line)
        log.info("job_log jid=%s %s", self.quest.jid, line)

    async def enqueue(self, queue: str, payload: Any = None,
                      **options: Unpack[EnqueueOptions]) -> str:
        """Add a follow-up job (from an async handler); its id."""
        return await self._client.enqueue(queue, payload, **options)

    def enqueue_blocking(self, queue: str, payload: Any = None,
                         **options: Unpack[EnqueueOptions]) -> str:
        """Add a follow-up job from a plain (threaded) handler; its id."""
        if _on_loop(self._loop):
            raise RuntimeError("enqueue_blocking would block the event loop: "
                               "use `await ctx.enqueue(...)` in async handlers")
        future = asyncio.run_coroutine_threadsafe(
            self._client.enqueue(queue, payload, **options), self._loop)
        return future.result()

    def _send_progress(self, value: Any) -> None:
        task = self._loop.create_task(self._client.heartbeat(self.quest, value))
        self._progress_sends.add(task)
        task.add_done_callback(self._progress_sent)

    def _progress_sent(self, task: "asyncio.Task[Any]") -> None:
        self._progress_sends.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # The delivery ended (lease lost, connection dropped): the runner sees that
            # when it reports the outcome; progress has nothing left to update.
            level = logging.DEBUG if isinstance(error, OverhopError | ConnectionError) \
                else logging.ERROR
            log.log(level, "progress_not_recorded jid=%s: %r", self.quest.jid, error)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
