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
from dataclasses import dataclass, replace
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

    def forget_queue(self, queue_name: str) -> None:
        """Cluster mode: the queue went to another broker, which fires its schedules now
        (their entries in the timer heap are skipped once their schedule is gone)."""
        for name in [name for name, runtime in self._schedules.items()
                     if runtime.record.queue_name == queue_name]:
            del self._schedules[name]

    # -- changes -------------------------------------------------------------------------
    # Each change is made in memory at once, so that the requests handled after it see it
    # (as queue changes are seen), and undone should its write fail. The writer applies
    # the changes and the fires in the order they were made.

    def add(self, request: ScheduleRequest, now: int) -> "asyncio.Future[ScheduleRuntime]":
        """Add a schedule, or replace the one of that name (its last fire is kept)."""
        zone = parse_timezone(request.timezone)
        spec = parse_cron(request.cron, zone, now)
        queue = self._state.user_queue(request.queue_name)
        self._enqueuer.new_job(queue, self._enqueue_request(request.queue_name, request.job),
                               now)  # OVERRIDE_NOT_ALLOWED now rather than at each fire
        name = request.name
        previous = self._schedules.get(name)
        if previous is None and len(self._schedules) >= self._max:
            raise RequestError(ErrorCode.TOO_MANY_SCHEDULES,
                               f"the server holds {self._max} schedules, its limit "
                               "(schedules.max_schedules)")
        record = ScheduleRecord(name, request.queue_name, spec.expression, zone.key,
                                request.job, request.missed, False, None, now, now)
        if previous is not None:  # as the writer stores a replacement
            record = replace(record, last_fire_ms=previous.record.last_fire_ms,
                             created_at_ms=previous.record.created_at_ms)
        runtime = ScheduleRuntime(record, spec, spec.next_after(max(now, record.fired_up_to_ms)))
        self._install(runtime)
        durable = self._writer.submit(ops.PutSchedule(record)).durable
        return _then(durable, partial(self._stored, runtime, _copy(runtime), "schedule_added"),
                     partial(self._undo_add, runtime, previous))

    def _undo_add(self, runtime: ScheduleRuntime, previous: ScheduleRuntime | None) -> None:
        name = runtime.record.name
        if self._schedules.get(name) is not runtime:
            return  # changed again since
        if previous is None:
            del self._schedules[name]
        else:
            self._install(previous)

    def remove(self, name: str) -> "asyncio.Future[ScheduleRuntime]":
        runtime = self._known(name)
        del self._schedules[name]
        durable = self._writer.submit(ops.RemoveSchedule(name)).durable
        return _then(durable, partial(self._removed, runtime),
                     partial(self._undo_remove, runtime))

    def _removed(self, runtime: ScheduleRuntime, _: None) -> ScheduleRuntime:
        name = runtime.record.name
        if name not in self._schedules:
            self._state.tally.schedule_fires.pop(name, None)
        log.info("schedule_removed", schedule=name, queue=runtime.record.queue_name)
        return runtime

    def _undo_remove(self, runtime: ScheduleRuntime) -> None:
        if runtime.record.name not in self._schedules:
            self._install(runtime)

    def set_paused(self, name: str, paused: bool, now: int
                   ) -> "asyncio.Future[ScheduleRuntime]":
        runtime = self._known(name)
        before = _copy(runtime)
        runtime.record = runtime.record.with_paused(paused, now)
        # Resuming counts from now on (`counted_from_ms`): nothing is back-filled.
        runtime.next_run_ms = None if paused else runtime.spec.next_after(
            max(now, runtime.record.fired_up_to_ms))
        self._push(runtime)
        self._arm_timer()
        durable = self._writer.submit(ops.SetSchedulePaused(name, paused, now)).durable
        event = "schedule_paused" if paused else "schedule_resumed"
        return _then(durable, partial(self._stored, runtime, _copy(runtime), event),
                     partial(self._undo_pause, runtime, runtime.record, before))

    def _undo_pause(self, runtime: ScheduleRuntime, record: ScheduleRecord,
                    before: ScheduleRuntime) -> None:
        if self._schedules.get(record.name) is runtime and runtime.record is record:
            runtime.record, runtime.next_run_ms = before.record, before.next_run_ms
            self._push(runtime)
            self._arm_timer()

    def _stored(self, runtime: ScheduleRuntime, made: ScheduleRuntime, event: str,
                stored: ScheduleRecord) -> ScheduleRuntime:
        """A change is durable: log it, and learn a last fire the writer knew better (a
        fire of a replaced schedule). The reply shows the schedule as the change made it."""
        runtime.record = _with_later_fire(runtime.record, stored.last_fire_ms)
        log.info(event, schedule=stored.name, queue=stored.queue_name, cron=stored.cron,
                 tz=stored.timezone, missed=stored.missed.value)
        return ScheduleRuntime(_with_later_fire(made.record, stored.last_fire_ms), made.spec,
                               made.next_run_ms)

    def _install(self, runtime: ScheduleRuntime) -> None:
        self._schedules[runtime.record.name] = runtime
        self._push(runtime)
        self._arm_timer()

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
        # `self._heap`, not an alias of it: `_push` may rebuild it.
        while self._heap and self._heap[0][0] <= now and fired < FIRE_BATCH:
            at, _, name = heapq.heappop(self._heap)
            runtime = self._schedules.get(name)
            if runtime is None or runtime.next_run_ms != at or runtime.record.paused:
                continue  # moved on since this entry was pushed
            self._fire(runtime, at, now)
            fired += 1
            if runtime.record.paused:  # paused by the fire: its queue is gone
                continue
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
        if durable.cancelled():  # not by the writer: the write itself goes on, unobserved
            return
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
        if self._schedules.get(name) is runtime:
            runtime.record = _with_later_fire(runtime.record, occurrence)
        log.info("schedule_fired", schedule=name, queue=job.queue_name, jid=job.job_id,
                 occurrence_ms=occurrence)

    def _pause_for_missing_queue(self, record: ScheduleRecord) -> None:
        """The target queue is gone: pause the schedule rather than fire into nothing."""
        runtime = self._schedules.get(record.name)
        if (runtime is None or runtime.record.paused
                or runtime.record.queue_name != record.queue_name):  # replaced meanwhile
            return
        log.warning("schedule_paused_queue_missing", schedule=record.name,
                    queue=record.queue_name)
        self.set_paused(record.name, True, self._clock()).add_done_callback(
            partial(_log_failure, record))

    @staticmethod
    def _enqueue_request(queue_name: str, job: ScheduleJob) -> EnqueueRequest:
        return EnqueueRequest(queue_name, job.payload, None, job.max_attempts,
                              job.retry_interval_ms, job.lease_ms, job.headers, job.task,
                              job.priority)

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


