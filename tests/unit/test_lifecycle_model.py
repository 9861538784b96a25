"""A stateful model test of the job lifecycle, driving the real broker in-process.

Real `Store` (LMDB in a temporary directory), real `Writer` thread, real `Broker`, with a
manual clock and `ModelPeer`, a small implementation of the broker's `Peer` protocol (its
documented seam to connections) that keeps the frames sent to it. Hypothesis runs random
sequences of: adding queues, enqueuing (now or later, with priorities, unique keys of
each scope and groups), subscribing, credits, ACK, JOBBEAT,
COMPLETE, FAIL, RELEASE, RETRY, CANCEL (of jobs in every status), BULK (retry, remove,
cancel, in small batches), RMJOB, outcomes for stale, foreign and fenced deliveries, time
passing (acknowledgement timeouts, leases, stale workers, backoffs, retention, schedule
fires), disconnects, PAUSE/RESUME, SETQUEUE, CLEARQUEUE, OBLITERATE (forced or not, the name
added again), cron schedules (ADDSCHEDULE of a new name or again with another expression,
zone, policy, queue and job options; PAUSESCHEDULE, RESUMESCHEDULE, RMSCHEDULE, also raced
against a tick's fires; refusals for a missing queue, a missing schedule, one too many) and
restarts after a downtime. A plain model (job id -> status and attempts; schedule -> its
record and next run) predicts every step from PROTOCOL.md sections 5 to 7 and
docs/scheduling.md; it reads the cron expressions itself (local seconds and minutes, in UTC,
Europe/Berlin and Asia/Kathmandu), not with cronsim.

After every step, once the writer has drained: the counters equal the job records of each
status and the `by_status` index entries; `by_time` holds exactly one entry per delayed job
and `by_finish` one per finished job; no index entry names a missing record; nothing of a
removed queue is left (record, jobs, index entries, counters, subscriptions); the settings
stored and in force are the model's; the in-memory deliveries are exactly the active
records; no queue dispatches at or above its concurrency limit (a lowered limit only
drains); credits add up; no queue with waiting jobs has an idle subscription with credit
and a free slot; and the model's statuses, attempts, finish times and outcome histories
agree with the records (no job lost). Unique keys: the store's `unique` table holds exactly
the model's holders (one job per key), and a held key makes ENQUEUE a duplicate that adds
nothing. Groups: the group tables hold each live group's waiting and active counts, its
place (in turn, parked at its limit, idle) and its waiting jobs; no group has more active
jobs than its limit (a lowered one only drains); no job of a group below its limit waits
beside an idle subscription with credit. After every heartbeat tick, each queue's retention
limits hold. Schedules: each tick fires every occurrence due since the last fire (or the
add, the resume), in order, each exactly once, as one job with the schedule's payload and
options (`waiting`, or `new` in a paused queue); a schedule whose queue is gone is paused
instead; a start applies the missed policy (`skip`: none, `once`: the latest). A ledger
(schedule, occurrence) -> job checks no occurrence fires twice, across restarts too, and that
each fire made exactly one job and nothing else did. After every step, the stored schedules
(`load_schedules`) and those in force (with their next runs) are the model's, and the fires
counted since the start are the ledger's.
"""

import asyncio
import contextlib
import dataclasses
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from overhop.broker import job_actions, queue_admin
from overhop.broker.events import (
    CancelRequested,
    JobAssigned,
    JobFinished,
    SubscriptionEnded,
    WorkerControlled,
)
from overhop.broker.service import Broker, BulkAction, EnqueueRequest, ScheduleRequest
from overhop.broker.workers import Worker
from overhop.config.schema import Config
from overhop.errors import DeferredRefusal, ErrorCode, RequestError
from overhop.model.jobs import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_FAIR_SHARE,
    AttemptOutcome,
    JobRecord,
    JobStatus,
    priority_rank,
)
from overhop.model.queues import QueueConfig, QueueState
from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.model.uniqueness import UniqueScope, holds_key
from overhop.server.pushes import (
    encode_abort,
    encode_control,
    encode_quest,
    encode_result,
    encode_subend,
)
from overhop.storage import group_index
from overhop.storage import operations as job_ops
from overhop.storage.keys import GROUPED_RANK, UNIQUE_HOLDER, job_id_from
from overhop.storage.records import decode_job
from overhop.storage.schedule_records import load_schedules
from overhop.storage.store import Store
from overhop.storage.writer import Writer

START_MS = 1_700_000_000_000
ACK_TIMEOUT_MS = 1000
LEASE_MS = 2000
RETRY_MS = 500
STALE_MS = 5000
DEFAULT_MAX_ATTEMPTS = 3
QUEST = 106
SUBEND = 108
ABORT = 111
QUEUE_NAMES = ("q0", "q1", "q2")
MAX_QUEUES = len(QUEUE_NAMES)
MAX_WORKERS = 4
MAX_JOBS = 40
MAX_RESTARTS = 2
ACTIONS = ("ack", "jobbeat", "complete", "fail", "release")
U64 = struct.Struct(">Q")
# Clock steps: below every timeout, past the ack timeout, past a lease, past staleness.
CLOCK_STEPS = (100, 600, 1100, 2100, 5100)
CLEARABLE = ("new", "waiting", "delayed")
FINISHED = ("completed", "failed", "cancelled")
# Retention's statuses and the settings each follows (cancelled jobs: the failed ones).
RETAINED = (("completed", "completed"), ("failed", "failed"), ("cancelled", "failed"))
BULK_STATUSES = {"retry": ("failed",), "remove": ("completed", "failed", "cancelled"),
                 "cancel": ("new", "waiting", "delayed")}
# Queue settings for ADDQUEUE and SETQUEUE (nil clears one).
SETTING_VALUES = {
    "concurrency_limit": st.sampled_from([None, 1, 2, 3]),
    "max_attempts": st.sampled_from([None, 1, 2, 4]),
    "retry_interval_ms": st.sampled_from([None, 1, 200, 1500]),
    "lease_ms": st.sampled_from([None, 700, 3000]),
    "completed_max_count": st.sampled_from([None, 0, 1, 2]),
    "completed_max_age_ms": st.sampled_from([None, 0, 1000, 4000]),
    "failed_max_count": st.sampled_from([None, 0, 1, 2]),
    "failed_max_age_ms": st.sampled_from([None, 0, 1000, 4000]),
    "group_concurrency_limit": st.sampled_from([None, 1, 2]),
}
SETTINGS = st.fixed_dictionaries({}, optional=SETTING_VALUES)
# SETQUEUE names at least one setting.
CHANGES = st.sampled_from(sorted(SETTING_VALUES)).flatmap(
    lambda key: st.fixed_dictionaries({key: SETTING_VALUES[key]}, optional={
        k: v for k, v in SETTING_VALUES.items() if k != key}))
# Schedules: three names, at most two at once (schedules.max_schedules), so that a third
# is refused.
SCHEDULE_NAMES = ("s0", "s1", "s2")
MAX_SCHEDULES = 2
ANY = frozenset(range(60))
# Cron expressions as sent, and the local seconds and minutes they fire at (the model's
# own reading of them, not cronsim's). One has a run of spaces: it is stored with one.
CRONS: dict[str, tuple[frozenset[int], frozenset[int]]] = {
    "* * * * * *": (ANY, ANY),  # every second
    "*/2 * * * * *": (frozenset(range(0, 60, 2)), ANY),
    "*/7  * * * * *": (frozenset(range(0, 60, 7)), ANY),  # 0, 7, ... 56: 4 s across :00
    "* * * * *": (frozenset({0}), ANY),  # five fields: every minute
    "*/2 * * * *": (frozenset({0}), frozenset(range(0, 60, 2))),
}
# None: the default (UTC). Berlin has daylight saving time (none near the model's clock);
# Kathmandu is 5:45 ahead, so its even minutes are odd ones in UTC.
ZONES = (None, "UTC", "Europe/Berlin", "Asia/Kathmandu")
# Time passing for schedules: up to 30 s (at most 90 fires a step, below FIRE_BATCH).
SCHEDULE_STEPS = (1000, 2000, 7000, 30_000)
# Downtime of a restart: none to speak of, or long enough to miss occurrences.
DOWNTIMES = (1, 1500, 61_000)
# `once` first: `skip` is the default, and the policy shows only at a start.
POLICIES = (MissedPolicy.ONCE, MissedPolicy.SKIP)
# A scheduled job's payload names the ADDSCHEDULE that made it: above every ENQUEUE's.
SCHEDULE_PAYLOAD = 2**41
SCHEDULE_JOBS = st.fixed_dictionaries({
    "max_attempts": st.sampled_from([None, None, 1, 4]),
    "retry_interval_ms": st.sampled_from([None, None, 1, 1500]),
    "lease_ms": st.sampled_from([None, None, 700, 3000]),
    "task": st.sampled_from([None, "report"]),
    "priority": st.sampled_from([None, MIN_PRIORITY, MAX_PRIORITY]),
})
SCHEDULE_JOBS_KEYS = ("max_attempts", "retry_interval_ms", "lease_ms", "task", "priority")
# What a schedule change raced against a tick's fires does (None: no change).
RACES = (None, None, "pause", "resume", "remove", "replace")


def model_config() -> Config:
    config = Config()
    return dataclasses.replace(
        config,
        dispatch=dataclasses.replace(config.dispatch, ack_timeout_ms=ACK_TIMEOUT_MS),
        jobs=dataclasses.replace(config.jobs, default_lease_ms=LEASE_MS,
                                 default_retry_interval_ms=RETRY_MS,
                                 default_max_attempts=DEFAULT_MAX_ATTEMPTS,
                                 max_error_history=1000),
        worker=dataclasses.replace(config.worker, stale_after_ms=STALE_MS),
        schedules=dataclasses.replace(config.schedules, max_schedules=MAX_SCHEDULES),
    )


