"""The broker's events to a worker, as the frames the server pushes (rid 0).

The only place QUEST, SUBEND, RESULT, ABORT and CONTROL frames are built: the broker hands
over domain events (`overhop.broker.events`), this module turns them into wire messages.
"""

from overhop.broker.events import (
    CancelRequested,
    FinalStatus,
    JobAssigned,
    JobFinished,
    SubscriptionEnd,
    SubscriptionEnded,
    WorkerControlled,
)
from overhop.server.views import history_view
from overhop.wire.encoding import encode_frame, encode_frame_with_raw
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
    if job.task is not None:  # which of the queue's handlers runs it, only when named
        fields["task"] = job.task
    return encode_frame_with_raw(
        MessageType.QUEST, PUSH_RID, fields,
        {"job_payload": job.payload if job.payload is not None else _NIL},
    )


def encode_result(event: JobFinished) -> bytes:
    """RESULT: a watched job's final outcome. `result` travels as the bytes it is stored as;
    a failed job says its attempts and their history (the last entry holds its error)."""
    fields: dict[str, object] = {"jid": event.job_id, "status": event.status.value}
    if event.status == FinalStatus.FAILED and event.job is not None:
        history = event.job.history
        fields["attempts_so_far"] = event.job.attempts_so_far
        fields["error"] = history[-1].get("error") if history else None
        fields["history"] = [history_view(entry) for entry in history]
    if event.status == FinalStatus.CANCELLED and event.job is not None:
        fields["reason"] = event.job.cancel_reason
    if event.status != FinalStatus.COMPLETED:
        return encode_frame(MessageType.RESULT, PUSH_RID, fields)
    return encode_frame_with_raw(MessageType.RESULT, PUSH_RID, fields,
                                 {"result": event.result if event.result is not None else _NIL})


def encode_subend(event: SubscriptionEnded) -> bytes:
    fields: dict[str, object] = {"sid": event.subscription_id, "q": event.queue_name,
                                 "reason": event.reason.value}
    if event.reason == SubscriptionEnd.QUEUE_MOVED:
        fields["owner"] = event.owner
    return encode_frame(MessageType.SUBEND, PUSH_RID, fields)


def encode_control(event: WorkerControlled) -> bytes:
    """CONTROL: an admin's command for this worker (`concurrency` and `grace_ms` only with
    the actions they belong to)."""
    fields: dict[str, object] = {"action": event.action.value}
    if event.concurrency is not None:
        fields["concurrency"] = event.concurrency
    if event.grace_ms is not None:
        fields["grace_ms"] = event.grace_ms
    return encode_frame(MessageType.CONTROL, PUSH_RID, fields)


def encode_abort(event: CancelRequested) -> bytes:
    """ABORT: the job this delivery runs was cancelled; its worker is to stop."""
    return encode_frame(MessageType.ABORT, PUSH_RID, {
        "jid": event.job_id, "did": event.delivery_id, "reason": event.reason})
