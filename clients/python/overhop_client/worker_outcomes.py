"""One attempt's outcome: running the handler within its timeout, and reporting the result.

A return value is sent with COMPLETE (a result the server cannot store becomes a FAIL
saying why); an exception with FAIL, its message and the formatted traceback as details;
a handler still running after its `timeout` is FAILed with the message "timeout". An
outcome the server could not write (STORAGE_FULL, INTERNAL: the delivery is still ours)
is sent again after each pause of `OUTCOME_RESEND_DELAYS_S`; after that the job is left
to its lease, whose expiry retries it.
"""

import asyncio
import contextvars
import functools
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from overhop_client import tracing
from overhop_client.client import AsyncClient
from overhop_client.context import JobContext
from overhop_client.errors import InternalError, ResultTooLargeError, StorageFullError
from overhop_client.results import Quest
from overhop_client.worker_routes import Handling, Route

log = logging.getLogger("overhop_client.worker")

TIMEOUT_MESSAGE = "timeout"
# Pauses before an outcome the server could not write is sent again (the delivery stays
# the worker's meanwhile): about 8 s in all, so a store freed by retention or an operator
# within that time loses no result; the lease covers what comes after.
OUTCOME_RESEND_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one attempt: completed with `result`, or failed with `message`."""

    completed: bool
    result: object = None
    message: str = ""
    details: object = None
    error_type: str = ""


async def run_handler(route: Route, context: JobContext,
                      executor: ThreadPoolExecutor | None) -> Outcome:
    """Run the route's handler for this job (its task's: `Route.handling`), on the loop
    or in `executor`, within the handler's timeout, in its `process` span when tracing is
    on; what came of it."""
    quest = context.quest
    with tracing.processing(quest.queue, quest.jid, quest.attempt, quest.did,
                            quest.headers) as span:
        outcome = await _run(route.handling(quest.task), context, executor)
        if not outcome.completed:
            tracing.failed(span, outcome.error_type, outcome.message)
    return outcome


async def _run(handling: Handling, context: JobContext,
               executor: ThreadPoolExecutor | None) -> Outcome:
    try:
        async with asyncio.timeout(handling.timeout) as scope:
            if handling.async_function is not None:
                result = await handling.async_function(context)
            else:
                assert executor is not None
                call = functools.partial(contextvars.copy_context().run, handling.function,
                                         context)
                result = await asyncio.get_running_loop().run_in_executor(executor, call)
    except TimeoutError as exc:
        if not scope.expired():
            return _failed(context, exc)
        log.warning("job_timed_out jid=%s after %ss", context.quest.jid, handling.timeout)
        return Outcome(False, message=TIMEOUT_MESSAGE,
                       details=f"the handler ran longer than {handling.timeout} s",
                       error_type="timeout")
    except Exception as exc:
        return _failed(context, exc)
    return Outcome(True, result=result)


def _failed(context: JobContext, exc: BaseException) -> Outcome:
    """The handler raised: one line at WARNING, the traceback at DEBUG."""
    quest = context.quest
    log.warning("job_failed jid=%s attempt=%d/%d: %s: %s", quest.jid, quest.attempt,
                quest.max_attempts, type(exc).__name__, exc)
    log.debug("job_failed jid=%s traceback:\n%s", quest.jid,
              "".join(traceback.format_exception(exc)).rstrip())
    return failure(exc)


def failure(exc: BaseException) -> Outcome:
    """A failed outcome for a handler's exception: its message, and its traceback."""
    return Outcome(False, message=str(exc) or type(exc).__name__,
                   details="".join(traceback.format_exception(exc)),
                   error_type=type(exc).__qualname__)


async def report(client: AsyncClient, quest: Quest, outcome: Outcome) -> None:
    """Send the outcome; again, after a pause, while the server could not write it."""
    for delay in (*OUTCOME_RESEND_DELAYS_S, None):
        try:
            await _send_outcome(client, quest, outcome)
            return
        except (StorageFullError, InternalError) as exc:
            if delay is None:
                raise
            log.warning("outcome_not_written jid=%s: %s; sending it again in %ss",
                        quest.jid, exc, delay)
            await asyncio.sleep(delay)


async def _send_outcome(client: AsyncClient, quest: Quest, outcome: Outcome) -> None:
    if outcome.completed:
        try:
            await client.complete(quest, outcome.result)
            return
        except (TypeError, ValueError, ResultTooLargeError) as exc:
            outcome = Outcome(False, message=f"the result cannot be stored: {exc}")
    await client.fail(quest, outcome.message, outcome.details)
