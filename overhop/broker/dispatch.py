"""The dispatch plan: which subscriptions get the next waiting jobs of a queue. Pure.

Rules:
- a queue's active jobs never exceed its concurrency limit: the plan never assigns more
  than the free slots (slots are counted from the moment a dispatch is planned until the
  job's outcome is submitted);
- each assignment uses one credit of its subscription;
- subscriptions of one queue are served in turn: each round gives at most one job to each
  subscription with credit, starting after the one served first last time;
- a subscription whose connection is not being read by its peer (write buffer above the
  high-water mark) is skipped until it drains.
A worker subscribed to several queues has one subscription, with its own credits, per queue,
so no queue of it can starve another.
"""

from dataclasses import dataclass, field

from overhop.broker.queues import QueueRecord
from overhop.broker.workers import Subscription

# Jobs moved to active by one dispatch transaction at most: big enough to amortise a commit
# over a burst, small enough that one queue's burst does not delay other queues' commits.
MAX_DISPATCH_BATCH = 256


@dataclass(slots=True, eq=False)
class QueueRuntime:
    """What the scheduler knows of one queue between commits."""

    record: QueueRecord
    subscriptions: list[Subscription] = field(default_factory=list)
    active: int = 0
    waiting_estimate: int = 0
    waiting_added: int = 0
    dispatch_in_flight: bool = False
    next_turn: int = 0
    next_due_ms: int | None = None
    new_pending: bool = False
    maintenance_in_flight: bool = False

    def free_slots(self) -> int:
        limit = self.record.config.concurrency_limit
        return MAX_DISPATCH_BATCH if limit is None else max(0, limit - self.active)


def plan_dispatch(runtime: QueueRuntime, jobs: int | None = None) -> list[Subscription]:
    """The subscriptions to serve, one entry per job, in the order jobs should go out.

    `jobs` is how many jobs there are to place; by default the queue's waiting estimate.
    """
    available = runtime.waiting_estimate if jobs is None else jobs
    want = min(runtime.free_slots(), max(available, 0), MAX_DISPATCH_BATCH)
    subscriptions = runtime.subscriptions
    count = len(subscriptions)
    if want <= 0 or count == 0:
        return []
    remaining = {
        index: sub.credits for index, sub in enumerate(subscriptions)
        if sub.credits > 0 and sub.active and sub.worker.peer.writable
    }
    plan: list[Subscription] = []
    start = runtime.next_turn % count
    while remaining and len(plan) < want:
        for offset in range(count):
            index = (start + offset) % count
            left = remaining.get(index)
            if not left:
                continue
            plan.append(subscriptions[index])
            if left == 1:
                del remaining[index]
            else:
                remaining[index] = left - 1
            if len(plan) >= want:
                break
    if plan:
        runtime.next_turn = (subscriptions.index(plan[0]) + 1) % count
    return plan
