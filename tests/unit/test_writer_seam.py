"""The writer seam's table: every operation has its own code and an apply function, and
crosses the MessagePack wire unchanged (records as their stored bytes, enums as numbers)."""

from dataclasses import fields
from typing import Any

from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import BackoffKind, QueueConfig, QueueRecord, QueueState
from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.storage import operations as ops
from overhop.storage.operations.table import APPLY
from overhop.storage.writer_messages import packer, unpacker

JOB = JobRecord("q:01234567-89ab-7def-8123-456789abcdef", "q", JobStatus.DELAYED, b"\x01", 1,
                5, 3, None, 100, history=[{"attempt": 1, "error": {"message": "x"}}],
                logs=[[2, "line"]])
CONFIG = QueueConfig(concurrency_limit=2, backoff=BackoffKind.EXPONENTIAL,
                     completed_max_count=10)
RECORD = QueueRecord("qid", "q", QueueState.PAUSED, 7, CONFIG)
SCHEDULE = ScheduleRecord("nightly", "q", "0 3 * * *", "Europe/Berlin",
                          ScheduleJob(b"\x01", 2, None, 500, {"k": "v"}), MissedPolicy.ONCE,
                          False, 60_000, 5, 4)

SAMPLES: list[ops.Operation[Any]] = [
    ops.Barrier(),
    ops.AddQueue(RECORD),
    ops.RemoveQueue("q"),
    ops.SetQueueState("q", QueueState.PAUSED),
    ops.Enqueue(JOB),
    ops.EnqueueMany("q", [JOB, JOB]),
    ops.TakeWaiting("q", [("d1", "w1"), ("d2", "w2")], 9, [("d0", JOB.job_id)], 7),
    ops.Complete(JOB.job_id, "d1", b"\x02", 9, 25),
    ops.EndAttempt(JOB.job_id, "d1", AttemptOutcome.LEASE_EXPIRED, 9, {"message": "late"}),
    ops.RetryFailed(JOB.job_id, 9),
    ops.RemoveJob(JOB.job_id),
    ops.PromoteDue("q", 9, 1000),
    ops.AdvanceNew("q", 9, 1000),
    ops.RecoverActive("q", 9, 1000),
    ops.SetQueueConfig("q", CONFIG),
    ops.ClearQueueBatch("q", 500, bytes(16)),
    ops.ObliterateBatch("q", 500),
    ops.DeleteEmptyQueue("q"),
    ops.PruneFinished("q", CONFIG, 9, 500),
    ops.AppendLogs(JOB.job_id, "d1", ["a", "b"], 9),
    ops.AddUser(b"\x92\xa3ann", bytes(32)),
    ops.RemoveUser("ann"),
    ops.SetUserPermissions("ann", ["read:*"]),
    ops.CancelJob(JOB.job_id, "not needed", 9),
    ops.RetryFailedBatch("q", 500, bytes(16), None, 9),
    ops.RemoveJobsBatch("q", JobStatus.CANCELLED, 500, bytes(16), b"\x01" * 16),
    ops.CancelJobsBatch("q", JobStatus.DELAYED, 500, bytes(16), None, "why", 9),
    ops.PutSchedule(SCHEDULE),
    ops.RemoveSchedule("nightly"),
    ops.SetSchedulePaused("nightly", True, 9),
    ops.FireSchedule("nightly", 60_000, JOB),
    ops.ClaimQueue("q"),
    ops.ReleaseQueue("q"),
]


def _values(op: ops.Operation[Any]) -> list[Any]:
    return [getattr(op, field.name) for field in fields(op)]  # type: ignore[arg-type]


def test_every_operation_has_one_code_and_an_apply_function() -> None:
    assert sorted(type(op).code for op in SAMPLES) == list(ops.OperationCode)
    assert len(APPLY) == len(ops.OperationCode) == len(ops.OPERATIONS)
    assert [cls.code for cls in ops.OPERATION_BY_CODE.values()] == list(ops.OperationCode)
    assert all(code == cls.code for code, cls in ops.OPERATION_BY_CODE.items())
    growing = {type(op).__name__ for op in SAMPLES if type(op).grows}
    assert growing == {"AddQueue", "Enqueue", "EnqueueMany", "AppendLogs", "AddUser",
                       "PutSchedule", "FireSchedule"}


def test_every_operation_crosses_the_wire_unchanged() -> None:
    decode = unpacker()
    decode.feed(packer().pack([op.to_wire() for op in SAMPLES]))
    (received,) = list(decode)
    for op, wire in zip(SAMPLES, received, strict=True):
        kind = ops.OPERATION_BY_CODE[wire[0]]
        assert kind is type(op)
        back = kind.from_wire(wire)
        assert isinstance(back, type(op))
        assert _values(back)[:len(_values(op))] == _values(op), type(op).__name__
