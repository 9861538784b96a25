"""`JobContext`: what a worker handler gets for one job, and what it may do while it runs.

Handlers run either on the event loop (async functions) or in a thread (plain functions),
so every method says which of the two it may be called from.

Log lines go to the server in batches (JOBLOG): lines logged within `LOG_FLUSH_DELAY_S` of
the first one of a batch travel together, and the runner sends what is left, and waits for
it to be stored, before it reports the job's outcome, so a job's log is complete by the
time the job is.
"""

import asyncio
import logging
from datetime import datetime
from typing import Any, Unpack

from overhop_client.client import MAX_LOG_LINES_PER_MESSAGE, AsyncClient
from overhop_client.codec import check_value
from overhop_client.enqueue_fields import EnqueueOptions
from overhop_client.errors import OverhopError
from overhop_client.results import LogTotals, Quest
from overhop_client.tasks import Destination

log = logging.getLogger("overhop_client.worker")

# Lines logged within this of the first of a batch go to the server in one JOBLOG: a busy
# handler's lines cost one message, and a slow handler's log is still visible within it.
LOG_FLUSH_DELAY_S = 0.2


class JobContext:
    """One delivered job: its payload and identity, plus progress, log and follow-up jobs."""

    def __init__(self, quest: Quest, client: AsyncClient, loop: asyncio.AbstractEventLoop
                 ) -> None:
        self.quest = quest
        self.logs: list[str] = []
        """Lines given to `log`, in order."""
        self._client = client
        self._loop = loop
        self._progress_sends: set[asyncio.Task[datetime | None]] = set()
        self._unsent_lines: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._log_sends: set[asyncio.Task[LogTotals]] = set()
        self._log_closed = False
        self._cancel_reason: str | None = None
        self.running: asyncio.Task[Any] | None = None
        """The task running the handler, while it does (the runner sets it)."""

    @property
    def payload(self) -> Any:
        """The job's payload as enqueued: any MessagePack value, whose shape the handler
        knows."""
        return self.quest.payload

    @property
    def jid(self) -> str:
        return self.quest.jid

    @property
    def queue(self) -> str:
        return self.quest.queue

    @property
    def task(self) -> str | None:
        """The job's task name, None when it was enqueued without one."""
        return self.quest.task

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

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled (CANCEL) while this worker holds it. An async
        handler's task is cancelled then; a plain function handler should check this now
        and then and return early: whatever it returns, the job ends `cancelled`."""
        return self._cancel_reason is not None

    @property
    def cancel_reason(self) -> str | None:
        """CANCEL's reason, once `cancelled`."""
        return self._cancel_reason

    def mark_cancelled(self, reason: str) -> None:
        """The server said the job was cancelled (ABORT); the runner calls this."""
        self._cancel_reason = reason

    def progress(self, value: object) -> None:
        """Record progress on the server (a JOBBEAT, which also extends the lease).

        Returns at once, from the loop or from a handler thread; the value must be
        MessagePack-able (checked here). The server keeps the latest value, shown in
        `Job.delivery.progress` while the job runs.
        """
        check_value(value)
        self._loop.call_soon_threadsafe(self._send_progress, value)

    def log(self, line: str) -> None:
        """Add a line to this job's log on the server (shown in `Job.logs`), keep it in
        `logs` and write it to the Python log. From the loop or a handler thread; returns
        at once (lines are sent in batches). A line longer than the server's
        `max_log_line_bytes` is cut to it. Lines logged after the handler ended stay local.
        """
        if not isinstance(line, str):
            raise TypeError(f"log lines must be str, not {type(line).__name__}")
        self.logs.append(line)
        log.info("job_log jid=%s %s", self.quest.jid, line)
        if _on_loop(self._loop):
            self._queue_line(line)
        elif not self._loop.is_closed():  # a handler thread outliving the runner keeps it
            self._loop.call_soon_threadsafe(self._queue_line, line)

    async def flush_logs(self) -> None:
        """Send the lines not sent yet and wait until every line is stored; later lines
        stay local. The runner calls this before it reports the outcome."""
        self._cancel_flush_timer()
        if self._unsent_lines:
            self._send_lines()
        self._log_closed = True
        if self._log_sends:
            await asyncio.gather(*self._log_sends, return_exceptions=True)

    def close_logs(self) -> None:
        """The delivery is over: drop lines not sent, send no more."""
        self._log_closed = True
        self._cancel_flush_timer()
        self._unsent_lines.clear()

    async def enqueue(self, queue: Destination, payload: object = None,
                      **options: Unpack[EnqueueOptions]) -> str:
        """Add a follow-up job (from an async handler); its id."""
        return await self._client.enqueue(queue, payload, **options)

    def enqueue_blocking(self, queue: Destination, payload: object = None,
                         **options: Unpack[EnqueueOptions]) -> str:
        """Add a follow-up job from a plain (threaded) handler; its id."""
        if _on_loop(self._loop):
            raise RuntimeError("enqueue_blocking would block the event loop: "
                               "use `await ctx.enqueue(...)` in async handlers")
        future = asyncio.run_coroutine_threadsafe(
            self._client.enqueue(queue, payload, **options), self._loop)
        return future.result()

    def _queue_line(self, line: str) -> None:
        if self._log_closed:
            return
        limits = self._client.limits
        if limits is not None and len(line.encode()) > limits.max_log_line_bytes:
            line = line.encode()[:limits.max_log_line_bytes].decode(errors="ignore")
        self._unsent_lines.append(line)
        if len(self._unsent_lines) >= MAX_LOG_LINES_PER_MESSAGE:
            self._cancel_flush_timer()
            self._send_lines()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(LOG_FLUSH_DELAY_S, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._flush_timer = None
        if self._unsent_lines and not self._log_closed:
            self._send_lines()

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _send_lines(self) -> None:
        lines, self._unsent_lines = self._unsent_lines, []
        task = self._loop.create_task(self._client.log(self.quest, *lines))
        self._log_sends.add(task)
        task.add_done_callback(self._lines_sent)

    def _lines_sent(self, task: "asyncio.Task[LogTotals]") -> None:
        self._log_sends.discard(task)
        self._report_send_error(task, "log_not_recorded")

    def _send_progress(self, value: object) -> None:
        task = self._loop.create_task(self._client.heartbeat(self.quest, value))
        self._progress_sends.add(task)
        task.add_done_callback(self._progress_sent)

    def _progress_sent(self, task: "asyncio.Task[datetime | None]") -> None:
        self._progress_sends.discard(task)
        self._report_send_error(task, "progress_not_recorded")

    def _report_send_error(self, task: "asyncio.Task[object]", event: str) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # The delivery ended (lease lost, connection dropped): the runner sees that
            # when it reports the outcome; there is nothing left to update.
            level = logging.DEBUG if isinstance(error, OverhopError | ConnectionError) \
                else logging.ERROR
            log.log(level, "%s jid=%s: %r", event, self.quest.jid, error)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
