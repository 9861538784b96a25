"""What the worker runner keeps: a `Route` per handler, a `Held` per job, and its tasks.

A route is one handler and its queue's subscription on the current connection, with the
counts its credits follow; a held job is one received and not yet answered. `TaskSet`
keeps every task the runner starts referenced until it ends, and logs those that fail.
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

log = logging.getLogger("overhop_client.worker")

Handler = Callable[[JobContext], object]
"""A handler: what it returns (an async one's, once awaited) is the job's result."""
AsyncHandler = Callable[[JobContext], Awaitable[object]]
T = TypeVar("T")


def is_async(function: Handler) -> TypeGuard[AsyncHandler]:
    """A plain async function, or an object whose `__call__` is async."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__)


@dataclass(eq=False)
class Route:
    """One handler, and its queue's subscription on the current connection."""

    queue: str
    function: Handler
    timeout: float | None
    concurrency: int
    prefetch: int
    middleware: tuple[Layer, ...] = ()
    """The handler's own layers, inside the worker's (see `overhop_client.middleware`)."""
    sid: str | None = None
    """The current subscription; None while not subscribed (also while stopping)."""
    granted: int = 0
    """Credits the server holds for the current subscription."""
    in_hand: int = 0
    running: int = 0
    waiting: deque["Held"] = field(default_factory=deque)
    async_function: AsyncHandler | None = field(init=False, repr=False)
    """`function` when it is async (it runs on the loop), else None (it runs in a thread)."""

    def __post_init__(self) -> None:
        self.async_function = self.function if is_async(self.function) else None

    @property
    def is_async(self) -> bool:
        return self.async_function is not None

    @property
    def capacity(self) -> int:
        return self.concurrency + self.prefetch


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
