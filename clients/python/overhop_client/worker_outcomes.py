"""One attempt's outcome: running the handler through its middleware, and reporting it.

A return value is sent with COMPLETE (a result the server cannot store becomes a FAIL
saying why); an exception with FAIL, its message and the formatted traceback as details;
a handler still running after its `timeout` is FAILed with the message "timeout". An
outcome the server could not write (STORAGE_FULL, STORAGE_UNAVAILABLE, INTERNAL: the
delivery is still ours) is sent again after each pause of `OUTCOME_RESEND_DELAYS_S`; so is,
in a cluster, one caught by its queue's move (QUEUE_MOVED once the client stopped
following, or its broker's connection failed): the new owner re-attaches the delivery when
it comes, or, when the lost broker had committed it, refuses it as a delivery it does not
hold. After that the job is left to its lease, whose expiry retries it.

An outcome may carry its job's credit back (`credit: true`, see worker_deliveries.py): only
its first send does; a send again never does.
"""

import asyncio
import contextvars
import functools
import logging
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from overhop_client.client import AsyncClient
from overhop_client.context import JobContext
from overhop_client.errors import (
    InternalError,
    OverhopError,
    QueueMovedError,
    ResultTooLargeError,
    StorageFullError,
    StorageUnavailableError,
)
from overhop_client.middleware import (
    JobTimedOut,
    Layer,
    Timeout,
    compose,
    describe_failure,
    log_failures,
    trace_job,
)
from overhop_client.results import Quest
from overhop_client.worker_routes import Handling, Route

log = logging.getLogger("overhop_client.worker")

# Pauses before an outcome the server could not write is sent again (the delivery stays
# the worker's meanwhile): about 16 s in all, so a store freed by retention or an operator,
# or a failover of the server's PostgreSQL (about 10 s with Patroni's ttl of 10), within that
# time loses no result (nor runs its job twice); the lease covers what comes after.
OUTCOME_RESEND_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# What answers an outcome the server took but could not write: the delivery stays the
# worker's, and a credit the outcome carried was given.
NOT_WRITTEN = (StorageFullError, StorageUnavailableError, InternalError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one attempt: completed with `result`, or failed with `message`."""

    completed: bool
    result: object = None
    message: str = ""
    details: object = None
    error_type: str = ""


async def run_handler(route: Route, context: JobContext, executor: ThreadPoolExecutor | None,
                      middleware: Sequence[Layer] = ()) -> Outcome:
    """Run the route's handler for this job (its task's: `Route.handling`) through the
    stack (see `middleware`): the built-in layers, the worker's `middleware`, the
    handler's own, its timeout; the handler on the loop or in `executor`. What came of
    it."""
    handling = route.handling(context.quest.task)
    stack: list[Layer] = [trace_job, log_failures, *middleware, *handling.middleware,
                          Timeout(handling.timeout)]
    try:
        result = await compose(stack, functools.partial(_call_handler, handling, executor))(
            context)
    except Exception as exc:
        return failure(exc)
    return Outcome(True, result=result)


async def _call_handler(handling: Handling, executor: ThreadPoolExecutor | None,
                        context: JobContext) -> object:
    """The innermost call: an async handler on the loop, a plain function in a thread."""
    if handling.async_function is not None:
        return await handling.async_function(context)
    assert executor is not None
    call = functools.partial(contextvars.copy_context().run, handling.function, context)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


def failure(exc: BaseException) -> Outcome:
    """A failed outcome for a run that raised: its message and its traceback (a timeout:
    the message "timeout" and how long the handler had)."""
    error_type, message = describe_failure(exc)
    if isinstance(exc, JobTimedOut):
        return Outcome(False, message=message,
                       details=f"the handler ran longer than {exc.seconds} s",
                       error_type=error_type)
    return Outcome(False, message=message, details="".join(traceback.format_exception(exc)),
                   error_type=error_type)


def is_moving(client: AsyncClient, error: BaseException) -> bool:
    """Whether a delivery message failed because its queue is moving between the brokers
    of a cluster (the delivery is still this worker's, to re-attach at the new owner)."""
    return client.cluster and isinstance(error, (QueueMovedError, ConnectionError))


async def report(client: AsyncClient, quest: Quest, outcome: Outcome,
                 credit_refused: Callable[[BaseException], None] | None = None) -> None:
    """Send the outcome; again, after a pause, while the server could not write it or its
    queue is moving. With `credit_refused`, the first send carries `credit: true` and
    `credit_refused` is told the error should that send fail; a send again never
    carries it."""
    for delay in (*OUTCOME_RESEND_DELAYS_S, None):
        try:
            await _send_outcome(client, quest, outcome, credit_refused is not None)
            return
        except (OverhopError, ConnectionError) as exc:
            if credit_refused is not None:
                credit_refused(exc)
                credit_refused = None
            unwritten = isinstance(exc, NOT_WRITTEN)
            if delay is None or not (unwritten or is_moving(client, exc)):
                raise
            log.warning("outcome_not_written jid=%s: %s; sending it again in %ss",
                        quest.jid, exc, delay)
            await asyncio.sleep(delay)


async def _send_outcome(client: AsyncClient, quest: Quest, outcome: Outcome,
                        credit: bool) -> None:
    if outcome.completed:
        try:
            await client.complete(quest, outcome.result, credit=credit)
            return
        except (TypeError, ValueError, ResultTooLargeError) as exc:
            # Not sent, or refused as it arrived: no credit given, so the FAIL carries it.
            outcome = Outcome(False, message=f"the result cannot be stored: {exc}")
    await client.fail(quest, outcome.message, outcome.details, credit=credit)
