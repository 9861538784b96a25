"""Workers, their subscriptions and the deliveries they hold: in memory, per connection.

A worker exists while its connection does. The broker reaches it only through `Peer`,
never a socket.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from overhop.broker.events import (
    CancelRequested,
    JobAssigned,
    JobFinished,
    SubscriptionEnded,
    WorkerControlled,
)
from overhop.model.jobs import AttemptOutcome


class Peer(Protocol):
    """What the broker may do with a worker's connection: tell it of events, see whether
    it is reading, close it."""

    conn_id: str

    def job_assigned(self, event: JobAssigned) -> None: ...

    def subscription_ended(self, event: SubscriptionEnded) -> None: ...

    def job_finished(self, event: JobFinished) -> None: ...

    def worker_controlled(self, event: WorkerControlled) -> None: ...
    def cancel_requested(self, event: CancelRequested) -> None: ...

    @property
    def writable(self) -> bool: ...

    def close(self) -> None: ...


# The subscription id of what holds a delivery no worker holds: a job active when this
# broker took its queue over (cluster mode, broker/ownership.py), until its worker
# re-attaches it. Never a UUID, so never a real subscription's.
ORPHANED = "(takeover)"
# The subscription id of what holds such a delivery once its worker re-attached it: never
# active, so an outcome's `credit` gives nothing to it (nor to any real subscription).
REATTACHED = "(reattached)"


@dataclass(slots=True, eq=False)
class Subscription:
    subscription_id: str
    queue_name: str
    worker: "Worker"
    credits: int
    active: bool = True


@dataclass(slots=True, eq=False)
class Delivery:
    """One QUEST: a job handed to a subscription. Its id fences outcomes of older ones."""

    delivery_id: str
    job_id: str
    queue_name: str
    subscription: Subscription
    sent_at_ms: int
    ack_deadline_ms: int
    lease_ms: int
    acked: bool = False
    lease_deadline_ms: int = 0
    progress: Any = None
    # The server's own ending of this delivery whose write failed, and when to try again.
    retry_ending: tuple[AttemptOutcome, dict[str, Any] | None] | None = None
    retry_at_ms: int = 0
    # Set when the job was CANCELled while out: its lease is no longer extended.
    cancel_requested: bool = False

    @property
    def worker(self) -> "Worker":
        return self.subscription.worker


class WorkerState(StrEnum):
    """What a worker is doing, as STATUS shows it: set when an admin's command is sent
    (WORKERCTL) and when the worker reports its own state."""

    RUNNING = "running"
    QUIET = "quiet"  # takes no new jobs, finishes the running ones
    STOPPING = "stopping"  # gives its jobs back or finishes them, then leaves


@dataclass(slots=True, eq=False)
class Worker:
    worker_id: str
    peer: Peer
    registered_at_ms: int
    last_seen_ms: int
    metadata: dict[str, Any] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    # Jobs whose final outcome this connection waits for (WATCH, ENQUEUE's `watch`).
    watching: set[str] = field(default_factory=set)
    gone: bool = False
    state: WorkerState = WorkerState.RUNNING
    # Jobs at once per queue, as the worker last reported it (or an admin last set it);
    # None until then (a producer, or a client that does not report).
    concurrency: int | None = None

    @property
    def name(self) -> str | None:
        """The name given at REGISTER, if any."""
        name = self.metadata.get("name")
        return name if isinstance(name, str) else None

    def subscription_for(self, queue_name: str) -> Subscription | None:
        for subscription in self.subscriptions.values():
            if subscription.queue_name == queue_name:
                return subscription
        return None
