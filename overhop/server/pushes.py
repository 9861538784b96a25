"""The broker's events to a worker, as the frames the server pushes (rid 0).

The only place QUEST and SUBEND frames are built: the broker hands over domain events
(`overhop.broker.events`), this module turns them into wire messages.
"""

from overhop.broker.events import JobAssigned, SubscriptionEnded
from overhop.wire.codec import encode_frame, encode_frame_with_raw
from overhop.wire.messages import PUSH_RID, MessageType

_NIL = b"\xc0"


def encode_quest(event: JobAssigned) -> bytes:
    job = event.job
    fields = {
        "did": event.delivery_id,
        "sid": event.subscription_id,
        "jid": job.job_id,
        "q": job.queue_name,
        "attempt": job.attempts_so_far + 1,
        "max_attempts": event.policy.max_attempts,
        "lease_ms": event.policy.lease_ms,
        "ack_timeout_ms": event.ack_timeout_ms,
    }
    if job.headers:  # the producer's trace context, only when it sent one
        fields["headers"] = job.headers
    return encode_frame_with_raw(
        MessageType.QUEST, PUSH_RID, fields,
        {"job_payload": job.payload if job.payload is not None else _NIL},
    )


def encode_subend(event: SubscriptionEnded) -> bytes:
    return encode_frame(MessageType.SUBEND, PUSH_RID, {
        "sid": event.subscription_id, "q": event.queue_name, "reason": event.reason.value})
