"""Schedules in memory: each one's next run, a heap keyed by it, and the fires.

A fire builds the job as ENQUEUE does (`Enqueuer.new_job`) and hands the writer one
`FireSchedule`, which enqueues it and stores the occurrence as the schedule's last fire in
the same transaction; the writer refuses an occurrence at or before the stored last fire,
so no occurrence fires twice, whatever the server does between. The cost of a step grows
with the schedules due, not with how many there are: the heap's top is the earliest next
run, and a timer wakes the loop for it. In-memory records follow the writer's results
(after the commit), and the writer checks a schedule's state when a fire applies, so a
PAUSESCHEDULE or RMSCHEDULE committed first wins over a fire submitted before it.
"""

import asyncio
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from overhop.broker.enqueue import Enqueuer, EnqueueRequest
from overhop.broker.scheduler import Scheduler
from overhop.broker.state import BrokerState
from overhop.errors import ErrorCode, OverhopError, RequestError
from overhop.logs import get_logger
from overhop.model.cron import CronSpec, parse_cron, parse_timezone, plan_boot, spec_of
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.storage import operations as ops
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

# Occurrences one step fires at most (only a loop held up for long leaves more than a few
# due at once); the rest follow in the next step, at once.
FIRE_BATCH = 100


@dataclass(slots=True)
class ScheduleRequest:
    """ADDSCHEDULE as parsed by its handler; the expression and zone are checked here."""

    name: str
    queue_name: str
    cron: str
    timezone: str | None
    job: ScheduleJob
    missed: MissedPolicy


@dataclass(slots=True, eq=False)
class ScheduleRuntime:
    record: ScheduleRecord
    spec: CronSpec
    # The next occurrence to fire; None while paused (or when none is left).
    next_run_ms: int | None


