"""Tasks: named kinds of job, several per queue, and where a task's jobs go.

    @worker.task("send_email", queue="emails")
    async def send_email(ctx: JobContext) -> None: ...

    await client.enqueue(send_email, {"to": "a@example.com"})

A job names its task in ENQUEUE's `task`; the worker runs the handler registered for that
task on the job's queue. `Task` is what the decorator returns: the function, still
callable as before, that also knows its queue and task name, so producers that import it
can enqueue to it without repeating either.
"""

import functools
import re
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# The server's rule (PROTOCOL.md, "Field conventions"): checked here too, so a bad name
# fails at registration, not at the first enqueue.
TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")


def check_task_name(name: str) -> str:
    """`name` if it is a valid task name, else ValueError saying the rule."""
    if not isinstance(name, str) or not TASK_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid task name {name!r}: ASCII letters, digits, '_', '.', ':' "
                         "and '-', starting with a letter, digit or '_', at most 128 "
                         "characters")
    return name


class Task(Generic[P, R]):
    """A function registered as a task: call it as the function; its jobs go to `queue`
    with task `name` (pass it to `enqueue`, `enqueue_many` or `run` instead of a queue)."""

    def __init__(self, function: Callable[P, R], name: str, queue: str) -> None:
        self.function = function
        self.name = check_task_name(name)
        self.queue = queue
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} on queue {self.queue!r}: {self.function!r}>"


Destination = str | Task[..., Any]
"""Where a job goes: a queue's name, or a task (its queue, with its task name)."""


def destination(target: Destination, task: str | None) -> tuple[str, str | None]:
    """The queue and task name for `enqueue(target, ..., task=task)`."""
    if isinstance(target, Task):
        if task is not None and task != target.name:
            raise ValueError(f"{target!r} is task {target.name!r}, not {task!r}")
        return target.queue, target.name
    return target, None if task is None else check_task_name(task)
