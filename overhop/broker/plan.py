"""The dispatch plan: which subscriptions get the next waiting jobs of a queue. Pure.

Rules:
- a queue's active jobs never exceed its concurrency limit: the plan never assigns more
  than the free slots (slots are counted from the moment a dispatch is planned until the
  job's outcome is submitted);
- each assignment uses one credit of its subscription;
- subscriptions of one queue are served in turn: each round gives at most one job to each
  subscription with credit, starting after the one served first last time;
- a subscription whose connection is not being read by its peer (write buffer above the
  high-water mark) is skipped until it drains, and a plan gives one subscription at most
  `MAX_PER_SUBSCRIPTION` jobs; a job whose peer went over the mark while its dispatch
  committed is taken back (no attempt used, credit returned).
A worker subscribed to several queues has one subscription, with its own credits, per queue,
so no queue of it can starve another.
"""

from overhop.broker.runtime import MAX_DISPATCH_BATCH, MAX_PER_SUBSCRIPTION, QueueRuntime
from overhop.broker.workers import Subscription


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
        index: min(sub.credits, MAX_PER_SUBSCRIPTION) for index, sub in enumerate(subscriptions)
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