class Schedules:
    def __init__(self, state: BrokerState, writer: Writer, enqueuer: Enqueuer,
                 scheduler: Scheduler, clock: Callable[[], int], max_schedules: int) -> None:
        self._state = state
        self._writer = writer
        self._enqueuer = enqueuer
        self._scheduler = scheduler
        self._clock = clock
        self._max = max_schedules
        self._schedules: dict[str, ScheduleRuntime] = {}
        self._adding: set[str] = set()
        # (next run, sequence, name); an entry whose schedule moved on is skipped.
        self._heap: list[tuple[int, int, str]] = []
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0

    @property
    def schedules(self) -> Mapping[str, ScheduleRuntime]:
        return self._schedules

    def queue_of(self, name: str) -> str | None:
        runtime = self._schedules.get(name)
        return None if runtime is None else runtime.record.queue_name

    # -- boot ----------------------------------------------------------------------------

    def boot(self, records: list[ScheduleRecord], now: int) -> None:
        """Load the stored schedules and apply each one's missed policy."""
        for record in records:
            spec = spec_of(record)
            plan = plan_boot(spec, record, now)
            runtime = ScheduleRuntime(record, spec, plan.next_run_ms)
            self._schedules[record.name] = runtime
            if plan.missed:
                log.info("schedule_missed_occurrences", schedule=record.name,
                         queue=record.queue_name, policy=record.missed.value,
                         fired=plan.fire_ms is not None, fire_ms=plan.fire_ms,
                         next_run_ms=plan.next_run_ms)
            if plan.fire_ms is not None:
                self._fire(runtime, plan.fire_ms, now)
            self._push(runtime)
        self._arm_timer()

    # -- changes -------------------------------------------------------------------------

    def add(self, request: ScheduleRequest, now: int) -> "asyncio.Future[ScheduleRuntime]":
        """Add a schedule, or replace the one of that name (its last fire is kept)."""
        zone = parse_timezone(request.timezone)
        spec = parse_cron(request.cron, zone, now)
        queue = self._state.user_queue(request.queue_name)
        self._enqueuer.new_job(queue, self._enqueue_request(request.queue_name, request.job),
                               now)  # OVERRIDE_NOT_ALLOWED now rather than at each fire
        name = request.name
        new = name not in self._schedules and name not in self._adding
        if new and len(self._schedules) + len(self._adding) >= self._max:
            raise RequestError(ErrorCode.TOO_MANY_SCHEDULES,
                               f"the server holds {self._max} schedules, its limit "
                               "(schedules.max_schedules)")
        record = ScheduleRecord(name, request.queue_name, spec.expression, zone.key,
                                request.job, request.missed, False, None, now, now)
        self._adding.add(name)
        durable = self._writer.submit(ops.PutSchedule(record)).durable
        return _then(durable, partial(self._added, spec), partial(self._add_ended, name))

    def _add_ended(self, name: str) -> None:
        self._adding.discard(name)

    def _added(self, spec: CronSpec, stored: ScheduleRecord) -> ScheduleRuntime:
        now = self._clock()
        runtime = ScheduleRuntime(stored, spec, spec.next_after(max(now, stored.fired_up_to_ms)))
        self._schedules[stored.name] = runtime
        self._push(runtime)
        self._arm_timer()
        log.info("schedule_added", schedule=stored.name, queue=stored.queue_name,
                 cron=stored.cron, tz=stored.timezone, missed=stored.missed.value)
        return runtime

    def remove(self, name: str) -> "asyncio.Future[None]":
        self._known(name)
        durable = self._writer.submit(ops.RemoveSchedule(name)).durable
        return _then(durable, partial(self._removed, name))

    def _removed(self, name: str, _: None) -> None:
        runtime = self._schedules.pop(name, None)
        self._state.tally.schedule_fires.pop(name, None)
        log.info("schedule_removed", schedule=name,
                 queue=None if runtime is None else runtime.record.queue_name)

    def set_paused(self, name: str, paused: bool, now: int
                   ) -> "asyncio.Future[ScheduleRuntime]":
        self._known(name)
        durable = self._writer.submit(ops.SetSchedulePaused(name, paused, now)).durable
        return _then(durable, self._paused_or_resumed)

    def _paused_or_resumed(self, stored: ScheduleRecord) -> ScheduleRuntime:
        runtime = self._schedules.get(stored.name)
        if runtime is None:  # removed meanwhile
            return ScheduleRuntime(stored, spec_of(stored), None)
        runtime.record = stored
        # Resuming counts from the resume on (`counted_from_ms`): nothing is back-filled.
        runtime.next_run_ms = None if stored.paused else runtime.spec.next_after(
            max(self._clock(), stored.fired_up_to_ms))
        self._push(runtime)
        self._arm_timer()
        log.info("schedule_paused" if stored.paused else "schedule_resumed",
                 schedule=stored.name, queue=stored.queue_name)
        return runtime

    def _known(self, name: str) -> ScheduleRuntime:
        runtime = self._schedules.get(name)
        if runtime is None:
            raise RequestError(ErrorCode.SCHEDULE_NOT_FOUND, f"no schedule {name!r}")
        return runtime

    # -- firing --------------------------------------------------------------------------

    def fire_due(self, now: int) -> None:
        """Fire every occurrence due at `now` (at most FIRE_BATCH; the rest right after)."""
        if self._state.dispatch_stopped:
            return
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now and fired < FIRE_BATCH:
            at, _, name = heapq.heappop(heap)
            runtime = self._schedules.get(name)
            if runtime is None or runtime.next_run_ms != at or runtime.record.paused:
                continue  # moved on since this entry was pushed
            self._fire(runtime, at, now)
            fired += 1
            runtime.next_run_ms = runtime.spec.next_after(at)
            self._push(runtime)
        self._arm_timer()

    def _fire(self, runtime: ScheduleRuntime, occurrence: int, now: int) -> None:
        record = runtime.record
        queue = self._state.queues.get(record.queue_name)
        if queue is None or record.queue_name in self._state.obliterating:
            self._pause_for_missing_queue(record)
            return
        try:
            job = self._enqueuer.new_job(
                queue, self._enqueue_request(record.queue_name, record.job), now)
        except RequestError as exc:  # the queue stopped allowing the job's own settings
            log.warning("schedule_fire_refused", schedule=record.name,
                        queue=record.queue_name, code=str(exc.code), error=exc.message)
            return
        durable = self._writer.submit(ops.FireSchedule(record.name, occurrence, job)).durable
        if job.status == JobStatus.WAITING:
            # An estimate: a fire the writer finds done already costs one refund.
            self._scheduler.add_waiting(queue, 1)
        durable.add_done_callback(partial(self._fired, runtime, occurrence, job))

    def _fired(self, runtime: ScheduleRuntime, occurrence: int, job: JobRecord,
               durable: "asyncio.Future[str | None]") -> None:
        name = runtime.record.name
        error = durable.exception()
        if isinstance(error, OverhopError) and error.code == ErrorCode.QUEUE_NOT_FOUND:
            self._pause_for_missing_queue(runtime.record)
            return
        if error is not None:
            log.error("schedule_fire_failed", schedule=name, queue=job.queue_name,
                      error=str(error))
            return
        if durable.result() is None:
            log.info("schedule_fire_skipped", schedule=name, queue=job.queue_name,
                     occurrence_ms=occurrence)
            return
        self._state.tally.enqueued(job.queue_name, 1)
        fires = self._state.tally.schedule_fires
        fires[name] = fires.get(name, 0) + 1
        if self._schedules.get(name) is runtime and (
                runtime.record.last_fire_ms is None or occurrence > runtime.record.last_fire_ms):
            runtime.record = runtime.record.with_fire(occurrence)
        log.info("schedule_fired", schedule=name, queue=job.queue_name, jid=job.job_id,
                 occurrence_ms=occurrence)

    def _pause_for_missing_queue(self, record: ScheduleRecord) -> None:
        """The target queue is gone: pause the schedule rather than fire into nothing."""
        if record.name not in self._schedules or record.paused:
            return
        log.warning("schedule_paused_queue_missing", schedule=record.name,
                    queue=record.queue_name)
        durable = self._writer.submit(ops.SetSchedulePaused(record.name, True,
                                                            self._clock())).durable
        _then(durable, self._paused_or_resumed)

    @staticmethod
    def _enqueue_request(queue_name: str, job: ScheduleJob) -> EnqueueRequest:
        return EnqueueRequest(queue_name, job.payload, None, job.max_attempts,
                              job.retry_interval_ms, job.lease_ms, job.headers)

    # -- the heap and the timer ----------------------------------------------------------

    def _push(self, runtime: ScheduleRuntime) -> None:
        if runtime.next_run_ms is None:
            return
        if len(self._heap) > 2 * len(self._schedules) + 64:  # drop entries that moved on
            self._heap = [(r.next_run_ms, i, r.record.name)
                          for i, r in enumerate(self._schedules.values())
                          if r.next_run_ms is not None and not r.record.paused]
            heapq.heapify(self._heap)
            self._sequence = len(self._heap)
            if any(entry[2] == runtime.record.name for entry in self._heap):
                return
        self._sequence += 1
        heapq.heappush(self._heap, (runtime.next_run_ms, self._sequence, runtime.record.name))

    def _arm_timer(self) -> None:
        """Wake when the earliest next run is due (a heartbeat tick would be up to a
        second late, too late for a schedule with seconds)."""
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_later(
            max(0, due - self._clock()) / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.fire_due(self._clock())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _then(durable: "asyncio.Future[Any]", shape: Callable[[Any], Any],
          ended: Callable[[], None] | None = None) -> "asyncio.Future[Any]":
    """A future of `shape(result)` once `durable` resolves (its error, if it fails)."""
    result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(done: "asyncio.Future[Any]") -> None:
        if ended is not None:
            ended()
        if result.cancelled():
            return
        error = done.exception()
        if error is not None:
            result.set_exception(error)
            return
        try:
            result.set_result(shape(done.result()))
        except Exception as exc:  # a bug in shaping: the request still gets its ERR
            result.set_exception(exc)

    durable.add_done_callback(settle)
    return result
