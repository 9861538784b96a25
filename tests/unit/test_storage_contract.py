"""The storage contract, on both engines: every operation of the writer seam with its result
and its refusals, submitted through the server's `Writer` to the engine's real writer
process, and the server's reads (`StoreReads`) agreeing after each step.

LMDB runs in a temporary directory, PostgreSQL in a fresh database of a throwaway server
(`tests/support/postgres.py`). Where the engines differ by design (docs/storage.md, "The
PostgreSQL engine": visible and durable at once; reads that are round trips), each test
asserts its engine's documented behaviour. LMDB's own internals (map growth, the lock file,
the layout migrations) stay in test_store.py and test_writer.py.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from overhop.auth.permissions import Permission, Verb
from overhop.auth.scram import Credentials
from overhop.auth.users import UserRecord
from overhop.broker.ids import JobIdGenerator
from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode
from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.model.uniqueness import UniqueScope
from overhop.storage import keys
from overhop.storage import operations as ops
from overhop.storage.operations.base import Moved, Taken
from overhop.storage.operations.catalogue_actions import Batch
from overhop.storage.user_records import encode_user
from tests.support.storage_engines import Storage, StorageTarget, run_on, storage_target

__all__ = ["storage_target"]  # a fixture (the PostgreSQL server is conftest's)

Q = "q"
MB = 1 << 20
W, N, D, A, C, F, X = (JobStatus.WAITING, JobStatus.NEW, JobStatus.DELAYED, JobStatus.ACTIVE,
                       JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class Jobs:
    """Job records with ids in creation order (uuid7 of `created_at_ms`)."""

    def __init__(self, start_ms: int = 1_000) -> None:
        self.ids = JobIdGenerator()
        self.now = start_ms

    def new(self, status: JobStatus = W, *, queue: str = Q, start_ms: int | None = None,
            **fields: Any) -> JobRecord:
        self.now += 1
        job_id = self.ids.new_job_id(queue, self.now)
        return JobRecord(job_id, queue, status, b"\x01", self.now,
                         self.now if start_ms is None else start_ms,
                         fields.pop("max_attempts", None), fields.pop("retry_interval_ms", None),
                         fields.pop("lease_ms", None), **fields)


def queue(name: str = Q, state: QueueState = QueueState.ACTIVE, **config: Any) -> QueueRecord:
    return QueueRecord(f"id-{name}", name, state, 7, QueueConfig(**config))


async def counts(s: Storage, name: str = Q) -> dict[JobStatus, int]:
    """The non-zero counters of a queue."""
    return {status: n for status, n in (await s.reads.counts(name)).items() if n}


def nonzero(by_status: dict[JobStatus, int]) -> dict[JobStatus, int]:
    return {JobStatus(status): n for status, n in by_status.items() if n}


async def status_of(s: Storage, job_id: str) -> JobStatus | None:
    job = await s.reads.get_job(job_id)
    return None if job is None else job.status


async def ids_in(s: Storage, status: JobStatus, name: str = Q) -> list[str]:
    jobs, cut, more = await s.reads.list_jobs(name, status, 0, 1000, 64 * MB)
    assert not cut and not more
    return [job.job_id for job in jobs]


async def take(s: Storage, n: int, *, now_ms: int = 5_000, dispatched: int = 0,
               guards: list[tuple[str, str]] | None = None, tag: str = "d") -> Taken:
    return await s.do(ops.TakeWaiting(Q, [(f"{tag}{i}", "w") for i in range(n)], now_ms,
                                      guards or [], dispatched))


# -- the seam itself ------------------------------------------------------------------------


def test_operations_apply_in_order_and_a_refusal_leaves_its_commit_alone(
        storage_target: StorageTarget) -> None:
    """Pipelined in one turn (one commit): ADDQUEUE then ENQUEUE sees the queue; refused
    operations between them change nothing and fail alone."""
    jobs = Jobs()
    first, second = jobs.new(), jobs.new()

    async def body(s: Storage) -> None:
        writes: list[Any] = [
            s.submit(ops.AddQueue(queue())),
            s.submit(ops.Enqueue(first)),
            s.submit(ops.AddQueue(queue())),                         # QUEUE_EXISTS
            s.submit(ops.EnqueueMany("nope", [jobs.new(queue="nope")])),  # QUEUE_NOT_FOUND
            s.submit(ops.RemoveJob(f"{Q}:missing")),                  # JOB_NOT_FOUND
            s.submit(ops.Enqueue(second)),
            s.submit(ops.Barrier()),
        ]
        outcomes = await asyncio.gather(*(w.durable for w in writes), return_exceptions=True)
        assert isinstance(outcomes[0], QueueRecord) and outcomes[0] == queue()
        assert outcomes[1] == first.job_id and outcomes[5] == second.job_id
        assert [getattr(o, "code", None) for o in outcomes[2:5]] == [
            ErrorCode.QUEUE_EXISTS, ErrorCode.QUEUE_NOT_FOUND, ErrorCode.JOB_NOT_FOUND]
        assert outcomes[6] is None
        assert await counts(s) == {W: 2}
        assert await counts(s, "nope") == {}
        assert await ids_in(s, W) == [first.job_id, second.job_id]

    run_on(storage_target, body)


def test_the_two_signals_as_each_engine_documents_them(storage_target: StorageTarget) -> None:
    """Both engines: every visible point of a commit before any durable one, in submission
    order, with the same results. PostgreSQL: a commit is visible and durable at once, so
    each durable point is told in the same message as its visible point (before anything
    else on the loop runs); LMDB with sync tells it after the sync."""
    jobs = Jobs()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        loop = asyncio.get_running_loop()
        events: list[tuple[str, int]] = []
        batch = [jobs.new() for _ in range(4)]
        writes = [s.submit(ops.Enqueue(job)) for job in batch]
        def told(kind: str, n: int) -> Callable[[Any, Any], None]:
            def signal(result: Any, error: Any) -> None:
                events.append((kind, n))
                if kind == "visible":  # runs once the loop gets control back
                    loop.call_soon(events.append, ("turn", n))
            return signal

        for n, write in enumerate(writes):
            write.when_visible(told("visible", n))
            write.when_durable(told("durable", n))
        results = await asyncio.gather(*(w.durable for w in writes))
        assert results == [job.job_id for job in batch]
        signals = [e for e in events if e[0] != "turn"]
        assert signals == [("visible", n) for n in range(4)] + [("durable", n) for n in range(4)]
        first_turn = events.index(("turn", 0))
        if s.engine == "postgres":
            assert s.reads.immediate is False
            assert first_turn == 8  # every durable point came with its visible one
        else:
            assert s.reads.immediate is True
            assert first_turn >= 4  # durable comes after the visible points
        assert await counts(s) == {W: 4}

    run_on(storage_target, body)


def test_reads_that_differ_by_engine_say_so(storage_target: StorageTarget) -> None:
    """`usage`: PostgreSQL has no map."""
    jobs = Jobs()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(jobs.new()))
        usage = await s.reads.usage()
        if s.engine == "postgres":
            assert usage.map_size_bytes == 0 and usage.used_bytes > 0
            assert usage.file_bytes >= usage.used_bytes
        else:
            assert usage.map_size_bytes >= 1 << 24 and 0 < usage.used_bytes <= usage.map_size_bytes

    run_on(storage_target, body)


# -- queues ---------------------------------------------------------------------------------


def test_queues_add_state_settings_and_their_refusals(storage_target: StorageTarget) -> None:
    async def body(s: Storage) -> None:
        assert await s.reads.load_queues() == []
        assert await s.do(ops.AddQueue(queue("b"))) == queue("b")
        assert await s.do(ops.AddQueue(queue("a"))) == queue("a")
        assert await s.refused(ops.AddQueue(queue("a", QueueState.PAUSED))) \
            == ErrorCode.QUEUE_EXISTS
        paused = await s.do(ops.SetQueueState("a", QueueState.PAUSED))
        assert paused == queue("a", QueueState.PAUSED)
        config = QueueConfig(concurrency_limit=3, max_attempts=7, completed_max_count=10)
        updated = await s.do(ops.SetQueueConfig("a", config))
        assert updated == QueueRecord("id-a", "a", QueueState.PAUSED, 7, config)
        assert await s.reads.load_queues() == [updated, queue("b")]  # by name
        for op in (ops.SetQueueState("c", QueueState.ACTIVE), ops.SetQueueConfig("c", config),
                   ops.RemoveQueue("c"), ops.ClearQueueBatch("c", 10, b"\xff" * 16),
                   ops.ObliterateBatch("c", 10), ops.DeleteEmptyQueue("c")):
            assert await s.refused(op) == ErrorCode.QUEUE_NOT_FOUND, op
        await s.do(ops.RemoveQueue("b"))
        assert await s.reads.load_queues() == [updated]

    run_on(storage_target, body)


def test_a_queue_with_jobs_is_not_removed(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(job))
        assert await s.refused(ops.RemoveQueue(Q)) == ErrorCode.QUEUE_NOT_EMPTY
        assert [q.name for q in await s.reads.load_queues()] == [Q]
        removed = await s.do(ops.RemoveJob(job.job_id))
        assert removed.job_id == job.job_id and removed.status == W
        await s.do(ops.RemoveQueue(Q))
        assert await s.reads.load_queues() == [] and await counts(s) == {}

    run_on(storage_target, body)


def test_clear_queue_removes_unstarted_jobs_created_before_the_bound_in_batches(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    waiting = [jobs.new() for _ in range(3)]
    delayed = jobs.new(D, start_ms=90_000)
    running = jobs.new()
    later = jobs.new()  # created after the request: stays

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [*waiting, delayed]))
        await s.do(ops.Enqueue(running))
        await s.do(ops.RemoveJob(waiting[0].job_id))  # the queue's head is waiting[1] now
        taken = await take(s, 1)
        assert [j.job_id for j in taken.jobs] == [waiting[1].job_id]
        await s.do(ops.Enqueue(later))
        before = keys.job_uuid_bytes(later.job_id)
        first = await s.do(ops.ClearQueueBatch(Q, 2, before))
        assert (first.removed, first.more, nonzero(first.counts)) == (2, True, {W: 2})
        assert await counts(s) == {W: 1, D: 1, A: 1}
        second = await s.do(ops.ClearQueueBatch(Q, 2, before))
        assert second.removed == 1 and not second.more and second.counts[D] == 1
        assert await counts(s) == {W: 1, A: 1}
        assert await ids_in(s, W) == [later.job_id]
        assert await s.reads.first_due_ms(Q) is None

    run_on(storage_target, body)


def test_obliterate_removes_every_job_then_the_queue(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    batch = [jobs.new() for _ in range(3)] + [jobs.new(D, start_ms=90_000)]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, batch))
        await take(s, 1)
        assert await s.refused(ops.RemoveQueue(Q)) == ErrorCode.QUEUE_NOT_EMPTY
        first = await s.do(ops.ObliterateBatch(Q, 2))
        assert (first.removed, first.more) == (2, True)
        second = await s.do(ops.ObliterateBatch(Q, 10))
        assert (second.removed, second.more) == (2, False)
        assert sum(first.counts.values()) + sum(second.counts.values()) == 4
        assert second.counts[A] == 1 and await counts(s) == {}
        await s.do(ops.DeleteEmptyQueue(Q))
        assert await s.reads.load_queues() == []
        assert await s.reads.get_job(batch[0].job_id) is None
        assert await s.refused(ops.ObliterateBatch(Q, 10)) == ErrorCode.QUEUE_NOT_FOUND

    run_on(storage_target, body)


def test_a_paused_queue_keeps_new_jobs_until_resumed(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    now_job = jobs.new(N)
    due_later = jobs.new(N, start_ms=50_000)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue(state=QueueState.PAUSED)))
        await s.do(ops.EnqueueMany(Q, [now_job, due_later]))
        assert await counts(s) == {N: 2}
        assert await s.do(ops.AdvanceNew(Q, 10_000, 10)) == Moved(0, False, None)
        assert await s.do(ops.PromoteDue(Q, 10_000, 10)) == Moved(0, False, None)
        await s.do(ops.SetQueueState(Q, QueueState.ACTIVE))
        assert await s.do(ops.AdvanceNew(Q, 10_000, 1)) == Moved(1, True, None)
        assert await s.do(ops.AdvanceNew(Q, 10_000, 10)) == Moved(1, False, 50_000)
        assert await counts(s) == {W: 1, D: 1}
        assert await s.reads.first_due_ms(Q) == 50_000
        assert await status_of(s, due_later.job_id) == D

    run_on(storage_target, body)


def test_promote_due_moves_due_delayed_jobs_in_bounded_steps(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    delayed = [jobs.new(D, start_ms=at) for at in (30_000, 10_000, 20_000, 40_000)]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, delayed))
        assert await s.reads.first_due_ms(Q) == 10_000
        assert await s.do(ops.PromoteDue(Q, 9_999, 10)) == Moved(0, False, 10_000)
        assert await s.do(ops.PromoteDue(Q, 30_000, 2)) == Moved(2, True, 30_000)
        assert await ids_in(s, W) == [delayed[1].job_id, delayed[2].job_id]
        assert await s.do(ops.PromoteDue(Q, 30_000, 2)) == Moved(1, False, 40_000)
        assert await counts(s) == {W: 3, D: 1}
        assert await s.reads.first_due_ms(Q) == 40_000

    run_on(storage_target, body)


# -- jobs -----------------------------------------------------------------------------------


def test_enqueue_stores_the_record_as_sent(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new(max_attempts=4, retry_interval_ms=250, lease_ms=9_000,
                   headers={"traceparent": "00-ab-cd-01"}, task="mail", priority=8)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        assert await s.reads.get_job(job.job_id) is None
        assert await s.refused(ops.Enqueue(jobs.new(queue="nope"))) == ErrorCode.QUEUE_NOT_FOUND
        assert await s.do(ops.Enqueue(job)) == job.job_id
        assert await s.reads.get_job(job.job_id) == job
        assert await counts(s) == {W: 1}
        assert await s.reads.oldest_created_ms(Q, W) == job.created_at_ms
        assert await s.reads.oldest_created_ms(Q, D) is None

    run_on(storage_target, body)


def test_enqueue_many_writes_all_or_none(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    batch = [jobs.new(), jobs.new(D, start_ms=70_000), jobs.new(priority=9)]

    async def body(s: Storage) -> None:
        assert await s.refused(ops.EnqueueMany(Q, batch)) == ErrorCode.QUEUE_NOT_FOUND
        await s.do(ops.AddQueue(queue()))
        assert await counts(s) == {}
        assert await s.do(ops.EnqueueMany(Q, batch)) == [job.job_id for job in batch]
        assert await counts(s) == {W: 2, D: 1}
        assert [await s.reads.get_job(job.job_id) for job in batch] == batch
        assert await s.reads.first_due_ms(Q) == 70_000
        assert await ids_in(s, W) == [batch[2].job_id, batch[0].job_id]  # priority first

    run_on(storage_target, body)


def test_dispatch_takes_the_highest_priority_first_then_the_oldest(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    batch = [jobs.new(priority=p) for p in (None, 9, 1, 9, 5, 7)]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, batch))
        taken = await take(s, 4, now_ms=6_000)
        assert [j.job_id for j in taken.jobs] == [batch[i].job_id for i in (1, 3, 5, 0)]
        assert (taken.waiting_left, taken.blocked) == (2, 0)
        first = taken.jobs[0]
        assert (first.status, first.delivery_id, first.worker_id, first.started_at_ms) == (
            A, "d0", "w", 6_000)
        assert await s.reads.get_job(first.job_id) == first
        assert await counts(s) == {W: 2, A: 4}
        rest = await take(s, 5, tag="e")
        assert [j.job_id for j in rest.jobs] == [batch[4].job_id, batch[2].job_id]
        assert rest.waiting_left == 0 and await take(s, 1, tag="f") == Taken([], 0, 0)

    run_on(storage_target, body)


def test_every_tenth_dispatch_takes_the_oldest_job_whatever_its_priority(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    low = jobs.new(priority=1)
    high = [jobs.new(priority=9) for _ in range(12)]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [low, *high]))
        # The queue has dispatched 7 before: its 10th dispatch is the third of these.
        taken = await take(s, 4, dispatched=7)
        assert [j.job_id for j in taken.jobs] == [high[0].job_id, high[1].job_id, low.job_id,
                                                  high[2].job_id]
        assert await s.reads.oldest_created_ms(Q, W) == high[3].created_at_ms

    run_on(storage_target, body)


def test_a_guard_whose_delivery_is_still_active_holds_the_dispatch(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    first, second = jobs.new(), jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue(concurrency_limit=1)))
        await s.do(ops.EnqueueMany(Q, [first, second]))
        (held,) = (await take(s, 1)).jobs
        # Its end was "written before" but did not land: the slot is not free.
        assert await take(s, 1, guards=[("d0", held.job_id)], tag="e") == Taken([], 1, 0)
        assert await status_of(s, second.job_id) == W
        ended = s.submit(ops.Complete(held.job_id, "d0", None, 6_000, 10))
        after = s.submit(ops.TakeWaiting(Q, [("e0", "w")], 6_000, [("d0", held.job_id)], 1))
        assert await ended.durable == C
        assert [j.job_id for j in (await after.durable).jobs] == [second.job_id]
        # A guard naming another delivery (or a gone job) does not hold anything.
        await s.do(ops.Enqueue(third := jobs.new()))
        taken = await take(s, 1, guards=[("old", second.job_id), ("x", f"{Q}:gone")], tag="g")
        assert [j.job_id for j in taken.jobs] == [third.job_id]

    run_on(storage_target, body)


def test_complete_stores_the_result_and_refuses_a_stale_delivery(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(job))
        assert await s.refused(ops.Complete(job.job_id, "d0", None, 1, 10)) \
            == ErrorCode.DELIVERY_STALE  # not active
        await take(s, 1)
        assert await s.refused(ops.Complete(job.job_id, "other", None, 1, 10)) \
            == ErrorCode.DELIVERY_STALE
        assert await s.refused(ops.Complete(f"{Q}:gone", "d0", None, 1, 10)) \
            == ErrorCode.DELIVERY_STALE
        assert await s.do(ops.Complete(job.job_id, "d0", b"\x2a", 7_000, 10)) == C
        done = await s.reads.get_job(job.job_id)
        assert done is not None
        assert (done.status, done.result, done.finished_at_ms, done.attempts_so_far,
                done.delivery_id) == (C, b"\x2a", 7_000, 1, None)
        assert [h["outcome"] for h in done.history] == ["completed"]
        assert await s.refused(ops.Complete(job.job_id, "d0", None, 1, 10)) \
            == ErrorCode.DELIVERY_STALE  # its end was written already
        assert await counts(s) == {C: 1}
        assert await ids_in(s, C) == [job.job_id]
        assert await s.reads.oldest_created_ms(Q, C) == job.created_at_ms

    run_on(storage_target, body)


def test_an_attempt_that_fails_is_retried_after_its_interval_then_fails_for_good(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new(max_attempts=2, retry_interval_ms=500)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(job))
        await take(s, 1)
        # Given back unstarted: no attempt is used, it waits again.
        released = await s.do(ops.EndAttempt(job.job_id, "d0", AttemptOutcome.RELEASED,
                                             5_100, None))
        assert (released.status, released.attempts_so_far) == (W, 0)
        await take(s, 1, tag="e")
        delayed = await s.do(ops.EndAttempt(job.job_id, "e0", AttemptOutcome.FAILED, 6_000,
                                            {"message": "boom"}))
        assert (delayed.status, delayed.attempts_so_far, delayed.execution_start_at_ms) == (
            D, 1, 6_500)
        assert await s.reads.first_due_ms(Q) == 6_500 and await counts(s) == {D: 1}
        assert await s.refused(ops.EndAttempt(job.job_id, "e0", AttemptOutcome.FAILED, 6_001,
                                              None)) == ErrorCode.DELIVERY_STALE
        assert await s.do(ops.PromoteDue(Q, 6_500, 10)) == Moved(1, False, None)
        await take(s, 1, tag="f")
        failed = await s.do(ops.EndAttempt(job.job_id, "f0", AttemptOutcome.LEASE_EXPIRED,
                                           8_000, None))
        assert (failed.status, failed.attempts_so_far, failed.finished_at_ms) == (F, 2, 8_000)
        assert [h["outcome"] for h in failed.history] == ["released", "failed", "lease_expired"]
        assert failed.history[1]["error"] == {"message": "boom"}
        assert await s.reads.get_job(job.job_id) == failed
        assert await counts(s) == {F: 1} and await s.reads.first_due_ms(Q) is None

    run_on(storage_target, body)


def test_the_retry_decision_follows_the_queue_settings_as_stored(
        storage_target: StorageTarget) -> None:
    """`EndAttempt` and `RecoverActive` use the queue's settings at the time they apply,
    and the `[jobs]` defaults the engine was given at start."""
    jobs = Jobs()
    follows_queue, follows_defaults = jobs.new(), jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [follows_queue, follows_defaults]))
        await take(s, 2)
        # Defaults given at start: 2 attempts, 300 ms apart.
        retried = await s.do(ops.EndAttempt(follows_defaults.job_id, "d1",
                                            AttemptOutcome.FAILED, 6_000, None))
        assert (retried.status, retried.execution_start_at_ms) == (D, 6_300)
        await s.do(ops.SetQueueConfig(Q, QueueConfig(max_attempts=1)))
        ended = await s.do(ops.RecoverActive(Q, 7_000, 10))
        assert ended == Moved(1, False, 6_300)
        recovered = await s.reads.get_job(follows_queue.job_id)
        assert recovered is not None and recovered.status == F
        assert recovered.history[-1]["outcome"] == "server_restart"

    run_on(storage_target, body,
           jobs=JobsConfig(default_max_attempts=2, default_retry_interval_ms=300))


def test_retry_failed_and_remove_job_and_their_refusals(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job, other = jobs.new(max_attempts=1), jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [job, other]))
        assert await s.refused(ops.RetryFailed(job.job_id, 1)) == ErrorCode.JOB_STATUS_CONFLICT
        assert await s.refused(ops.RetryFailed(f"{Q}:gone", 1)) == ErrorCode.JOB_NOT_FOUND
        await take(s, 2)
        assert await s.refused(ops.RemoveJob(job.job_id)) == ErrorCode.JOB_STATUS_CONFLICT
        await s.do(ops.EndAttempt(job.job_id, "d0", AttemptOutcome.FAILED, 6_000, None))
        retried = await s.do(ops.RetryFailed(job.job_id, 9_000))
        assert (retried.status, retried.attempts_so_far, retried.finished_at_ms,
                retried.execution_start_at_ms) == (W, 0, None, 9_000)
        assert len(retried.history) == 1
        await s.do(ops.SetQueueState(Q, QueueState.PAUSED))
        await take(s, 1, tag="e")  # dispatch does not look at the queue's state
        await s.do(ops.EndAttempt(job.job_id, "e0", AttemptOutcome.FAILED, 9_500, None))
        assert (await s.do(ops.RetryFailed(job.job_id, 9_600))).status == N
        assert await counts(s) == {N: 1, A: 1}
        removed = await s.do(ops.RemoveJob(job.job_id))
        assert removed.status == N and await s.reads.get_job(job.job_id) is None
        assert await s.refused(ops.RemoveJob(job.job_id)) == ErrorCode.JOB_NOT_FOUND
        assert await counts(s) == {A: 1}

    run_on(storage_target, body)


def test_log_lines_are_kept_within_their_bounds_for_the_delivery_only(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(job))
        assert await s.refused(ops.AppendLogs(job.job_id, "d0", ["x"], 1)) \
            == ErrorCode.DELIVERY_STALE
        await take(s, 1)
        first = await s.do(ops.AppendLogs(job.job_id, "d0", ["one", "two"], 6_000))
        assert (first.logs, first.logs_dropped, first.status) == (
            [[6_000, "one"], [6_000, "two"]], 0, A)
        second = await s.do(ops.AppendLogs(job.job_id, "d0", ["three", "four"], 6_001))
        assert second.logs == [[6_000, "two"], [6_001, "three"], [6_001, "four"]]
        assert second.logs_dropped == 1
        assert await s.reads.get_job(job.job_id) == second
        assert await s.refused(ops.AppendLogs(job.job_id, "old", ["x"], 1)) \
            == ErrorCode.DELIVERY_STALE

    run_on(storage_target, body, jobs=JobsConfig(max_log_lines=3))


def test_cancel_ends_unstarted_jobs_and_marks_an_active_one(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    running, completing, waiting = jobs.new(), jobs.new(), jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        assert await s.refused(ops.CancelJob(f"{Q}:gone", "r", 1)) == ErrorCode.JOB_NOT_FOUND
        await s.do(ops.EnqueueMany(Q, [running, completing, waiting]))
        await take(s, 2)
        done = await s.do(ops.CancelJob(waiting.job_id, "not needed", 6_000))
        assert (done.status, done.cancel_reason, done.finished_at_ms) == (X, "not needed",
                                                                           6_000)
        assert (await s.do(ops.CancelJob(waiting.job_id, "again", 6_001))) == done
        marked = await s.do(ops.CancelJob(running.job_id, "stop", 6_000))
        assert (marked.status, marked.cancel_reason) == (A, "stop")
        await s.do(ops.CancelJob(completing.job_id, "late", 6_000))
        assert await s.do(ops.Complete(completing.job_id, "d1", b"\x01", 6_100, 10)) == X
        ended = await s.do(ops.EndAttempt(running.job_id, "d0", AttemptOutcome.FAILED, 6_200,
                                          None))
        assert (ended.status, ended.cancel_reason, ended.attempts_so_far) == (X, "stop", 1)
        assert await counts(s) == {X: 3}
        await s.do(ops.Enqueue(finished := jobs.new()))
        await take(s, 1, tag="e")
        await s.do(ops.Complete(finished.job_id, "e0", None, 7_000, 10))
        assert await s.refused(ops.CancelJob(finished.job_id, "r", 7_001)) \
            == ErrorCode.JOB_STATUS_CONFLICT

    run_on(storage_target, body)


def test_bulk_batches_page_through_their_range(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    failing = [jobs.new(max_attempts=1) for _ in range(3)]
    delayed = [jobs.new(D, start_ms=90_000) for _ in range(3)]
    later = jobs.new(D, start_ms=90_000)  # after the bound

    async def body(s: Storage) -> None:
        for op in (ops.RetryFailedBatch("nope", 1, b"\xff" * 16, None, 1),
                   ops.RemoveJobsBatch("nope", W, 1, b"\xff" * 16, None),
                   ops.CancelJobsBatch("nope", W, 1, b"\xff" * 16, None, "r", 1)):
            assert await s.refused(op) == ErrorCode.QUEUE_NOT_FOUND
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [*failing, *delayed, later]))
        await take(s, 3)
        for n, job in enumerate(failing):
            await s.do(ops.EndAttempt(job.job_id, f"d{n}", AttemptOutcome.FAILED, 6_000, None))
        bound = keys.job_uuid_bytes(later.job_id)
        first = await s.do(ops.CancelJobsBatch(Q, D, 2, bound, None, "bulk", 6_100))
        assert first == Batch(2, True, keys.job_uuid_bytes(delayed[1].job_id))
        second = await s.do(ops.CancelJobsBatch(Q, D, 2, bound, first.after, "bulk", 6_100))
        assert second == Batch(1, False, keys.job_uuid_bytes(delayed[2].job_id))
        assert await ids_in(s, D) == [later.job_id]
        assert await ids_in(s, X) == [job.job_id for job in delayed]
        retried = await s.do(ops.RetryFailedBatch(Q, 2, bound, None, 7_000))
        assert retried == Batch(2, True, keys.job_uuid_bytes(failing[1].job_id))
        assert await ids_in(s, W) == [failing[0].job_id, failing[1].job_id]
        removed = await s.do(ops.RemoveJobsBatch(Q, X, 10, bound, None))
        assert removed == Batch(3, False, keys.job_uuid_bytes(delayed[2].job_id))
        assert await counts(s) == {W: 2, F: 1, D: 1}
        assert await s.do(ops.RemoveJobsBatch(Q, X, 10, bound, None)) == Batch(0, False, None)

    run_on(storage_target, body)


def test_retention_prunes_the_earliest_finished_beyond_count_and_age(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    batch = [jobs.new() for _ in range(4)]
    config = QueueConfig(completed_max_count=2, failed_max_age_ms=1_000)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, batch))
        await take(s, 4)
        for n, job in enumerate(batch):
            await s.do(ops.Complete(job.job_id, f"d{n}", None, 10_000 - n, 10))  # last first
        await s.do(ops.Enqueue(gone := jobs.new()))
        await s.do(ops.CancelJob(gone.job_id, "r", 8_000))  # kept as failed ones are
        first = await s.do(ops.PruneFinished(Q, config, 9_500, 1))
        assert (first.removed, first.more) == (1, True)
        assert nonzero(first.counts) == {C: 1}
        rest = await s.do(ops.PruneFinished(Q, config, 9_500, 10))
        assert (rest.removed, rest.more, nonzero(rest.counts)) == (2, False, {C: 1, X: 1})
        assert await ids_in(s, C) == [batch[0].job_id, batch[1].job_id]
        assert await counts(s) == {C: 2}

    run_on(storage_target, body)


# -- groups ---------------------------------------------------------------------------------


def test_groups_take_turns_within_their_limit(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    a1, a2, a3 = (jobs.new(group="a") for _ in range(3))
    b1 = jobs.new(group="b", priority=9)
    u1, u2 = jobs.new(), jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue(group_concurrency_limit=2)))
        await s.do(ops.EnqueueMany(Q, [a1, a2, a3, b1, u1, u2]))
        first = await take(s, 3)
        assert [j.job_id for j in first.jobs] == [u1.job_id, a1.job_id, b1.job_id]
        assert (first.waiting_left, first.blocked) == (3, 0)
        second = await take(s, 5, tag="e")
        assert [j.job_id for j in second.jobs] == [u2.job_id, a2.job_id]
        assert (second.waiting_left, second.blocked) == (0, 1)  # a3: its group is full
        assert (await s.reads.group_active(Q, "a"), await s.reads.group_active(Q, "b"),
                await s.reads.group_active(Q, "c")) == (2, 1, 0)
        assert await take(s, 1, tag="f") == Taken([], 0, 1)
        assert await ids_in(s, W) == [a3.job_id]
        # Raising the limit frees the parked group at once.
        await s.do(ops.SetQueueConfig(Q, QueueConfig(group_concurrency_limit=3)))
        third = await take(s, 2, tag="g")
        assert [j.job_id for j in third.jobs] == [a3.job_id] and third.blocked == 0
        for job, delivery in ((a1, "d1"), (a2, "e1"), (a3, "g0"), (b1, "d2")):
            await s.do(ops.Complete(job.job_id, delivery, None, 6_000, 10))
        assert (await s.reads.group_active(Q, "a"), await s.reads.group_active(Q, "b")) == (0, 0)
        assert await counts(s) == {A: 2, C: 4}

    run_on(storage_target, body)


def test_a_full_group_waits_for_its_own_job_to_end(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    a1, a2 = jobs.new(group="a"), jobs.new(group="a", priority=9)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue(group_concurrency_limit=1)))
        await s.do(ops.EnqueueMany(Q, [a1, a2]))
        (first,) = (await take(s, 2)).jobs
        assert first.job_id == a2.job_id  # within a group, the highest priority first
        assert await take(s, 1, tag="e") == Taken([], 0, 1)
        await s.do(ops.EndAttempt(a2.job_id, "d0", AttemptOutcome.WITHDRAWN, 6_000, None))
        # Back to waiting: the group has room again, and its best job is a2 again.
        again = await take(s, 1, tag="f")
        assert [j.job_id for j in again.jobs] == [a2.job_id] and again.blocked == 1
        await s.do(ops.Complete(a2.job_id, "f0", None, 6_100, 10))
        assert [j.job_id for j in (await take(s, 1, tag="g")).jobs] == [a1.job_id]
        await s.do(ops.RemoveJob(a2.job_id))
        assert await s.reads.group_active(Q, "a") == 1

    run_on(storage_target, body)


# -- unique keys ----------------------------------------------------------------------------


def test_a_unique_key_held_until_finish_answers_with_its_holder(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    key: dict[str, Any] = {"unique_key": "k", "unique_scope": UniqueScope.FINISH}
    holder, dup, other_key = jobs.new(**key), jobs.new(**key), jobs.new(unique_key="j",
                                                                         unique_scope=2)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        assert await s.do(ops.Enqueue(holder)) == holder.job_id
        assert await s.do(ops.Enqueue(dup)) == holder.job_id
        assert await s.reads.get_job(dup.job_id) is None
        many = [jobs.new(**key), other_key, jobs.new(unique_key="j", unique_scope=2)]
        assert await s.do(ops.EnqueueMany(Q, many)) == [holder.job_id, other_key.job_id,
                                                       other_key.job_id]
        assert await counts(s) == {W: 2}
        await take(s, 1)  # still held while it runs
        assert await s.do(ops.Enqueue(jobs.new(**key))) == holder.job_id
        await s.do(ops.Complete(holder.job_id, "d0", None, 6_000, 10))
        after = jobs.new(**key)
        assert await s.do(ops.Enqueue(after)) == after.job_id
        await s.do(ops.RemoveJob(after.job_id))  # removal lets go too
        again = jobs.new(**key)
        assert await s.do(ops.Enqueue(again)) == again.job_id

    run_on(storage_target, body)


def test_a_unique_key_held_until_start_or_for_a_duration(storage_target: StorageTarget) -> None:
    jobs = Jobs(start_ms=10_000)
    start: dict[str, Any] = {"unique_key": "s", "unique_scope": UniqueScope.START}
    first = jobs.new(**start)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(first))
        assert await s.do(ops.Enqueue(jobs.new(**start))) == first.job_id
        await take(s, 1)
        second = jobs.new(**start)
        assert await s.do(ops.Enqueue(second)) == second.job_id  # the holder has started
        # A duration: held until it ends (whatever the job does), or the job is cancelled.
        ttl = jobs.new(unique_key="t", unique_scope=UniqueScope.TTL,
                       unique_expires_at_ms=jobs.now + 100)
        assert await s.do(ops.Enqueue(ttl)) == ttl.job_id
        await s.do(ops.RemoveJob(second.job_id))
        assert await s.do(ops.Enqueue(jobs.new(unique_key="t", unique_scope=3,
                                               unique_expires_at_ms=jobs.now + 100))) \
            == ttl.job_id
        jobs.now += 100  # created when the duration has run out
        fresh = jobs.new(unique_key="t", unique_scope=3, unique_expires_at_ms=jobs.now + 100)
        assert await s.do(ops.Enqueue(fresh)) == fresh.job_id
        # The expired holder lets go later: it must not free its successor's key.
        await s.do(ops.CancelJob(ttl.job_id, "r", jobs.now))
        assert await s.do(ops.Enqueue(jobs.new(unique_key="t", unique_scope=3,
                                               unique_expires_at_ms=jobs.now + 100))) \
            == fresh.job_id
        await s.do(ops.CancelJob(fresh.job_id, "r", jobs.now))
        last = jobs.new(unique_key="t", unique_scope=3, unique_expires_at_ms=jobs.now + 100)
        assert await s.do(ops.Enqueue(last)) == last.job_id

    run_on(storage_target, body)


# -- schedules and users --------------------------------------------------------------------


def schedule(name: str, queue_name: str = Q, *, counted_from_ms: int = 1_000) -> ScheduleRecord:
    return ScheduleRecord(name, queue_name, "* * * * *", "UTC",
                          ScheduleJob(b"\x01", None, None, None, None), MissedPolicy.SKIP,
                          False, None, counted_from_ms, counted_from_ms)


def test_schedules_put_pause_remove_and_fire_each_occurrence_once(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()

    async def body(s: Storage) -> None:
        assert await s.refused(ops.PutSchedule(schedule("a"))) == ErrorCode.QUEUE_NOT_FOUND
        await s.do(ops.AddQueue(queue()))
        assert await s.do(ops.PutSchedule(schedule("b"))) == schedule("b")
        assert await s.do(ops.PutSchedule(schedule("a"))) == schedule("a")
        job = jobs.new()
        assert await s.do(ops.FireSchedule("a", 60_000, job)) == job.job_id
        assert await s.do(ops.FireSchedule("a", 60_000, jobs.new())) is None  # done already
        assert await s.do(ops.FireSchedule("a", 1_000, jobs.new())) is None  # not counted
        assert await counts(s) == {W: 1} and await s.reads.get_job(job.job_id) == job
        # A replacement keeps the last fire and the creation time.
        replaced = await s.do(ops.PutSchedule(schedule("a", counted_from_ms=2_000)))
        assert (replaced.last_fire_ms, replaced.created_at_ms, replaced.counted_from_ms) == (
            60_000, 1_000, 2_000)
        paused = await s.do(ops.SetSchedulePaused("a", True, 70_000))
        assert paused.paused and await s.do(ops.FireSchedule("a", 120_000, jobs.new())) is None
        resumed = await s.do(ops.SetSchedulePaused("a", False, 130_000))
        assert (resumed.paused, resumed.counted_from_ms) == (False, 130_000)
        assert await s.do(ops.FireSchedule("a", 120_000, jobs.new())) is None  # before resume
        assert await s.reads.load_schedules(10) == [resumed, schedule("b")]
        assert await s.reads.load_schedules(1) == [resumed]
        await s.do(ops.RemoveSchedule("b"))
        for op in (ops.RemoveSchedule("b"), ops.SetSchedulePaused("b", True, 1)):
            assert await s.refused(op) == ErrorCode.SCHEDULE_NOT_FOUND
        assert await s.do(ops.FireSchedule("b", 180_000, jobs.new())) is None
        assert await s.reads.load_schedules(10) == [resumed] and await counts(s) == {W: 1}

    run_on(storage_target, body)


def user(name: str, *permissions: str) -> UserRecord:
    return UserRecord(name, Credentials(b"s" * 16, 4096, b"k" * 32, b"v" * 32),
                      frozenset(Permission(Verb(p.split(":")[0]), p.split(":")[1])
                                for p in permissions), 5)


def test_users_add_permissions_remove_and_the_secret(storage_target: StorageTarget) -> None:
    async def body(s: Storage) -> None:
        assert await s.reads.load_users() == ([], None)
        await s.do(ops.AddUser(encode_user(user("ann", "read:*")), b"1" * 32))
        await s.do(ops.AddUser(encode_user(user("bob")), b"2" * 32))
        assert await s.refused(ops.AddUser(encode_user(user("ann")), b"3" * 32)) \
            == ErrorCode.USER_EXISTS
        await s.do(ops.SetUserPermissions("bob", ["produce:jobs-*", "admin:*"]))
        users, secret = await s.reads.load_users()
        assert secret == b"1" * 32  # stored with the first user, never replaced
        assert users == [user("ann", "read:*"), user("bob", "produce:jobs-*", "admin:*")]
        await s.do(ops.RemoveUser("ann"))
        for op in (ops.RemoveUser("ann"), ops.SetUserPermissions("ann", [])):
            assert await s.refused(op) == ErrorCode.USER_NOT_FOUND
        assert [u.name for u in (await s.reads.load_users())[0]] == ["bob"]

    run_on(storage_target, body)


# -- reads ----------------------------------------------------------------------------------


def test_list_jobs_pages_by_offset_and_after_through_every_kind_of_waiting_job(
        storage_target: StorageTarget) -> None:
    """`waiting` lists by priority, then ungrouped before grouped, oldest first; a page that
    goes on `after` a job continues right behind it, whatever kind of job it is."""
    jobs = Jobs()
    u1, u2, g1, hi, g2 = (jobs.new(), jobs.new(), jobs.new(group="a"), jobs.new(priority=9),
                          jobs.new(group="a"))
    order = [hi, u1, u2, g1, g2]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [u1, u2, g1, hi, g2]))
        page, cut, more = await s.reads.list_jobs(Q, W, 0, 2, MB)
        assert ([j.job_id for j in page], cut, more) == ([hi.job_id, u1.job_id], False, True)
        page, cut, more = await s.reads.list_jobs(Q, W, 3, 5, MB)
        assert ([j.job_id for j in page], more) == ([g1.job_id, g2.job_id], False)
        seen: list[str] = []
        after: bytes | None = None
        for _ in range(len(order)):  # bounded: a page that restarts would loop for ever
            page, cut, more = await s.reads.list_jobs(Q, W, 0, 1, MB, after)
            seen += [j.job_id for j in page]
            if not more:
                break
            after = keys.job_uuid_bytes(page[-1].job_id)
        assert seen == [j.job_id for j in order]
        # Cut short by size: at least one job, then only what fits.
        page, cut, more = await s.reads.list_jobs(Q, W, 0, 5, 1)
        assert (len(page), cut, more) == (1, True, True)

    run_on(storage_target, body)


def test_list_task_jobs_reads_at_most_its_bound_and_says_where_to_go_on(
        storage_target: StorageTarget) -> None:
    jobs = Jobs()
    batch = [jobs.new(task=t) for t in ("mail", "sms", "sms", "mail", "sms", "mail")]
    mail = [j.job_id for j in batch if j.task == "mail"]

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, batch))
        found, cut, go_on = await s.reads.list_task_jobs(Q, W, "mail", 10, MB, 3)
        assert ([j.job_id for j in found], cut, go_on) == (mail[:1], False, batch[2].job_id)
        assert go_on is not None
        found, cut, go_on = await s.reads.list_task_jobs(
            Q, W, "mail", 1, MB, 10, keys.job_uuid_bytes(go_on))
        assert ([j.job_id for j in found], go_on) == (mail[1:2], mail[1])
        assert go_on is not None
        found, cut, go_on = await s.reads.list_task_jobs(
            Q, W, "mail", 5, MB, 10, keys.job_uuid_bytes(go_on))
        assert ([j.job_id for j in found], go_on) == (mail[2:], None)
        assert await s.reads.list_task_jobs(Q, D, "mail", 5, MB, 10) == ([], False, None)

    run_on(storage_target, body)


def test_oldest_created_looks_at_every_priority_and_group(storage_target: StorageTarget) -> None:
    jobs = Jobs()
    grouped, low, high = jobs.new(group="a", priority=1), jobs.new(priority=1), jobs.new()
    delayed = jobs.new(D, start_ms=50_000)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.EnqueueMany(Q, [high, low, grouped, delayed]))
        assert await s.reads.oldest_created_ms(Q, W) == grouped.created_at_ms
        await s.do(ops.RemoveJob(grouped.job_id))
        assert await s.reads.oldest_created_ms(Q, W) == low.created_at_ms
        assert await s.reads.oldest_created_ms(Q, D) == delayed.created_at_ms
        assert await s.reads.oldest_created_ms(Q, A) is None
        assert await s.reads.oldest_created_ms("other", W) is None

    run_on(storage_target, body)
