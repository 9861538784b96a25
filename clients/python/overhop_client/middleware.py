"""Middleware: layers around each run of a job's handler, composed like tower's layers.

A layer is `async def layer(ctx, call_next) -> result`: it may act before and after
`await call_next(ctx)` (which runs the rest of the stack and, last, the handler), change
the result, raise, or not call on at all. What the outermost layer returns is the job's
result; what it raises fails the attempt. Layers are given in order, the first outermost.

Every run goes through, from the outside in:

1. `trace_job`: the job's `process` span (when tracing is on; see `tracing`), marked
   failed when the run raises;
2. `log_failures`: one WARNING line for a run that raised (job id, attempt, exception),
   its traceback at DEBUG;
3. the worker's middleware (`Worker(middleware=[...])`, then `Worker.use(layer)`), in order;
4. the handler's own (`@worker.handler(queue, middleware=[...])`), in order;
5. `Timeout(handler timeout)`: a run past it raises `JobTimedOut` (failed with the message
   "timeout");
6. the handler: an async one on the loop, a plain function in the worker's thread pool.

Built-in layers to add: `Timeout`, `Retry` (run the handler again within the same
delivery when it raises what is worth another try) and `RateLimit` (at most N job starts
per period). Layers run on the event loop, for async and plain-function handlers alike.
"""

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from overhop_client import tracing
from overhop_client.context import JobContext

log = logging.getLogger("overhop_client.worker")

CallNext = Callable[[JobContext], Awaitable[object]]
"""The rest of the stack, down to the handler: call it with the job's context."""
Layer = Callable[[JobContext, CallNext], Awaitable[object]]
"""One layer: `async def layer(ctx, call_next) -> result`."""

TIMEOUT_MESSAGE = "timeout"


class JobTimedOut(Exception):
    """The handler ran longer than its timeout (raised by `Timeout`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(TIMEOUT_MESSAGE)
        self.seconds = seconds


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def compose(layers: Sequence[Layer], handler: CallNext) -> CallNext:
    """`handler` wrapped in `layers`, the first outermost."""
    call = handler
    for layer in reversed(layers):
        call = _wrapped(layer, call)
    return call


def _wrapped(layer: Layer, call_next: CallNext) -> CallNext:
    async def call(ctx: JobContext) -> object:
        return await layer(ctx, call_next)
    return call


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """The error type and the message a failed run is reported with."""
    if isinstance(exc, JobTimedOut):
        return "timeout", TIMEOUT_MESSAGE
    return type(exc).__qualname__, str(exc) or type(exc).__name__


# -- the layers every run goes through -------------------------------------------------

async def trace_job(ctx: JobContext, call_next: CallNext) -> object:
    """The CONSUMER span around the run (a no-op without `opentelemetry-api`)."""
    quest = ctx.quest
    with tracing.processing(quest.queue, quest.jid, quest.attempt, quest.did,
                            quest.headers) as span:
        try:
            return await call_next(ctx)
        except Exception as exc:
            tracing.failed(span, *describe_failure(exc))
            raise


async def log_failures(ctx: JobContext, call_next: CallNext) -> object:
    """A run that raised: one line at WARNING, the traceback at DEBUG (a timeout was
    logged by `Timeout` already)."""
    try:
        return await call_next(ctx)
    except JobTimedOut:
        raise
    except Exception as exc:
        quest = ctx.quest
        log.warning("job_failed jid=%s attempt=%d/%d: %s: %s", quest.jid, quest.attempt,
                    quest.max_attempts, type(exc).__name__, exc)
        log.debug("job_failed jid=%s traceback:\n%s", quest.jid,
                  "".join(traceback.format_exception(exc)).rstrip())
        raise


# -- layers to add -----------------------------------------------------------------------

class Timeout:
    """Fail the run with `JobTimedOut` when the rest of the stack takes longer than
    `seconds` (None: no bound). A plain-function handler cannot be stopped: its thread
    runs on, and what it returns is dropped."""

    def __init__(self, seconds: float | timedelta | None) -> None:
        self.seconds = None if seconds is None else _seconds(seconds)

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> object:
        if self.seconds is None:
            return await call_next(ctx)
        try:
            async with asyncio.timeout(self.seconds) as scope:
                return await call_next(ctx)
        except TimeoutError:
            if not scope.expired():
                raise  # the handler's own TimeoutError: an ordinary failure
            log.warning("job_timed_out jid=%s after %ss", ctx.quest.jid, self.seconds)
            raise JobTimedOut(self.seconds) from None


RetryDecision = Callable[[JobContext, Exception], bool]


class Retry:
    """Run the rest of the stack again, within the same delivery, when it raises one of
    `on` (and `when(ctx, exc)`, if given, agrees): up to `tries` runs in all, pausing
    `backoff` seconds, doubled after each try and at most `max_backoff`. Anything else,
    or the last try's exception, fails the attempt, and the server's `max_attempts` and
    backoff decide what follows. Heartbeats keep the job's lease meanwhile.

    The protocol has no "do not retry" for FAIL: a failed attempt is retried while the
    job has attempts left. To fail for good at once, enqueue with `max_attempts=1`."""

    def __init__(self, tries: int, *, on: type[Exception] | tuple[type[Exception], ...]
                 = Exception, backoff: float | timedelta = 0.1,
                 max_backoff: float | timedelta = 10.0, when: RetryDecision | None = None
                 ) -> None:
        if tries < 1:
            raise ValueError("tries must be >= 1")
        self.tries = tries
        self.on = on
        self.backoff = _seconds(backoff)
        self.max_backoff = _seconds(max_backoff)
        self.when = when

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> object:
        pause, run = self.backoff, 1
        while True:
            try:
                return await call_next(ctx)
            except self.on as exc:
                if run >= self.tries or (self.when is not None and not self.when(ctx, exc)):
                    raise
                log.info("job_run_again jid=%s try=%d/%d in %.2fs: %s: %s", ctx.quest.jid,
                         run + 1, self.tries, pause, type(exc).__name__, exc)
            await asyncio.sleep(pause)
            pause, run = min(pause * 2, self.max_backoff), run + 1


class StartWindow:
    """When each job may start so that at most `jobs` start within any `per` seconds.
    Pure: the caller passes the time."""

    def __init__(self, jobs: int, per: float) -> None:
        if jobs < 1 or per <= 0:
            raise ValueError("jobs must be >= 1 and per > 0")
        self.per = per
        self._starts: deque[float] = deque(maxlen=jobs)
        """The last `jobs` starts given out (some may lie in the future)."""

    def reserve(self, now: float) -> float:
        """Take the next start; the seconds to wait for it from `now`."""
        start = now
        if len(self._starts) == self._starts.maxlen:
            start = max(now, self._starts[0] + self.per)
        self._starts.append(start)
        return start - now


class RateLimit:
    """At most `jobs` runs start per `per` seconds, across everything this layer wraps
    (one instance in the worker's middleware: the whole worker). A job over the limit
    waits, holding its concurrency slot, its lease kept by heartbeats."""

    def __init__(self, jobs: int, per: float | timedelta = 1.0) -> None:
        self.window = StartWindow(jobs, _seconds(per))

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> object:
        wait = self.window.reserve(asyncio.get_running_loop().time())
        if wait > 0:
            log.debug("job_rate_limited jid=%s wait=%.3fs", ctx.quest.jid, wait)
            await asyncio.sleep(wait)
        return await call_next(ctx)
