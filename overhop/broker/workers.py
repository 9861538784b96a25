"""Workers, their subscriptions and the deliveries they hold: in memory, per connection.

A worker exists while its connection does. The broker reaches it only through `Peer`,
never a socket.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from overhop.model.jobs import AttemptOutcome


class Peer(Protocol):
    """What the broker may do with a worker's connection."""

    conn_id: str

    def send(self, frame: bytes) -> None: ...

    @property
    def writable(self) -> bool: ...

    def close(self) -> None: ...


class SubscriptionEnd(StrEnum):
    """Why the server ended a subscription on its own (the `reason` of a SUBEND push)."""

    QUEUE_REMOVED = "queue_removed"
    QUEUE_OBLITERATED = "queue_obliterated"


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

    @property
    def worker(self) -> "Worker":
        return self.subscription.worker


@dataclass(slots=True, eq=False)
class Worker:
    worker_id: str
    peer: Peer
    registered_at_ms: int
    last_seen_ms: int
    metadata: dict[str, Any] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    gone: bool = False

    def subscription_for(self, queue_name: str) -> Subscription | None:
        for subscription in self.subscriptions.values():
            if subscription.queue_name == queue_name:
                return subscription
        return None