def _copy(runtime: ScheduleRuntime) -> ScheduleRuntime:
    return ScheduleRuntime(runtime.record, runtime.spec, runtime.next_run_ms)


def _with_later_fire(record: ScheduleRecord, last_fire_ms: int | None) -> ScheduleRecord:
    """`record`, with `last_fire_ms` as its last fire if that is later than its own."""
    if last_fire_ms is None or (record.last_fire_ms is not None
                                and record.last_fire_ms >= last_fire_ms):
        return record
    return record.with_fire(last_fire_ms)


def _log_failure(record: ScheduleRecord, done: "asyncio.Future[ScheduleRuntime]") -> None:
    error = done.exception()
    if error is not None:
        log.error("schedule_pause_failed", schedule=record.name, queue=record.queue_name,
                  error=str(error))


def _then(durable: "asyncio.Future[Any]", shape: Callable[[Any], Any],
          undo: Callable[[], None]) -> "asyncio.Future[Any]":
    """A future of `shape(result)` once `durable` resolves; if it fails, `undo()` and its
    error."""
    result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(done: "asyncio.Future[Any]") -> None:
        if done.cancelled():  # not done by the writer's side; the write itself goes on
            result.cancel()
            return
        error = done.exception()
        if error is not None:
            undo()
            if not result.cancelled():
                result.set_exception(error)
            return
        if result.cancelled():
            return
        try:
            result.set_result(shape(done.result()))
        except Exception as exc:  # a bug in shaping: the request still gets its ERR
            result.set_exception(exc)

    durable.add_done_callback(settle)
    return result