class ModelPeer:
    """The broker's view of a connection: frames are kept, QUESTs decoded on demand."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.frames: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes) -> None:
        assert not self.closed, "a frame was sent to a closed peer"
        self.frames.append(frame)

    def job_assigned(self, event: JobAssigned) -> None:
        self.send(encode_quest(event))

    def subscription_ended(self, event: SubscriptionEnded) -> None:
        self.send(encode_subend(event))

    def job_finished(self, event: JobFinished) -> None:
        self.send(encode_result(event))  # the model never watches: take_pushes refuses it

    def worker_controlled(self, event: WorkerControlled) -> None:
        self.send(encode_control(event))  # the model sends no WORKERCTL: take_pushes refuses it

    def cancel_requested(self, event: CancelRequested) -> None:
        self.send(encode_abort(event))

    @property
    def writable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True

    def take_pushes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                   list[dict[str, Any]]]:
        """The payloads of the QUESTs, SUBENDs and ABORTs sent since the last call."""
        quests: list[dict[str, Any]] = []
        subends: list[dict[str, Any]] = []
        aborts: list[dict[str, Any]] = []
        for frame in self.frames:
            (length,) = struct.unpack(">I", frame[:4])
            assert len(frame) == 4 + length
            envelope = msgpack.unpackb(frame[4:], raw=False)
            assert envelope["v"] == 2 and envelope["rid"] == "0", envelope
            assert envelope["t"] in (QUEST, SUBEND, ABORT), envelope
            {QUEST: quests, SUBEND: subends, ABORT: aborts}[envelope["t"]].append(envelope["p"])
        self.frames.clear()
        return quests, subends, aborts


@dataclass
class MQueue:
    config: QueueConfig
    paused: bool = False
    # The most jobs the queue may have out now: its limit, or, after SETQUEUE lowered the
    # limit below the jobs already out, those jobs (never more) until they drain below it.
    ceiling: int | None = None
    # A job with a group was enqueued: groups take turns, dispatch order is checked per
    # group rather than queue-wide.
    grouped: bool = False
    # The same as `ceiling`, per group, for the queue's group limit.
    group_ceilings: dict[str, int] = field(default_factory=dict)

    @property
    def limit(self) -> int | None:
        return self.config.concurrency_limit

    @property
    def retry_ms(self) -> int:
        return self.config.retry_interval_ms or RETRY_MS

    @property
    def lease_ms(self) -> int:
        return self.config.lease_ms or LEASE_MS


@dataclass
class MJob:
    jid: str
    queue: str
    payload: int
    status: str
    start_ms: int
    max_attempts: int | None = None  # the job's own override
    priority: int | None = None  # ENQUEUE's, None: the default
    attempts: int = 0
    finished_ms: int | None = None
    outcomes: list[str] = field(default_factory=list)  # every ended delivery but withdrawn
    cancel_reason: str | None = None  # CANCEL's: on a cancelled job, or an active one
    group: str | None = None
    unique: tuple[str, int, int | None] | None = None  # key, scope, duration's end
    retry_ms: int | None = None  # the job's own retry interval and lease (a schedule's)
    lease_ms: int | None = None
    task: str | None = None


@dataclass
class MSchedule:
    """A schedule as the model knows it: its record's fields and its next run."""

    name: str
    queue: str
    cron: str  # as sent (a key of CRONS)
    zone: str | None
    payload: int
    job: dict[str, Any]  # ScheduleJob's options but the payload
    missed: MissedPolicy
    counted_from: int
    created_at: int
    paused: bool = False
    last_fire: int | None = None
    next_run: int | None = None
    # Occurrences up to this the running process dealt with: fired, or passed over at its
    # start (`skip` is not stored: the record still counts from its add or last fire).
    passed: int = 0

    @property
    def fired_up_to(self) -> int:
        return max(self.counted_from, self.last_fire or 0)

    def record(self) -> ScheduleRecord:
        job = ScheduleJob(msgpack.packb(self.payload), self.job["max_attempts"],
                          self.job["retry_interval_ms"], self.job["lease_ms"], None,
                          self.job["task"], self.job["priority"])
        return ScheduleRecord(self.name, self.queue, " ".join(self.cron.split()),
                              self.zone or "UTC", job, self.missed, self.paused,
                              self.last_fire, self.counted_from, self.created_at)

    def occurrences(self, after_ms: int, until_ms: int) -> list[int]:
        """Its occurrences in (after_ms, until_ms]: the whole seconds whose local second
        and minute the expression names."""
        seconds, minutes = CRONS[self.cron]
        zone = ZoneInfo(self.zone or "UTC")
        found = []
        for second in range(after_ms // 1000 + 1, until_ms // 1000 + 1):
            local = datetime.fromtimestamp(second, zone)
            if local.second in seconds and local.minute in minutes:
                found.append(second * 1000)
        return found

    def next_after(self, after_ms: int) -> int:
        """Its first occurrence after `after_ms` (every expression fires within 2 min)."""
        return self.occurrences(after_ms, after_ms + 121_000)[0]


@dataclass
class MWorker:
    key: int
    worker: Worker
    peer: ModelPeer
    last_seen_ms: int
    sids: dict[str, str] = field(default_factory=dict)  # queue -> sid (live)
    credits: dict[str, int] = field(default_factory=dict)  # queue -> credits left


@dataclass
class MDelivery:
    did: str
    jid: str
    queue: str
    worker_key: int
    ack_deadline_ms: int
    lease_ms: int
    acked: bool = False
    lease_deadline_ms: int = 0


def pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)]


