"""What the worker runner keeps: a `Route` per queue, a `Held` per job, and its tasks.

A route is one queue's handlers and its subscription on the current connection, with the
counts its credits follow. Its handlers are the queue's own (`@worker.handler(queue)`)
and one per task (`@worker.task(name, queue=...)`); `Route.handling` picks the one for a
job: its task's, else the queue's own, else one that fails the job saying no handler
exists (`NoHandlerError`). A held job is one received and not yet answered. `TaskSet`
keeps every asyncio task the runner starts referenced until it ends, and logs those that
fail.
"""

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar

from overhop_client.client import AsyncClient
from overhop_client.context import JobContext
from overhop_client.middleware import Layer
from overhop_client.results import Quest
from overhop_client.tasks import Task

log = logging.getLogger("overhop_client.worker")

Handler = Callable[[JobContext], object]
"""A handler: what it returns (an async one's, once awaited) is the job's result."""
AsyncHandler = Callable[[JobContext], Awaitable[object]]
T = TypeVar("T")


def is_async(function: Handler) -> TypeGuard[AsyncHandler]:
    """A plain async function, or an object whose `__call__` is async."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__)


class NoHandlerError(LookupError):
    """A job whose task has no handler on this worker (nor has its queue a handler of its
    own): the job fails with this message, and is retried while attempts remain, since
    another worker (a newer deployment) may know the task."""


@dataclass(frozen=True, eq=False)
class Handling:
    """One handler as it runs: the function, on the loop or in a thread, its timeout,
    and its own middleware layers (inside the worker's)."""

    function: Handler
    timeout: float | None
    middleware: tuple[Layer, ...] = ()
    async_function: AsyncHandler | None = field(init=False, repr=False)
    """`function` when it is async (it runs on the loop), else None (it runs in a thread)."""

    def __post_init__(self) -> None:
        if isinstance(self.function, Task):  # a task given to `handler`: run what it wraps
            object.__setattr__(self, "function", self.function.function)
        object.__setattr__(self, "async_function",
                           self.function if is_async(self.function) else None)


@dataclass(eq=False)
class Route:
    """One queue's handlers, and its subscription on the current connection."""

    queue: str
    own: Handling | None
    """The queue's own handler: for jobs without a task, and tasks without their own."""
    concurrency: int
    prefetch: int
    tasks: dict[str, Handling] = field(default_factory=dict)
    """The handler of each task registered on this queue, by task name."""
    sid: str | None = None
    """The current subscription; None while not subscribed (also while stopping)."""
    granted: int = 0
    """Credits the server holds for the current subscription (as counted here: a credit
    sent, by CREDIT or with an outcome, counts from when it is sent)."""
    in_hand: int = 0
    """Jobs held, less those whose outcome went out carrying their credit back."""
    running: int = 0
    waiting: deque["Held"] = field(default_factory=deque)

    def handling(self, task: str | None) -> Handling:
        """The handler for a job of this queue with `task`: the task's, else the queue's
        own, else one that fails the job with NoHandlerError."""
        found = self.tasks.get(task) if task is not None else None
        if found is None:
            found = self.own
        if found is None:
            what = "jobs without a task" if task is None else f"task {task!r}"
            return Handling(_no_handler(f"no handler for {what} on queue {self.queue!r}"),
                            None)
        return found

    @property
    def is_async(self) -> bool:
        """Whether every handler of the queue runs on the loop (none needs a thread)."""
        handlings = [*self.tasks.values(), *([self.own] if self.own else [])]
        return all(handling.async_function is not None for handling in handlings)

    @property
    def capacity(self) -> int:
        return self.concurrency + self.prefetch


def _no_handler(message: str) -> AsyncHandler:
    async def fail(context: JobContext) -> object:
        raise NoHandlerError(message)

    return fail


@dataclass(eq=False)
class Held:
    """A job this worker holds: received, maybe running, outcome not yet sent."""

    quest: Quest
    route: Route
    client: AsyncClient
    context: JobContext
    ack: "asyncio.Task[bool]"
    """The ACK in flight: True once the server accepted it."""
    beat: "asyncio.Task[None] | None" = None
    task: "asyncio.Task[None] | None" = None
    """What is being done with it, once decided: the handler run, or its RELEASE."""
    credit_given: bool = False
    """Its outcome went out with `credit: true` and its credit counts as given back: out
    of `route.in_hand`, in `route.granted` (worker_deliveries.py)."""


class TaskSet:
    """The runner's tasks still running: referenced here so none is collected midway."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: "asyncio.Task[object]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_task_failed", exc_info=task.exception())
