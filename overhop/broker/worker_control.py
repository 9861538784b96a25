"""Worker control: an admin's command to the workers a name or id picks, and a worker's
report of its own state. In memory, per connection: nothing is written.

A command sets the state STATUS shows at once (quiet, stopping, or the new concurrency)
and tells each worker's connection (a CONTROL push); the worker then reports what it does
(WORKERCTL without `worker`), which replaces what the command set.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from overhop.broker.events import ControlAction, WorkerControlled
from overhop.broker.workers import Worker, WorkerState
from overhop.errors import ErrorCode, RequestError

# The state each command puts a worker in (CONCURRENCY leaves it as it is).
_STATE_AFTER = {ControlAction.QUIET: WorkerState.QUIET,
                ControlAction.STOP: WorkerState.STOPPING}


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What a worker says of itself: its state and its concurrency (None: unchanged)."""

    state: WorkerState
    concurrency: int | None


def find_workers(workers: Iterable[Worker], target: str) -> list[Worker]:
    """The workers whose id is `target`, or else those registered with that name; raise
    WORKER_NOT_FOUND when there are none."""
    alive = [worker for worker in workers if not worker.gone]
    found = ([worker for worker in alive if worker.worker_id == target]
             or [worker for worker in alive if worker.name == target])
    if not found:
        raise RequestError(ErrorCode.WORKER_NOT_FOUND,
                           f"no connected worker has the name or id {target!r}")
    return found


def control_workers(workers: Iterable[Worker], target: str, command: WorkerControlled
                    ) -> int:
    """Apply `command` to the workers `target` names and tell each; how many there were."""
    found = find_workers(workers, target)
    for worker in found:
        if command.action is ControlAction.CONCURRENCY:
            worker.concurrency = command.concurrency
        elif worker.state is not WorkerState.STOPPING:  # a stop is not taken back
            worker.state = _STATE_AFTER[command.action]
        worker.peer.worker_controlled(command)
    return len(found)


def apply_report(worker: Worker, report: WorkerReport) -> None:
    """A worker's own report of its state (and concurrency, when it gave one)."""
    worker.state = report.state
    if report.concurrency is not None:
        worker.concurrency = report.concurrency