@contextlib.contextmanager
def control_batch(size: int) -> Iterator[None]:
    """CLEARQUEUE and OBLITERATE remove jobs in steps of `size` (the server's is 500):
    with small steps, other commits (a pipelined ENQUEUE) go between the steps, as they
    do for a big queue."""
    saved = queue_admin.CONTROL_BATCH
    queue_admin.CONTROL_BATCH = size
    try:
        yield
    finally:
        queue_admin.CONTROL_BATCH = saved


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # An exception in a callback of the broker (a commit's follow-up) would otherwise
        # only be logged, and leave the step waiting forever for a reply: it fails the step.
        self.loop_errors: list[dict[str, Any]] = []
        self.waiter: asyncio.Future[None] | None = None
        self.loop.set_exception_handler(self._loop_error)
        self.path = Path(tempfile.mkdtemp(prefix="overhop-model-"))
        self.now = START_MS
        self.config = model_config()
        self.queues: dict[str, MQueue] = {}
        self.jobs: dict[str, MJob] = {}
        self.workers: dict[int, MWorker] = {}
        self.deliveries: dict[str, MDelivery] = {}
        self.ended: list[tuple[str, str]] = []  # (did, jid) of deliveries that are over
        # (did, jid, holder key or None) of deliveries whose job was deleted (cleared,
        # pruned, obliterated; fenced by a forced OBLITERATE): outcomes find nothing.
        self.vanished: list[tuple[str, str, int | None]] = []
        # Worker key -> the SUBEND payloads its peer must have received by the next check.
        self.subends_due: dict[int, list[dict[str, Any]]] = {}
        # Worker key -> the ABORT payloads its peer must have received by the next check.
        self.aborts_due: dict[int, list[dict[str, Any]]] = {}
        self.next_worker = 0
        self.restarts = 0
        # (queue, unique key) -> (holder job id, scope, duration's end or 0): the store's
        # `unique` table as it must be.
        self.held: dict[tuple[str, str], tuple[str, int, int]] = {}
        self.schedules: dict[str, MSchedule] = {}
        # The ledger: (schedule, occurrence) -> the one job its fire enqueued.
        self.fired: dict[tuple[str, int], str] = {}
        # Per schedule, the fires since the process started (the tally's count).
        self.fires_since_boot: Counter[str] = Counter()
        self.schedule_serial = 0
        self._open()

    # -- plumbing ------------------------------------------------------------------------

    def _open(self) -> None:
        self.store = Store(self.path, map_size=32 * 1024 * 1024, sync=False)
        self.writer = Writer(self.store, self.loop, sync=False, max_batch=1024,
                             max_map_size=1024 * 1024 * 1024, reserved_headroom=0,
                             jobs=self.config.jobs)
        self.loop.run_until_complete(self.writer.start())
        self.broker = Broker(self.config, self.store, self.writer, lambda: self.now)
        self.run(self._settled(self.broker.boot()))

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.writer.stop())
            self.store.close()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.path, ignore_errors=True)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(AssertionError(
                f"error in an event-loop callback: {context.get('message')} "
                f"{context.get('exception')!r}"))

    def run(self, awaitable: Any) -> Any:
        """Run to completion in the loop, unless a loop callback fails first."""

        async def guarded() -> Any:
            self.waiter = self.loop.create_future()
            task = asyncio.ensure_future(awaitable)
            try:
                await asyncio.wait({task, self.waiter}, return_when=asyncio.FIRST_COMPLETED)
                if self.waiter.done():
                    task.cancel()
                    self.waiter.result()
                return task.result()
            finally:
                self.waiter = None

        return self.loop.run_until_complete(guarded())

    async def _drain(self) -> None:
        """Until a no-op write commits alone: nothing else was pending, and every callback
        of earlier commits (which may submit more) has run."""
        for _ in range(200):
            before = self.writer.operations
            await self.writer.submit(job_ops.Barrier()).durable
            if self.writer.operations == before + 1 and self.broker.quiet():
                return
        raise AssertionError("the writer never went quiet")

    async def _settle(self) -> None:
        """Drain, then do what the heartbeat's wake-up for due jobs would do at `now`."""
        await self._drain()
        for _ in range(20):
            due = self.broker.next_due_ms()
            if due is None or due > self.now:
                return
            self.broker.promote_due_queues(self.now)
            await self._drain()
        raise AssertionError(f"a queue stays due at {self.broker.next_due_ms()}")

    async def _settled(self, awaitable: Any) -> Any:
        result = await awaitable
        await self._settle()
        return result

    def call(self, action: Callable[[], Any]) -> Any:
        """Run one broker call (awaiting what it returns) in the loop, then settle."""

        async def go() -> Any:
            result = action()
            if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                result = await result
            await self._settle()
            return result

        return self.run(go())

    def refused(self, code: ErrorCode, action: Callable[[], Any]) -> None:
        async def go() -> None:
            try:
                try:
                    result = action()
                except DeferredRefusal as deferred:  # the refusal takes a storage read
                    result = deferred.decide()
                if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                    await result
            except RequestError as exc:
                assert exc.code == code, (exc.code, code, exc.message)
            else:
                raise AssertionError(f"expected {code}")
            await self._settle()

        self.run(go())

    def seen(self, mw: MWorker) -> None:
        """A message from this worker: what the connection records for staleness."""
        mw.worker.last_seen_ms = self.now
        mw.last_seen_ms = self.now

    # -- model transitions ---------------------------------------------------------------

    def end(self, delivery: MDelivery, outcome: str) -> None:
        """An attempt ended without COMPLETE: the job retries, waits again or fails."""
        del self.deliveries[delivery.did]
        self.ended.append((delivery.did, delivery.jid))
        job = self.jobs[delivery.jid]
        assert job.status == "active"
        if job.cancel_reason is not None:  # CANCELled while out: whatever the outcome
            job.status = "cancelled"
            job.finished_ms = self.now
            job.attempts += outcome not in ("withdrawn", "released", "server_shutdown")
        elif outcome in ("withdrawn", "released", "server_shutdown"):
            job.status = "waiting"
        else:
            job.attempts += 1
            if job.attempts >= self.max_attempts(job):
                job.status = "failed"
                job.finished_ms = self.now
            else:
                job.status = "delayed"
                job.start_ms = self.now + (job.retry_ms or self.queues[job.queue].retry_ms)
        if outcome != "withdrawn":
            job.outcomes.append(outcome)

    def max_attempts(self, job: MJob) -> int:
        """In force now: the job's override, else its queue's setting, else the default."""
        return job.max_attempts or self.queues[job.queue].config.max_attempts or (
            DEFAULT_MAX_ATTEMPTS)

    def vanish(self, jids: list[str]) -> None:
        """These jobs were deleted: outcomes of their old deliveries now find nothing."""
        gone = set(jids)
        for jid in gone:
            job = self.jobs.pop(jid)
            assert job.status != "active" or all(d.jid != jid for d in self.deliveries.values())
        self.vanished.extend((did, jid, None) for did, jid in self.ended if jid in gone)
        self.ended = [(did, jid) for did, jid in self.ended if jid not in gone]

    def prune(self) -> None:
        """Retention at a tick: per queue and finished status, the earliest finished jobs
        (by finish time, then id) go while more than the count remain or while they
        finished at least the age ago."""
        for name, queue in self.queues.items():
            for status, kept_as in RETAINED:
                max_count = getattr(queue.config, f"{kept_as}_max_count")
                max_age = getattr(queue.config, f"{kept_as}_max_age_ms")
                finished = sorted((j.finished_ms or 0, j.jid) for j in self.jobs.values()
                                  if j.queue == name and j.status == status)
                excess = 0 if max_count is None else max(0, len(finished) - max_count)
                old = 0 if max_age is None else sum(
                    1 for at, _ in finished if at <= self.now - max_age)
                self.vanish([jid for _, jid in finished[:max(excess, old)]])

    def out(self, name: str) -> int:
        return sum(1 for d in self.deliveries.values() if d.queue == name)

    def worker_left(self, mw: MWorker, outcome: str) -> None:
        assert not mw.peer.frames, "a QUEST went to a worker that was leaving"
        del self.workers[mw.key]
        for delivery in [d for d in self.deliveries.values() if d.worker_key == mw.key]:
            self.end(delivery, outcome if delivery.acked else "withdrawn")

    def promote(self) -> None:
        for job in self.jobs.values():
            if (job.status == "delayed" and job.start_ms <= self.now
                    and not self.queues[job.queue].paused):
                job.status = "waiting"

    def take_quests(self, fifo: bool = False) -> None:
        """Record the QUESTs the step produced; each must be for a waiting job."""
        dispatched: dict[str, list[str]] = {}
        waiting_before = {name: sorted(j.jid for j in self.jobs.values()
                                       if j.queue == name and j.status == "waiting")
                          for name in self.queues}
        for mw in self.workers.values():
            quests, subends, aborts = mw.peer.take_pushes()
            assert subends == self.subends_due.pop(mw.key, []), (subends, mw.sids)
            assert aborts == self.aborts_due.pop(mw.key, []), aborts
            for quest in quests:
                job = self.jobs[quest["jid"]]
                assert job.status == "waiting", (quest, job)
                assert quest["q"] == job.queue
                assert quest["sid"] == mw.sids[job.queue], (quest, mw.sids)
                assert quest["attempt"] == job.attempts + 1
                assert quest["max_attempts"] == self.max_attempts(job)
                assert quest["lease_ms"] == (job.lease_ms or self.queues[job.queue].lease_ms)
                assert quest["ack_timeout_ms"] == ACK_TIMEOUT_MS
                assert quest["job_payload"] == job.payload
                assert quest["did"] not in self.deliveries
                assert all(quest["did"] != did for did, _ in self.ended)
                job.status = "active"
                mw.credits[job.queue] -= 1
                assert mw.credits[job.queue] >= 0
                self.deliveries[quest["did"]] = MDelivery(
                    quest["did"], job.jid, job.queue, mw.key, self.now + ACK_TIMEOUT_MS,
                    quest["lease_ms"])
                dispatched.setdefault(job.queue, []).append(job.jid)
        for workers in self.workers.values():
            assert not workers.peer.frames
        for name in dispatched:
            # A job starts only below the limit in force (also after it was lowered).
            limit = self.queues[name].limit
            assert limit is None or self.out(name) <= limit, (name, limit, dispatched)
        if fifo:
            # Nothing became waiting during the step: the jobs that went out are the first
            # by priority then age, but for the fair-share picks, each the oldest left.
            for name, jids in dispatched.items():
                if self.queues[name].grouped:
                    continue  # groups take turns: test_groups.py checks the order
                assert sorted(jids) == self.expected_dispatch(name, waiting_before[name],
                                                              len(jids)), (jids, waiting_before)

    def expected_dispatch(self, name: str, waiting: list[str], count: int) -> list[str]:
        """The `count` jobs a dispatch takes from `waiting` (job ids, oldest first)."""
        left = list(waiting)
        first = self.broker.queues[name].dispatched - count
        picks: list[str] = []
        for index in range(count):
            if (first + index) % PRIORITY_FAIR_SHARE == PRIORITY_FAIR_SHARE - 1:
                pick_ = left[0]
            else:
                pick_ = min(left, key=lambda jid: (-self.priority(jid), jid))
            left.remove(pick_)
            picks.append(pick_)
        return sorted(picks)

    def priority(self, jid: str) -> int:
        given = self.jobs[jid].priority
        return DEFAULT_PRIORITY if given is None else given

    def after_step(self, fifo: bool = False) -> None:
        self.promote()
        self.take_quests(fifo)
        self.let_go_of_keys()

    def let_go_of_keys(self) -> None:
        """Jobs that no longer hold their unique keys (or are gone) free them; a key once
        let go is never taken back by its job."""
        for where, (jid, scope, _) in list(self.held.items()):
            job = self.jobs.get(jid)
            if job is None or not holds_key(scope, JobStatus.parse(job.status)):
                del self.held[where]

    def holder(self, queue: str, key: str) -> str | None:
        held = self.held.get((queue, key))
        if held is None or (held[2] and held[2] <= self.now):
            return None
        return held[0]

    # -- rules: queues -------------------------------------------------------------------

    @initialize(settings=SETTINGS, workers=st.lists(st.integers(1, 4), min_size=1, max_size=3),
                jobs=st.integers(1, 6),
                schedule=st.none() | st.tuples(st.sampled_from(sorted(CRONS)),
                                               st.sampled_from(POLICIES)))
    def start(self, settings: dict[str, Any], workers: list[int], jobs: int,
              schedule: tuple[str, MissedPolicy] | None) -> None:
        """A queue (limits, attempts, retention...), workers subscribed to it with these
        credits, a few jobs, and maybe a schedule firing into it: most sequences then have
        deliveries to work on from their first step."""
        self._add_queue(QUEUE_NAMES[0], settings)
        for credits in workers:
            self.new_worker(0, credits)
        for n in range(jobs):
            self.enqueue(0, None, n, 1, None, None)
        if schedule is not None:
            cron, missed = schedule
            change, apply = self._schedule_put(SCHEDULE_NAMES[0], QUEUE_NAMES[0], cron, None,
                                               missed, {key: None for key in SCHEDULE_JOBS_KEYS})
            apply(self.call(change))
            self.after_step()

    def _add_queue(self, name: str, settings: dict[str, Any]) -> None:
        config = dataclasses.replace(QueueConfig(), **settings)
        record = self.call(lambda: self.broker.add_queue(name, config))
        assert record.name == name and record.state == QueueState.ACTIVE
        assert record.config == config
        # A new queue is empty, also when the name was obliterated just before.
        assert set(self.store.counts(name).values()) == {0}
        self.queues[name] = MQueue(config, ceiling=config.concurrency_limit)
        self.after_step()
        self.refused(ErrorCode.QUEUE_EXISTS,
                     lambda: self.broker.add_queue(name, QueueConfig()))

    @precondition(lambda self: len(self.queues) < MAX_QUEUES)
    @rule(settings=SETTINGS)
    def add_queue(self, settings: dict[str, Any]) -> None:
        self._add_queue(min(set(QUEUE_NAMES) - set(self.queues)), settings)

    @precondition(lambda self: self.queues)
    @rule(index=st.integers(0, 100), changes=CHANGES,
          around=st.none() | st.integers(-2, 1))
    def change_settings(self, index: int, changes: dict[str, Any], around: int | None) -> None:
        """SETQUEUE: in force at once (a raised limit dispatches), stored, merged.
        `around`: the concurrency limit is set to the jobs out now plus this (lowered
        below them, or just at or above)."""
        name = pick(sorted(self.queues), index)
        queue = self.queues[name]
        out = self.out(name)
        if around is not None and out:
            changes = {**changes, "concurrency_limit": max(1, out + around)}
        record = self.call(lambda: self.broker.change_settings(name, changes))
        queue.config = dataclasses.replace(queue.config, **changes)
        assert record.config == queue.config
        assert record.state == (QueueState.PAUSED if queue.paused else QueueState.ACTIVE)
        # Lowered below the jobs out: they keep running, no new one starts.
        queue.ceiling = None if queue.limit is None else max(queue.limit, out)
        self.after_step()

    @precondition(lambda self: self.queues)
    @rule(index=st.integers(0, 100), behind=st.sampled_from([None, 0, 300, 1500]),
          payload=st.integers(0, 2**20), batch=st.sampled_from([1, 2, 500]))
    def clear(self, index: int, behind: int | None, payload: int, batch: int) -> None:
        """CLEARQUEUE in steps of `batch` jobs, with (`behind` not None) an ENQUEUE
        pipelined right behind it, which must stay: only jobs that existed when CLEARQUEUE
        was handled go."""
        name = pick(sorted(self.queues), index)
        clearable = {status: [j.jid for j in self.jobs.values()
                              if j.queue == name and j.status == status]
                     for status in CLEARABLE}
        scheduled = None if not behind else self.now + behind
        request = EnqueueRequest(name, msgpack.packb(payload), scheduled, None, None, None)

        async def go() -> tuple[dict[JobStatus, int], str | None]:
            cleared = self.broker.clear_queue(name)
            added = None if behind is None else self.broker.enqueue(request)[1]
            removed = await cleared
            return removed, None if added is None else await added

        with control_batch(batch):
            removed, added_id = self.call(go)
        assert {status.label: n for status, n in removed.items()} == {
            status: len(jids) for status, jids in clearable.items()}, (removed, clearable)
        self.vanish([jid for jids in clearable.values() for jid in jids])
        if added_id is not None:
            start = self.now + (behind or 0)
            status = ("new" if self.queues[name].paused
                      else "waiting" if start <= self.now else "delayed")
            self.jobs[added_id] = MJob(added_id, name, payload, status, start)
        self.after_step()

    @precondition(lambda self: self.queues)
    @rule(index=st.integers(0, 100), force=st.booleans(), again=st.none() | SETTINGS,
          batch=st.sampled_from([1, 2, 500]))
    def obliterate(self, index: int, force: bool, again: dict[str, Any] | None,
                   batch: int) -> None:
        """OBLITERATE in steps of `batch` jobs; refused without force while the queue has
        jobs out. The queue is gone for every request handled after it; `again`: ADDQUEUE
        of the name after."""
        name = pick(sorted(self.queues), index)
        fenced = [d for d in self.deliveries.values() if d.queue == name]
        if fenced and not force:
            self.refused(ErrorCode.QUEUE_HAS_ACTIVE_JOBS,
                         lambda: self.broker.obliterate_queue(name, False))
            return
        jids = [j.jid for j in self.jobs.values() if j.queue == name]
        holders = {d.did: self.workers[d.worker_key].worker for d in fenced}
        request = EnqueueRequest(name, msgpack.packb(0), None, None, None, None)
        gone_for: list[tuple[ErrorCode, Callable[[], Any]]] = [
            (ErrorCode.QUEUE_NOT_FOUND, lambda: self.broker.enqueue(request)[1]),
            (ErrorCode.QUEUE_EXISTS,
             lambda: self.broker.add_queue(name, QueueConfig())),
            (ErrorCode.QUEUE_NOT_FOUND, lambda: self.broker.clear_queue(name)),
            (ErrorCode.QUEUE_NOT_FOUND,
             lambda: self.broker.change_settings(name, {"max_attempts": 1})),
            (ErrorCode.QUEUE_NOT_FOUND,
             lambda: self.broker.obliterate_queue(name, True)),
        ]
        gone_for += [(ErrorCode.QUEUE_NOT_FOUND,
                      lambda mw=mw: self.broker.subscribe(mw.worker, name, 1))
                     for mw in self.workers.values()]

        async def go() -> int:
            done = self.broker.obliterate_queue(name, force)
            for code, action in gone_for:
                try:
                    action()
                except RequestError as exc:
                    assert exc.code == code, (exc.code, code)
                else:
                    raise AssertionError(f"expected {code} right after OBLITERATE")
            for delivery in fenced:
                # Fenced at once: STALE while its job is still stored, NOT_FOUND after.
                try:
                    try:
                        self.broker.worker_delivery(holders[delivery.did], delivery.did,
                                                    delivery.jid)
                    except DeferredRefusal as deferred:  # which refusal takes a read
                        await deferred.decide()
                except RequestError as exc:
                    assert exc.code in (ErrorCode.DELIVERY_STALE,
                                        ErrorCode.DELIVERY_NOT_FOUND), exc.code
                else:
                    raise AssertionError("a fenced delivery is still current")
            return await done

        with control_batch(batch):
            removed = self.call(go)
        assert removed == len(jids)
        del self.queues[name]
        for delivery in fenced:
            del self.deliveries[delivery.did]
            self.vanished.append((delivery.did, delivery.jid, delivery.worker_key))
        self.vanish(jids)
        for mw in self.workers.values():
            # Its subscriptions ended, each worker told with a SUBEND: the sid is unknown
            # from now on.
            if name in mw.sids:
                sid = mw.sids.pop(name)
                self.subends_due.setdefault(mw.key, []).append(
                    {"sid": sid, "q": name, "reason": "queue_obliterated"})
                del mw.credits[name]
                self.refused(ErrorCode.SUBSCRIPTION_NOT_FOUND,
                             lambda mw=mw, sid=sid: self.broker.credit(mw.worker, sid, 1))
        self.after_step()
        if again is not None:
            self._add_queue(name, again)

    @precondition(lambda self: self.queues)
    @rule(index=st.integers(0, 100), twice=st.booleans())
    def pause_or_resume(self, index: int, twice: bool) -> None:
        """PAUSE an active queue or RESUME a paused one; `twice`: also the same again,
        which is refused."""
        name = pick(sorted(self.queues), index)
        if self.queues[name].paused:
            self._resume(name)
            if twice:
                self.refused(ErrorCode.QUEUE_NOT_PAUSED, lambda: self._set_state(name, True))
            return
        self.call(lambda: self._set_state(name, False))
        self.queues[name].paused = True
        self.after_step()
        if twice:
            self.refused(ErrorCode.QUEUE_ALREADY_PAUSED, lambda: self._set_state(name, False))

    def _set_state(self, name: str, active: bool) -> Any:
        state = QueueState.ACTIVE if active else QueueState.PAUSED
        return self.broker.set_queue_state(name, state)

    def _resume(self, name: str) -> None:
        self.call(lambda: self._set_state(name, True))
        self.queues[name].paused = False
        for job in self.jobs.values():
            if job.queue == name and job.status == "new":
                job.status = "waiting" if job.start_ms <= self.now else "delayed"
        self.after_step()

    # -- rules: jobs ---------------------------------------------------------------------

    @precondition(lambda self: len(self.jobs) < MAX_JOBS and self.queues)
    @rule(index=st.integers(0, 100), delay=st.sampled_from([None, 0, 300, 1500]),
          payload=st.integers(-(2**40), 2**40), count=st.integers(1, 3),
          max_attempts=st.sampled_from([None, None, 1, 4]),
          priority=st.sampled_from([None, None, MIN_PRIORITY, 5, MAX_PRIORITY]),
          unique=st.none() | st.tuples(st.sampled_from(["k0", "k1"]),
                                       st.sampled_from(["start", "finish", 600, 3000])),
          group=st.sampled_from([None, None, "g0", "g1", "g2"]))
    def enqueue(self, index: int, delay: int | None, payload: int, count: int,
                max_attempts: int | None, priority: int | None,
                unique: tuple[str, str | int] | None = None, group: str | None = None) -> None:
        """`count` ENQUEUEs submitted together (one commit, like pipelined requests), each
        with `max_attempts` as its own override (None: the queue's in force), `priority`,
        a unique key (the same for all: the first may take it, the others are duplicates)
        and a group."""
        name = pick(sorted(self.queues), index)
        scheduled = None if delay is None else self.now + delay
        key, scope, ends = None, None, None
        if unique is not None:
            key, until = unique
            if isinstance(until, int):
                scope, ends = UniqueScope.TTL, self.now + until
            else:
                scope = UniqueScope.START if until == "start" else UniqueScope.FINISH
        requests = [EnqueueRequest(name, msgpack.packb(payload + n), scheduled, max_attempts,
                                   None, None, priority=priority, unique_key=key,
                                   unique_scope=scope, unique_expires_at_ms=ends,
                                   group=group) for n in range(count)]

        async def submit() -> list[tuple[str, str]]:
            submitted = [self.broker.enqueue(r) for r in requests]
            holders = await asyncio.gather(*[added for _, added in submitted])
            return [(new, holder) for (new, _), holder in zip(submitted, holders, strict=True)]

        added: list[tuple[str, str]] = self.call(submit)
        start = self.now if scheduled is None else scheduled
        if self.queues[name].paused:
            status = "new"
        else:
            status = "waiting" if start <= self.now else "delayed"
        batch = [job_id for job_id, _ in added]
        for n, (job_id, holder) in enumerate(added):
            assert job_id not in self.jobs
            held = None if key is None else self.holder(name, key)
            if (held in batch and scope == UniqueScope.START and holder == job_id
                    and key is not None):
                # The holder, enqueued just before in this batch, was handed over to a
                # worker in its own commit: it started, so it let go of the key (its
                # QUEST is checked by `after_step`).
                del self.held[(name, key)]
                held = None
            if held is not None:
                assert holder == held, (holder, held)  # a duplicate: nothing added
                continue
            assert holder == job_id
            self.jobs[job_id] = MJob(job_id, name, payload + n, status, start, max_attempts,
                                     priority, group=group,
                                     unique=None if key is None else (key, int(scope or 0), ends))
            if key is not None and scope is not None:
                self.held[(name, key)] = (job_id, int(scope), ends or 0)
            if group is not None:
                self.queues[name].grouped = True
        self.after_step()

    @precondition(lambda self: any(j.status == "failed" for j in self.jobs.values()))
    @rule(index=st.integers(0, 1000))
    def retry(self, index: int) -> None:
        """RETRY a failed job; RETRY of a job in any other status is refused."""
        others = sorted(jid for jid, j in self.jobs.items() if j.status != "failed")
        if others:
            self.refused(ErrorCode.JOB_STATUS_CONFLICT,
                         lambda: self.broker.retry_job(pick(others, index)))
        job = self.jobs[pick(sorted(j.jid for j in self.jobs.values()
                                    if j.status == "failed"), index)]
        record = self.call(lambda: self.broker.retry_job(job.jid))
        job.status = "new" if self.queues[job.queue].paused else "waiting"
        assert record.status.label == job.status
        job.attempts = 0
        job.finished_ms = None
        job.start_ms = self.now
        self.after_step()

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 1000), reason=st.sampled_from(["cancelled", "stop", "x" * 50]))
    def cancel(self, index: int, reason: str) -> None:
        """CANCEL: an unstarted job is cancelled at once; an active one stays active with
        the reason stored, and its holder gets ABORT; a cancelled one is answered the same;
        a completed or failed one is refused."""
        job = self.jobs[pick(sorted(self.jobs), index)]
        if job.status in ("completed", "failed"):
            self.refused(ErrorCode.JOB_STATUS_CONFLICT,
                         lambda: self.broker.cancel_job(job.jid, reason))
            return
        record = self.call(lambda: self.broker.cancel_job(job.jid, reason))
        if job.status in CLEARABLE:
            job.status = "cancelled"
            job.finished_ms = self.now
            job.cancel_reason = reason
        elif job.status == "active" and job.cancel_reason is None:
            job.cancel_reason = reason
            delivery = next(d for d in self.deliveries.values() if d.jid == job.jid)
            self.aborts_due.setdefault(delivery.worker_key, []).append(
                {"jid": job.jid, "did": delivery.did, "reason": reason})
        assert record.status.label == job.status
        assert record.cancel_reason == job.cancel_reason
        self.after_step()

    @precondition(lambda self: self.queues)
    @rule(index=st.integers(0, 100), action=st.sampled_from(sorted(BULK_STATUSES)),
          which=st.integers(0, 2), batch=st.sampled_from([1, 2, 500]))
    def bulk(self, index: int, action: str, which: int, batch: int) -> None:
        """BULK in batches of `batch` jobs: every job of the queue in the status, each
        acted on once; a status the action does not take is refused."""
        name = pick(sorted(self.queues), index)
        status = pick(list(BULK_STATUSES[action]), which)
        wrong = next(s for s in FINISHED + CLEARABLE if s not in BULK_STATUSES[action])
        self.refused(ErrorCode.INVALID_PAYLOAD, lambda: self.broker.bulk(
            name, JobStatus.parse(wrong), BulkAction(action), "bulk"))
        jids = sorted(j.jid for j in self.jobs.values() if j.queue == name and j.status == status)
        saved = job_actions.BULK_BATCH
        job_actions.BULK_BATCH = batch
        try:
            count, more = self.call(lambda: self.broker.bulk(
                name, JobStatus.parse(status), BulkAction(action), "bulk"))
        finally:
            job_actions.BULK_BATCH = saved
        assert (count, more) == (len(jids), False)
        if action == "remove":
            self.vanish(jids)
        for jid in jids if action != "remove" else ():
            job = self.jobs[jid]
            if action == "retry":
                job.status = "new" if self.queues[name].paused else "waiting"
                job.attempts = 0
                job.finished_ms = None
                job.start_ms = self.now
            else:
                job.status = "cancelled"
                job.finished_ms = self.now
                job.cancel_reason = "bulk"
        self.after_step()

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 1000))
    def remove_job(self, index: int) -> None:
        """RMJOB: any job but an active one."""
        job = self.jobs[pick(sorted(self.jobs), index)]
        if job.status == "active":
            self.refused(ErrorCode.JOB_STATUS_CONFLICT,
                         lambda: self.broker.remove_job(job.jid))
            return
        self.call(lambda: self.broker.remove_job(job.jid))
        self.vanish([job.jid])
        self.after_step()

    # -- rules: schedules ----------------------------------------------------------------

    def _schedule_put(self, name: str, queue: str, cron: str, zone: str | None,
                      missed: MissedPolicy, job: dict[str, Any]
                      ) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """ADDSCHEDULE, of a new name or replacing a schedule: the broker's call, and what
        it does to the model (checking the reply). A replacement keeps the last fire and
        creation time, is active, and counts occurrences from now; each ADDSCHEDULE gets
        its own payload."""
        self.schedule_serial += 1
        payload = SCHEDULE_PAYLOAD + self.schedule_serial
        request = ScheduleRequest(name, queue, cron, zone, ScheduleJob(
            msgpack.packb(payload), job["max_attempts"], job["retry_interval_ms"],
            job["lease_ms"], None, job["task"], job["priority"]), missed)

        def apply(reply: Any) -> None:
            previous = self.schedules.get(name)
            schedule = MSchedule(
                name, queue, cron, zone, payload, job, missed, counted_from=self.now,
                created_at=self.now if previous is None else previous.created_at,
                last_fire=None if previous is None else previous.last_fire)
            schedule.next_run = schedule.next_after(self.now)
            self.schedules[name] = schedule
            self.check_schedule_reply(schedule, reply)

        return lambda: self.broker.add_schedule(request), apply

    def _schedule_pause(self, name: str, paused: bool
                        ) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """PAUSESCHEDULE or RESUMESCHEDULE (also of a schedule already so): a resume
        counts occurrences from now (no back-fill)."""

        def apply(reply: Any) -> None:
            schedule = self.schedules[name]
            schedule.paused = paused
            if not paused:
                schedule.counted_from = self.now
            schedule.next_run = None if paused else schedule.next_after(schedule.fired_up_to)
            self.check_schedule_reply(schedule, reply)

        return lambda: self.broker.set_schedule_paused(name, paused), apply

    def _schedule_remove(self, name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """RMSCHEDULE: its jobs stay."""

        def apply(reply: Any) -> None:
            assert reply.record.name == name
            del self.schedules[name]
            self.fires_since_boot.pop(name, None)

        return lambda: self.broker.remove_schedule(name), apply

    def check_schedule_reply(self, schedule: MSchedule, reply: Any) -> None:
        assert reply.record == schedule.record(), (reply.record, schedule)
        assert reply.next_run_ms == schedule.next_run, (reply.next_run_ms, schedule)

    @rule(index=st.integers(0, 100), queue=st.integers(0, 100),
          cron=st.sampled_from(sorted(CRONS)), zone=st.sampled_from(ZONES),
          missed=st.sampled_from(POLICIES), job=SCHEDULE_JOBS)
    def put_schedule(self, index: int, queue: int, cron: str, zone: str | None,
                     missed: MissedPolicy, job: dict[str, Any]) -> None:
        """ADDSCHEDULE of one of the names, new or again (a changed expression, zone,
        policy, queue, job); refused for a queue that does not exist, and for a new name
        beyond `max_schedules`."""
        name = pick(SCHEDULE_NAMES, index)
        target = (pick(sorted(self.queues), queue) if self.queues and queue % 4
                  else pick(QUEUE_NAMES, queue))
        change, apply = self._schedule_put(name, target, cron, zone, missed, job)
        if target not in self.queues:
            self.refused(ErrorCode.QUEUE_NOT_FOUND, change)
        elif name not in self.schedules and len(self.schedules) >= MAX_SCHEDULES:
            self.refused(ErrorCode.TOO_MANY_SCHEDULES, change)
        else:
            apply(self.call(change))
            self.after_step()

    @precondition(lambda self: self.schedules)
    @rule(index=st.integers(0, 100), paused=st.booleans())
    def pause_or_resume_schedule(self, index: int, paused: bool) -> None:
        name = pick(SCHEDULE_NAMES, index)
        change, apply = self._schedule_pause(name, paused)
        if name not in self.schedules:
            self.refused(ErrorCode.SCHEDULE_NOT_FOUND, change)
            return
        apply(self.call(change))
        self.after_step()

    @precondition(lambda self: self.schedules)
    @rule(index=st.integers(0, 100))
    def remove_schedule(self, index: int) -> None:
        name = pick(SCHEDULE_NAMES, index)
        change, apply = self._schedule_remove(name)
        if name not in self.schedules:
            self.refused(ErrorCode.SCHEDULE_NOT_FOUND, change)
            return
        apply(self.call(change))
        self.after_step()

    @precondition(lambda self: self.schedules and len(self.jobs) < MAX_JOBS)
    @rule(step=st.sampled_from(SCHEDULE_STEPS), race=st.sampled_from(RACES),
          index=st.integers(0, 100), cron=st.sampled_from(sorted(CRONS)))
    def schedules_fire(self, step: int, race: str | None, index: int, cron: str) -> None:
        """Time passes by up to 30 s, a heartbeat tick fires what is due. `race`: a
        change of a schedule (PAUSE, RESUME, RMSCHEDULE, ADDSCHEDULE again with `cron`)
        submitted right after the tick's fires, before they commit: the fires commit
        first, and the change applies to the schedule as they left it."""
        schedule = self.schedules[pick(sorted(self.schedules), index)]
        raced: tuple[Callable[[], Any], Callable[[Any], None]] | None = None
        if race in ("pause", "resume"):
            raced = self._schedule_pause(schedule.name, race == "pause")
        elif race == "remove":
            raced = self._schedule_remove(schedule.name)
        elif race == "replace" and self.queues:
            raced = self._schedule_put(
                schedule.name, pick(sorted(self.queues), index), cron, schedule.zone,
                schedule.missed, schedule.job)
        if raced is None:
            self._tick(step)
            return
        change, apply = raced
        apply(self._tick(step, change))

    def due_fires(self, boot: bool) -> dict[str, list[int]]:
        """The occurrences each schedule fires now, in order, and what that does to it.
        Running: every occurrence after its last fire (or its add, its resume) up to now.
        At a start, of those missed while down: none (`skip`) or the latest (`once`). A
        schedule whose queue is gone is paused instead, at an occurrence it would fire."""
        due: dict[str, list[int]] = {}
        for schedule in self.schedules.values():
            if schedule.paused:
                continue
            after = schedule.fired_up_to if boot else max(schedule.fired_up_to, schedule.passed)
            occurrences = schedule.occurrences(after, self.now)
            schedule.passed = self.now
            if boot:
                occurrences = occurrences[-1:] if schedule.missed == MissedPolicy.ONCE else []
            if occurrences and schedule.queue not in self.queues:
                schedule.paused = True
            elif occurrences:
                due[schedule.name] = occurrences
            schedule.next_run = None if schedule.paused else schedule.next_after(self.now)
        return due

    def take_fires(self, due: dict[str, list[int]]) -> None:
        """The jobs the step's fires enqueued: exactly one per due occurrence, in order of
        occurrence (a schedule's jobs are told apart by their payload), and none else.
        Each goes into the ledger, where no occurrence may be already. (With nothing due,
        `model_agrees_with_records` finds any job made anyway.)"""
        if not due:
            return
        records = self._scan()[0]
        made: dict[int, list[str]] = {}
        for jid in sorted(set(records) - set(self.jobs)):
            made.setdefault(msgpack.unpackb(records[jid].payload), []).append(jid)
        for name, occurrences in due.items():
            schedule = self.schedules[name]
            jids = made.pop(schedule.payload, [])
            assert len(jids) == len(occurrences), (name, occurrences, jids)
            for occurrence, jid in zip(occurrences, jids, strict=True):
                assert (name, occurrence) not in self.fired, ("fired twice", name, occurrence)
                self.fired[(name, occurrence)] = jid
                record = records[jid]
                assert record.queue_name == schedule.queue, (record, schedule)
                assert record.created_at_ms == self.now
                job = schedule.job
                self.jobs[jid] = MJob(
                    jid, schedule.queue, schedule.payload,
                    "new" if self.queues[schedule.queue].paused else "waiting", self.now,
                    job["max_attempts"], job["priority"], retry_ms=job["retry_interval_ms"],
                    lease_ms=job["lease_ms"], task=job["task"])
            schedule.last_fire = occurrences[-1]
            self.fires_since_boot[name] += len(occurrences)
        assert not made, f"jobs that no occurrence accounts for: {made}"

    # -- rules: workers and subscriptions ------------------------------------------------

    @precondition(lambda self: len(self.workers) < MAX_WORKERS and self.queues)
    @rule(index=st.integers(0, 100), credits=st.integers(0, 3))
    def new_worker(self, index: int, credits: int) -> None:
        key = self.next_worker
        self.next_worker += 1
        peer = ModelPeer(f"peer-{key}")
        worker = self.call(lambda: self.broker.register_worker(peer, {"key": key}))
        mw = MWorker(key, worker, peer, self.now)
        self.workers[key] = mw
        self._subscribe(mw, pick(sorted(self.queues), index), credits)

    def _subscribe(self, mw: MWorker, name: str, credits: int) -> None:
        self.seen(mw)
        subscription = self.call(lambda: self.broker.subscribe(mw.worker, name, credits))
        mw.sids[name] = subscription.subscription_id
        mw.credits[name] = credits
        self.after_step(fifo=True)

    @precondition(lambda self: self.workers and self.queues)
    @rule(worker=st.integers(0, 100), index=st.integers(0, 100), credits=st.integers(0, 3))
    def subscribe(self, worker: int, index: int, credits: int) -> None:
        mw = self.workers[pick(sorted(self.workers), worker)]
        name = pick(sorted(self.queues), index)
        if name in mw.sids:
            self.refused(ErrorCode.ALREADY_SUBSCRIBED,
                         lambda: self.broker.subscribe(mw.worker, name, credits))
            return
        self._subscribe(mw, name, credits)

    @precondition(lambda self: self.workers)
    @rule(worker=st.integers(0, 100), index=st.integers(0, 100), credits=st.integers(1, 3))
    def credit(self, worker: int, index: int, credits: int) -> None:
        mw = self.workers[pick(sorted(self.workers), worker)]
        if not mw.sids:
            # Another worker's sid is not found on this one, like an unknown one.
            others = [sid for w in self.workers.values() if w is not mw
                      for sid in w.sids.values()]
            sid = others[0] if others else "00000000-0000-4000-8000-000000000000"
            self.refused(ErrorCode.SUBSCRIPTION_NOT_FOUND,
                         lambda: self.broker.credit(mw.worker, sid, credits))
            return
        name = pick(sorted(mw.sids), index)
        self.seen(mw)
        self.call(lambda: self.broker.credit(mw.worker, mw.sids[name], credits))
        mw.credits[name] += credits
        self.after_step(fifo=True)

    @precondition(lambda self: any(mw.sids for mw in self.workers.values()))
    @rule(worker=st.integers(0, 100), index=st.integers(0, 100))
    def unsubscribe(self, worker: int, index: int) -> None:
        mw = pick([w for _, w in sorted(self.workers.items()) if w.sids], worker)
        name = pick(sorted(mw.sids), index)
        self.seen(mw)
        self.call(lambda: self.broker.unsubscribe(mw.worker, mw.sids[name]))
        del mw.sids[name]
        del mw.credits[name]
        self.after_step()

    @precondition(lambda self: self.workers)
    @rule(worker=st.integers(0, 100))
    def disconnect(self, worker: int) -> None:
        mw = self.workers[pick(sorted(self.workers), worker)]
        self.call(lambda: self.broker.worker_gone(mw.worker, AttemptOutcome.DISCONNECTED))
        mw.peer.close()
        self.worker_left(mw, "disconnected")
        self.after_step()

    # -- rules: deliveries ---------------------------------------------------------------

    def _held(self, index: int) -> tuple[MDelivery, MWorker]:
        delivery = self.deliveries[pick(sorted(self.deliveries), index)]
        return delivery, self.workers[delivery.worker_key]

    def _own(self, delivery: MDelivery, mw: MWorker) -> Any:
        found = self.broker.worker_delivery(mw.worker, delivery.did, delivery.jid)
        assert found.delivery_id == delivery.did and found.job_id == delivery.jid
        return found

    @precondition(lambda self: self.deliveries)
    @rule(steps=st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(ACTIONS),
                                   st.integers(0, 100)), min_size=1, max_size=6))
    def work(self, steps: list[tuple[int, str, int]]) -> None:
        """Workers act on the deliveries they hold: each step is (which delivery, ACK,
        JOBBEAT, COMPLETE, FAIL or RELEASE, a value for progress, result or message)."""
        for index, action, value in steps:
            if not self.deliveries:
                return
            getattr(self, f"_{action}")(index, value)

    def _ack(self, index: int, _: int) -> None:
        delivery, mw = self._held(index)
        self.seen(mw)
        found = self._own(delivery, mw)
        if delivery.acked:
            self.refused(ErrorCode.DELIVERY_ALREADY_ACKED, lambda: self.broker.ack(found))
            return
        self.call(lambda: self.broker.ack(found))
        delivery.acked = True
        delivery.lease_deadline_ms = self.now + delivery.lease_ms
        assert found.lease_deadline_ms == delivery.lease_deadline_ms
        self.after_step()

    def _jobbeat(self, index: int, progress: int) -> None:
        delivery, mw = self._held(index)
        self.seen(mw)
        found = self._own(delivery, mw)
        deadline = self.call(lambda: self.broker.heartbeat(found, progress))
        if not delivery.acked or self.jobs[delivery.jid].cancel_reason is None:
            delivery.lease_deadline_ms = self.now + delivery.lease_ms  # not once cancelled
        delivery.acked = True
        assert deadline == delivery.lease_deadline_ms and found.progress == progress
        self.after_step()

    def _complete(self, index: int, result: int) -> None:
        delivery, mw = self._held(index)
        self.seen(mw)
        found = self._own(delivery, mw)
        self.call(lambda: self.broker.complete(found, msgpack.packb(result)))
        record = self.store.get_job(delivery.jid)
        assert record is not None
        del self.deliveries[delivery.did]
        self.ended.append((delivery.did, delivery.jid))
        job = self.jobs[delivery.jid]
        job.status = "completed" if job.cancel_reason is None else "cancelled"
        job.finished_ms = self.now
        job.attempts += 1
        job.outcomes.append("completed")
        assert record.status.label == job.status
        assert msgpack.unpackb(record.result) == result
        assert record.finished_at_ms == self.now
        self.after_step()

    def _fail(self, index: int, code: int) -> None:
        delivery, mw = self._held(index)
        self.seen(mw)
        found = self._own(delivery, mw)
        error = {"message": f"boom {code}", "details": {"code": code, "ratio": code / 8}}
        record = self.call(lambda: self.broker.fail(found, error))
        self.end(delivery, "failed")
        job = self.jobs[delivery.jid]
        assert record.status.label == job.status
        assert record.history[-1]["outcome"] == "failed"
        assert record.history[-1]["error"] == error
        if job.status == "delayed":
            assert record.execution_start_at_ms == job.start_ms
        else:
            assert record.finished_at_ms == self.now
        self.after_step()

    def _release(self, index: int, _: int) -> None:
        delivery, mw = self._held(index)
        self.seen(mw)
        found = self._own(delivery, mw)
        record = self.call(lambda: self.broker.release(found))
        self.end(delivery, "released")
        assert record.status.label == self.jobs[delivery.jid].status  # waiting, or cancelled
        self.after_step()

    @precondition(lambda self: (self.ended or self.deliveries or self.vanished)
                  and self.workers)
    @rule(index=st.integers(0, 1000), worker=st.integers(0, 100))
    def refused_outcome(self, index: int, worker: int) -> None:
        """Outcomes that must not reach a job: for a delivery that is over (any worker,
        even after a restart: DELIVERY_STALE), for a delivery whose job was deleted or
        fenced by a forced OBLITERATE (its holder too: DELIVERY_NOT_FOUND), for another
        worker's current delivery (DELIVERY_NOT_FOUND), for a held delivery quoted with
        another job (INVALID_PAYLOAD)."""
        mw = self.workers[pick(sorted(self.workers), worker)]
        if self.vanished:
            did, jid, key = pick(self.vanished, index)
            holder = self.workers.get(key, mw) if key is not None else mw
            self.refused(ErrorCode.DELIVERY_NOT_FOUND,
                         lambda: self.broker.worker_delivery(holder.worker, did, jid))
        if self.ended:
            did, jid = pick(self.ended, index)
            self.refused(ErrorCode.DELIVERY_STALE,
                         lambda: self.broker.worker_delivery(mw.worker, did, jid))
        if not self.deliveries:
            return
        delivery, holder = self._held(index)
        others = [w for k, w in sorted(self.workers.items()) if k != holder.key]
        if others:
            other = pick(others, worker)
            self.refused(ErrorCode.DELIVERY_NOT_FOUND,
                         lambda: self.broker.worker_delivery(other.worker, delivery.did,
                                                             delivery.jid))
        wrong = [jid for jid in sorted(self.jobs) if jid != delivery.jid]
        if wrong:
            self.refused(ErrorCode.INVALID_PAYLOAD,
                         lambda: self.broker.worker_delivery(holder.worker, delivery.did,
                                                             pick(wrong, index)))

    # -- rules: time, restarts -----------------------------------------------------------

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def time_passes(self, step: int) -> None:
        self._tick(step)

    @precondition(lambda self: any(q.config.has_retention for q in self.queues.values()))
    @rule(finish=st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(["complete", "fail"]),
                                    st.integers(0, 100)), max_size=4),
          step=st.sampled_from([0, 1, 999, 1000, 4000]))
    def retention(self, finish: list[tuple[int, str, int]], step: int) -> None:
        """With retention settings in force: workers COMPLETE or FAIL some jobs they hold
        (each then asking for the next with CREDIT 1), then a heartbeat tick, by a step
        around the age limits."""
        for index, action, value in finish:
            if not self.deliveries:
                break
            delivery, mw = self._held(index)
            getattr(self, f"_{action}")(index, value)
            if delivery.queue in mw.sids:
                self.seen(mw)
                self.call(lambda mw=mw, name=delivery.queue: self.broker.credit(
                    mw.worker, mw.sids[name], 1))
                mw.credits[delivery.queue] += 1
                self.after_step(fifo=True)
        self._tick(step)

    def _tick(self, step: int, also: Callable[[], Any] | None = None) -> Any:
        """A heartbeat tick `step` ms later (expiries, promotion, retention, schedule
        fires); `also`: a request made right after it, in the same turn of the loop (what
        it answers is returned)."""
        self.now += step

        def tick() -> Any:
            self.broker.tick(self.now)
            return None if also is None else also()

        reply = self.call(tick)
        self.take_fires(self.due_fires(boot=False))
        for delivery in list(self.deliveries.values()):
            if not delivery.acked and self.now >= delivery.ack_deadline_ms:
                self.end(delivery, "withdrawn")
            elif delivery.acked and self.now >= delivery.lease_deadline_ms:
                self.end(delivery, "lease_expired")
        for mw in list(self.workers.values()):
            holds = any(d.worker_key == mw.key for d in self.deliveries.values())
            if holds and self.now - mw.last_seen_ms >= STALE_MS:
                self.worker_left(mw, "stale_worker")
                assert mw.peer.closed and mw.worker.gone
        for mw in self.workers.values():
            assert not mw.peer.closed
        self.prune()  # retention's steps are submitted after the attempts' ends
        self.after_step()
        self.retention_holds()
        return reply

    def retention_holds(self) -> None:
        """Right after a tick (its pruning converged), per queue and finished status: at
        most the count is kept, and nothing finished the age ago or earlier."""
        records = self._scan()[0]
        for name, queue in self.queues.items():
            for status, kept_as in RETAINED:
                max_count = getattr(queue.config, f"{kept_as}_max_count")
                max_age = getattr(queue.config, f"{kept_as}_max_age_ms")
                finished = [r.finished_at_ms or 0 for r in records.values()
                            if r.queue_name == name and r.status.label == status]
                assert max_count is None or len(finished) <= max_count, (name, status)
                assert max_age is None or all(self.now - at < max_age for at in finished), (
                    name, status, self.now, finished)

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule(down=st.sampled_from(DOWNTIMES))
    def restart(self, down: int) -> None:
        """A restart after `down` ms: deliveries end, workers are gone, and schedules
        apply their missed policy to the occurrences that fell meanwhile."""
        active_before = {d.jid for d in self.deliveries.values()}
        # The old process is gone: its broker must not act again (its timers may still
        # be armed on this loop).
        self.broker.stop_dispatch()
        self.loop.run_until_complete(self.writer.stop())
        self.store.close()
        self.restarts += 1
        # A restart takes time. (Job ids are ordered by a per-process counter within a
        # millisecond, so a new process in the same millisecond could make ids, and the
        # CLEARQUEUE boundary, that sort below the old process's: only a clock that went
        # back across a restart does that.)
        self.now += down
        self._open()
        self.fires_since_boot.clear()
        self.take_fires(self.due_fires(boot=True))
        for mw in list(self.workers.values()):
            del self.workers[mw.key]
        for delivery in list(self.deliveries.values()):
            self.end(delivery, "server_restart")
        # Every job the old process had out was recovered: none is active any more.
        assert not self.broker.deliveries
        for jid in active_before:
            record = self.store.get_job(jid)
            assert record is not None and record.status != JobStatus.ACTIVE
            assert record.history[-1]["outcome"] == "server_restart"
            assert record.history[-1]["counted"] is True
        self.after_step()

    # -- invariants ----------------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, JobRecord], Counter[tuple[str, int]], set[bytes],
                             list[tuple[str, int, bytes]], list[tuple[str, int, int, bytes]],
                             dict[tuple[str, int], int]]:
        store = self.store
        records: dict[str, JobRecord] = {}
        by_status: Counter[tuple[str, int]] = Counter()
        status_keys: set[bytes] = set()
        by_time: list[tuple[str, int, bytes]] = []
        by_finish: list[tuple[str, int, int, bytes]] = []
        counters: dict[tuple[str, int], int] = {}
        with store.env.begin() as txn:
            for key, value in txn.cursor(db=store.jobs_db):
                record = decode_job(value)
                assert key.decode() == record.job_id
                records[record.job_id] = record
            for key in txn.cursor(db=store.by_status).iternext(values=False):
                name, rest = key.split(b"\x00", 1)
                # `waiting` entries carry a priority rank byte before the uuid.
                assert len(rest) == (18 if rest[0] == JobStatus.WAITING else 17), key
                by_status[(name.decode(), rest[0])] += 1
                status_keys.add(key)
            for key in txn.cursor(db=store.by_time).iternext(values=False):
                name, rest = key.split(b"\x00", 1)
                assert len(rest) == 24, key
                by_time.append((name.decode(), U64.unpack(rest[:8])[0], rest[8:]))
            for key in txn.cursor(db=store.by_finish).iternext(values=False):
                name, rest = key.split(b"\x00", 1)
                assert len(rest) == 25, key
                by_finish.append((name.decode(), rest[0], U64.unpack(rest[1:9])[0], rest[9:]))
            for key, value in txn.cursor(db=store.counters_db):
                name, rest = key.split(b"\x00", 1)
                counters[(name.decode(), rest[0])] = U64.unpack(value)[0]
        return records, by_status, status_keys, by_time, by_finish, counters

    @invariant()
    def storage_indexes_and_counters_agree(self) -> None:
        records, by_status, status_keys, by_time, by_finish, counters = self._scan()
        per_status = Counter((r.queue_name, int(r.status)) for r in records.values())
        for name in [*self.queues, "_system"]:
            counts = self.store.counts(name)
            for status in JobStatus:
                stored = counters.get((name, int(status)), 0)
                assert counts[status] == stored
                assert stored == per_status[(name, int(status))], (name, status)
                assert stored == by_status[(name, int(status))], (name, status)
        expected_keys = {r.queue_name.encode() + b"\x00" + bytes((int(r.status),))
                         + (bytes((priority_rank(r.priority)
                                   | (0 if r.group is None else GROUPED_RANK),))
                            if r.status == JobStatus.WAITING else b"")
                         + bytes.fromhex(r.uuid.replace("-", "")) for r in records.values()}
        assert status_keys == expected_keys
        delayed = sorted((r.queue_name, r.execution_start_at_ms,
                          bytes.fromhex(r.uuid.replace("-", "")))
                         for r in records.values() if r.status == JobStatus.DELAYED)
        assert sorted(by_time) == delayed
        finished = sorted((r.queue_name, int(r.status), r.finished_at_ms or 0,
                           bytes.fromhex(r.uuid.replace("-", "")))
                          for r in records.values()
                          if r.status.label in FINISHED)
        assert sorted(by_finish) == finished

    @invariant()
    def model_agrees_with_records(self) -> None:
        records = self._scan()[0]
        # No job lost, none made up (a schedule's occurrence fired twice makes one up).
        assert set(records) == set(self.jobs), set(records) ^ set(self.jobs)
        for jid, job in self.jobs.items():
            record = records[jid]
            assert record.status.label == job.status, (job, record)
            assert record.queue_name == job.queue
            assert record.attempts_so_far == job.attempts, (job, record)
            assert msgpack.unpackb(record.payload) == job.payload
            assert record.max_attempts == job.max_attempts
            assert record.priority == job.priority
            assert (record.retry_interval_ms, record.lease_ms, record.task) == (
                job.retry_ms, job.lease_ms, job.task)
            kept = [e["outcome"] for e in record.history if e["outcome"] != "withdrawn"]
            assert kept == job.outcomes, (job, record.history)
            for entry in record.history:
                assert entry["counted"] == (entry["outcome"] not in (
                    "withdrawn", "released", "server_shutdown"))
            if job.status in ("delayed", "new", "waiting"):
                assert record.execution_start_at_ms == job.start_ms, (job, record)
            if job.status == "active":
                assert record.delivery_id is not None
            else:
                assert record.delivery_id is None
            assert record.finished_at_ms == job.finished_ms, (job, record)
            assert (job.finished_ms is not None) == (job.status in FINISHED)
            assert record.cancel_reason == job.cancel_reason, (job, record)

    @invariant()
    def deliveries_match_active_jobs(self) -> None:
        records = self._scan()[0]
        active = {(r.job_id, r.delivery_id) for r in records.values()
                  if r.status == JobStatus.ACTIVE}
        in_memory = {(d.job_id, d.delivery_id) for d in self.broker.deliveries.values()}
        assert in_memory == active
        assert {(d.jid, d.did) for d in self.deliveries.values()} == active
        for delivery in self.broker.deliveries.values():
            model = self.deliveries[delivery.delivery_id]
            assert delivery.worker is self.workers[model.worker_key].worker
            assert delivery.acked == model.acked
            assert delivery.ack_deadline_ms == model.ack_deadline_ms
            if model.acked:
                assert delivery.lease_deadline_ms == model.lease_deadline_ms
            assert records[delivery.job_id].worker_id == delivery.worker.worker_id
        for mw in self.workers.values():
            held = {d.did for d in self.deliveries.values() if d.worker_key == mw.key}
            assert set(mw.worker.deliveries) == held

    @invariant()
    def concurrency_and_credits(self) -> None:
        records = self._scan()[0]
        for name, queue in self.queues.items():
            runtime = self.broker.queues[name]
            out = sum(1 for d in self.broker.deliveries.values() if d.queue_name == name)
            assert runtime.active == out, (name, runtime.active, out)
            active_records = sum(1 for r in records.values()
                                 if r.queue_name == name and r.status == JobStatus.ACTIVE)
            assert active_records == out
            if queue.limit is not None:
                # At most the limit, or, after SETQUEUE lowered it, what was out then and
                # has not drained yet: never more than at the previous step.
                assert queue.ceiling is not None and out <= queue.ceiling, (
                    name, out, queue.ceiling, queue.limit)
                queue.ceiling = max(queue.limit, out)
            assert runtime.record.state == (QueueState.PAUSED if queue.paused
                                            else QueueState.ACTIVE)
            live = {s.subscription_id: s for s in runtime.subscriptions}
            expected = {mw.sids[name]: mw.credits[name] for mw in self.workers.values()
                        if name in mw.sids}
            assert {sid: s.credits for sid, s in live.items()} == expected
            # Work is never left waiting next to an idle subscription with credit (but for
            # jobs of a group at its limit).
            group_limit = queue.config.group_concurrency_limit
            group_out = Counter(r.group for r in records.values()
                                if r.queue_name == name and r.status == JobStatus.ACTIVE)
            waiting = any(j.queue == name and j.status == "waiting"
                          and (j.group is None or group_limit is None
                               or group_out[j.group] < group_limit)
                          for j in self.jobs.values())
            if waiting and not queue.paused:
                full = queue.limit is not None and out >= queue.limit
                assert full or not any(expected.values()), (name, expected, out)


    @invariant()
    def unique_keys_have_one_holder(self) -> None:
        stored: dict[tuple[str, str], tuple[str, int]] = {}
        with self.store.env.begin() as txn:
            for key, value in txn.cursor(db=self.store.unique_db):
                name, unique_key = key.split(b"\x00", 1)
                uuid_bytes, ends = UNIQUE_HOLDER.unpack(value)
                stored[(name.decode(), unique_key.decode())] = (
                    job_id_from(name.decode(), uuid_bytes), ends)
        assert stored == {where: (jid, ends) for where, (jid, _, ends) in self.held.items()}
        records = self._scan()[0]
        for (name, unique_key), (jid, scope, _) in self.held.items():
            record = records[jid]
            assert record.unique_key == unique_key and record.queue_name == name
            assert holds_key(scope, record.status), (record.job_id, record.status)
        for jid, job in self.jobs.items():
            unique = None if records[jid].unique_key is None else (
                records[jid].unique_key, records[jid].unique_scope,
                records[jid].unique_expires_at_ms)
            assert unique == job.unique and records[jid].group == job.group

    @invariant()
    def groups_agree_and_stay_within_their_limit(self) -> None:
        records = self._scan()[0]
        waiting: Counter[tuple[str, str]] = Counter()
        active: Counter[tuple[str, str]] = Counter()
        waiting_keys: set[bytes] = set()
        for r in records.values():
            if r.group is None:
                continue
            if r.status == JobStatus.WAITING:
                waiting[(r.queue_name, r.group)] += 1
                waiting_keys.add(group_index.group_waiting_prefix(
                    r.queue_name.encode() + b"\x00", r.group)
                    + bytes((priority_rank(r.priority),)) + bytes.fromhex(r.uuid.replace("-", "")))
            elif r.status == JobStatus.ACTIVE:
                active[(r.queue_name, r.group)] += 1
        counts: dict[tuple[str, str], tuple[int, ...]] = {}
        turns: dict[str, tuple[int, ...]] = {}
        ring: set[tuple[str, str]] = set()
        parked: set[tuple[str, str]] = set()
        with self.store.env.begin() as txn:
            for key, value in txn.cursor(db=self.store.groups_db):
                name, group = key.split(b"\x00", 1)
                if group:
                    counts[(name.decode(), group.decode())] = struct.unpack(">QQQQB", value)
                else:
                    turns[name.decode()] = struct.unpack(">QQQQ", value)
            for key, value in txn.cursor(db=self.store.group_ring):
                name, rest = key.split(b"\x00", 1)
                if rest[:1] == group_index.RING:
                    ring.add((name.decode(), value.decode()))
                else:
                    parked.add((name.decode(), rest[1:].decode()))
            stored_keys = set(txn.cursor(db=self.store.group_waiting).iternext(values=False))
        assert stored_keys == waiting_keys
        live = set(waiting) | set(active)
        assert set(counts) == live, (counts, live)
        expect_ring, expect_parked = set(), set()
        for where in live:
            name, group = where
            limit = self.queues[name].config.group_concurrency_limit
            assert counts[where][:2] == (waiting[where], active[where]), (where, counts[where])
            if waiting[where]:
                below = limit is None or active[where] < limit
                (expect_ring if below else expect_parked).add(where)
                assert counts[where][4] == (group_index.IN_TURN if below
                                            else group_index.PARKED)
        assert ring == expect_ring and parked == expect_parked, (ring, parked)
        for name, record in turns.items():
            assert record[3] == sum(waiting[w] for w in expect_parked if w[0] == name)
            assert name in self.queues or name == "_system"
        for name, queue in self.queues.items():
            limit = queue.config.group_concurrency_limit
            for (queue_name, group), out in active.items():
                if queue_name != name or limit is None:
                    continue
                ceiling = queue.group_ceilings.get(group, limit)
                assert out <= max(ceiling, limit), (name, group, out, limit)
            queue.group_ceilings = {group: max(limit or 0, out)
                                    for (queue_name, group), out in active.items()
                                    if queue_name == name}

    @invariant()
    def schedules_agree(self) -> None:
        """The stored schedules, and those in force with their next runs, are the
        model's; the fires counted since the start are the ledger's; no two occurrences
        share a job."""
        stored = {r.name: r for r in load_schedules(self.store, 100)}
        expected = {name: s.record() for name, s in self.schedules.items()}
        assert stored == expected, (stored, expected)
        in_force = {name: (r.record, r.next_run_ms) for name, r in self.broker.schedules.items()}
        assert in_force == {name: (expected[name], s.next_run)
                            for name, s in self.schedules.items()}, in_force
        assert self.broker.tally.schedule_fires == {
            name: n for name, n in self.fires_since_boot.items() if n}
        assert len(set(self.fired.values())) == len(self.fired)

    @invariant()
    def no_loop_errors(self) -> None:
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def nothing_dangling_nothing_of_removed_queues(self) -> None:
        records, _, status_keys, by_time, by_finish, counters = self._scan()
        live = {*self.queues, "_system"}
        named = [(key.split(b"\x00", 1)[0].decode(), key[-16:]) for key in status_keys]
        named += [(name, uuid) for name, _, uuid in by_time]
        named += [(name, uuid) for name, _, _, uuid in by_finish]
        for name, uuid in named:
            assert job_id_from(name, uuid) in records, (name, uuid.hex())
        assert {r.queue_name for r in records.values()} <= live
        assert {name for name, _ in named} <= live
        assert {name for name, _ in counters} <= live
        stored = {q.name: q for q in self.store.load_queues()}
        assert set(stored) == live
        assert set(self.broker.queues) == live
        assert not self.broker.obliterating
        for name, queue in self.queues.items():
            state = QueueState.PAUSED if queue.paused else QueueState.ACTIVE
            for record in (stored[name], self.broker.queues[name].record):
                assert record.config == queue.config, (name, record.config, queue.config)
                assert record.state == state
        for mw in self.workers.values():
            assert {s.queue_name: s.subscription_id
                    for s in mw.worker.subscriptions.values()} == mw.sids
        for delivery in self.broker.deliveries.values():
            assert delivery.queue_name in live


LifecycleMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = LifecycleMachine.TestCase
