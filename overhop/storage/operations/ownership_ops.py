"""The two operations of queue ownership in a cluster (docs/cluster.md): a broker's writer
takes a queue (`ClaimQueue`) or lets it go (`ReleaseQueue`). Only the PostgreSQL writer of a
broker with `cluster.node_id` carries them out (postgres/fencing.py); any other writer
refuses them."""

from dataclasses import dataclass
from typing import Any

from overhop.model.queues import QueueRecord
from overhop.storage.operations.base import Operation, OperationCode
from overhop.storage.records import decode_queue


@dataclass(frozen=True, slots=True)
class ClaimQueue(Operation[QueueRecord | None]):
    """Become the queue's owner if no live broker holds it: its record then (read in the
    claiming transaction, so nothing written for it before is missed), None when another
    broker holds it or the queue is gone. Every later write for the queue is checked
    against the epoch this claim set."""

    queue_name: str
    code = OperationCode.CLAIM_QUEUE
    subject = "taking a queue is"

    @staticmethod
    def decode_result(wire: Any) -> QueueRecord | None:
        return None if wire is None else decode_queue(wire)


@dataclass(frozen=True, slots=True)
class ReleaseQueue(Operation[None]):
    """Stop owning the queue: no write for it is taken from this broker after this one,
    and another broker may claim it at once. Releasing a queue held elsewhere changes
    nothing."""

    queue_name: str
    code = OperationCode.RELEASE_QUEUE
    subject = "letting a queue go is"


OWNERSHIP_OPERATIONS = (ClaimQueue, ReleaseQueue)
