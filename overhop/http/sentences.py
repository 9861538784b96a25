"""`blocked_by` (what holds a job back, `overhop.broker.explain`) said in one sentence."""

from typing import Any


def blocked_sentence(blocked: dict[str, Any] | None, queue_name: str) -> str | None:
    """The reason in words, or None when nothing holds the job (it runs or has ended)."""
    if blocked is None:
        return None
    reason = blocked.get("reason")
    until = blocked.get("until")
    if reason == "queue_missing":
        return f"Its queue {queue_name!r} no longer exists."
    if reason == "queue_paused":
        return f"Queue {queue_name!r} is paused: no job of it starts until it is resumed."
    if reason == "scheduled":
        return f"It is scheduled: it becomes ready at {until}."
    if reason == "backing_off":
        return f"Its last attempt failed; it is backing off until {until}, then retries."
    if reason == "being_advanced":
        return ("It was enqueued while the queue was paused; the queue was resumed and it "
                "is being moved to waiting.")
    if reason == "concurrency_limit":
        return (f"Concurrency {blocked.get('active')}/{blocked.get('limit')} on "
                f"{queue_name!r}: it starts when one of the jobs running ends.")
    if reason == "group_limit":
        return (f"Group {blocked.get('group')!r} has {blocked.get('active')}/"
                f"{blocked.get('limit')} jobs running on {queue_name!r}: it starts when one "
                "of them ends.")
    if reason == "rate_limited":
        return (f"The rate limit of {queue_name!r} is used up for this window; the next "
                f"start is allowed at {until}.")
    if reason == "no_worker_credit":
        subscriptions = blocked.get("subscriptions", 0)
        if not subscriptions:
            return f"No worker is subscribed to {queue_name!r}."
        return (f"The {subscriptions} worker subscription(s) to {queue_name!r} have no credit "
                "left: every worker is busy.")
    if reason == "in_line":
        return "It is in line: older waiting jobs go first, and dispatch is under way."
    return f"Held back: {reason}."
