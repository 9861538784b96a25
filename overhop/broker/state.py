"""The broker's in-memory state, shared by its parts: queues, workers, deliveries.

Scheduler, deliveries, maintenance and queue administration each change their own part of
it; this module only holds it and answers the lookups every part needs.
"""

from dataclasses import dataclass, field

from overhop.broker.runtime import QueueRuntime
from overhop.broker.workers import Delivery, Worker
from overhop.errors import ErrorCode, RequestError
from overhop.observability.tally import Tally


@dataclass(slots=True, eq=False)
class BrokerState:
    queues: dict[str, QueueRuntime] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    # Every delivery out (QUEST sent or being committed), by delivery id.
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    # Queues being obliterated: their names cannot be added again until that ends.
    obliterating: set[str] = field(default_factory=set)
    # Cluster mode: queues another broker owns, name -> its address (None while no broker
    # holds the queue); requests for them are answered QUEUE_MOVED.
    elsewhere: dict[str, str | None] = field(default_factory=dict)
    dispatch_stopped: bool = False
    dispatched_total: int = 0
    # Flows counted for the metrics page (a dict increment per event).
    tally: Tally = field(default_factory=Tally)

    def queue(self, name: str) -> QueueRuntime:
        runtime = self.queues.get(name)
        if runtime is None:
            self.check_here(name)
            raise RequestError(ErrorCode.QUEUE_NOT_FOUND, f"queue {name!r} does not exist")
        return runtime

    def check_here(self, queue_name: str) -> None:
        """QUEUE_MOVED if another broker owns the queue (cluster mode)."""
        if self.elsewhere and queue_name in self.elsewhere:
            raise moved(queue_name, self.elsewhere[queue_name])

    def check_job_here(self, job_id: str) -> None:
        """QUEUE_MOVED if another broker owns the job's queue (cluster mode)."""
        if self.elsewhere and ":" in job_id:
            self.check_here(job_id.rsplit(":", 1)[0])

    def user_queue(self, name: str) -> QueueRuntime:
        if name.startswith("_"):
            raise RequestError(ErrorCode.QUEUE_SYSTEM,
                               f"{name!r} is a system queue and cannot be used that way")
        return self.queue(name)

    def forget(self, delivery: Delivery) -> None:
        """The delivery is no longer current: outcomes for it are refused from now on."""
        self.deliveries.pop(delivery.delivery_id, None)
        delivery.worker.deliveries.pop(delivery.delivery_id, None)


def moved(queue_name: str, owner: str | None) -> RequestError:
    where = f"broker {owner}" if owner else "another broker (being taken over: ask again)"
    return RequestError(ErrorCode.QUEUE_MOVED, f"queue {queue_name!r} is owned by {where}",
                        {"q": queue_name, "owner": owner})
