"""Schedules with explicit times: when occurrences fall (cronsim in a zone, across DST),
the missed-occurrence policy at boot, and the broker's fires on a real store and writer
driven by a manual clock (exactly once per occurrence, across restarts)."""

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from overhop.broker.schedules import ScheduleRequest
from overhop.broker.service import Broker
from overhop.config.schema import Config
from overhop.errors import ErrorCode, RequestError
from overhop.model.cron import CronSpec, parse_cron, parse_timezone, plan_boot
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueConfig
from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.storage import operations as ops
from overhop.storage.store import Store
from overhop.storage.writer import Writer

BERLIN = ZoneInfo("Europe/Berlin")


def utc_ms(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp()) * 1000


def local_ms(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=BERLIN).timestamp()) * 1000


def fires(spec: CronSpec, after_ms: int, count: int) -> list[int]:
    found = []
    for _ in range(count):
        next_ms = spec.next_after(after_ms)
        assert next_ms is not None
        found.append(next_ms)
        after_ms = next_ms
    return found


# -- when occurrences fall ------------------------------------------------------------


def test_a_daily_0230_in_berlin_fires_once_on_the_spring_forward_day() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    spec = parse_cron("30 2 * * *", BERLIN, utc_ms(2026, 3, 27))
    assert fires(spec, local_ms(2026, 3, 28, 12, 0), 3) == [
        utc_ms(2026, 3, 29, 1, 0),  # right after the jump: 03:00 CEST (Debian's cron)
        local_ms(2026, 3, 30, 2, 30),
        local_ms(2026, 3, 31, 2, 30),
    ]


def test_a_daily_0230_in_berlin_fires_once_on_the_fall_back_day() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice.
    spec = parse_cron("30 2 * * *", BERLIN, utc_ms(2026, 10, 23))
    assert fires(spec, local_ms(2026, 10, 24, 12, 0), 2) == [
        utc_ms(2026, 10, 25, 0, 30),  # the first 02:30 (CEST) only
        utc_ms(2026, 10, 26, 1, 30),  # 02:30 CET the next day
    ]


def test_six_fields_put_seconds_first_and_follow_the_clock_literally() -> None:
    spec = parse_cron("*/20 * * * * *", ZoneInfo("UTC"), 0)
    assert fires(spec, utc_ms(2026, 1, 1), 3) == [
        utc_ms(2026, 1, 1, 0, 0, 20), utc_ms(2026, 1, 1, 0, 0, 40), utc_ms(2026, 1, 1, 0, 1)]
    # A fraction of a second after an occurrence still counts from that occurrence.
    assert spec.next_after(utc_ms(2026, 1, 1) + 999) == utc_ms(2026, 1, 1, 0, 0, 20)
    literal = parse_cron("0 30 2 * * *", BERLIN, 0)
    assert fires(literal, local_ms(2026, 10, 24, 12, 0), 2) == [
        utc_ms(2026, 10, 25, 0, 30), utc_ms(2026, 10, 25, 1, 30)]  # both 02:30s


def test_latest_at_or_before_includes_the_instant_itself() -> None:
    spec = parse_cron("0 * * * *", BERLIN, 0)
    hour = utc_ms(2026, 1, 1, 5)
    assert spec.latest_at_or_before(hour) == hour
    assert spec.latest_at_or_before(hour - 1) == hour - 3_600_000
    assert spec.latest_at_or_before(hour + 1) == hour


@pytest.mark.parametrize(("expression", "zone", "code"), [
    ("61 * * * *", "UTC", ErrorCode.BAD_CRON),
    ("* * *", "UTC", ErrorCode.BAD_CRON),
    ("* * * * * * *", "UTC", ErrorCode.BAD_CRON),
    ("0 0 30 2 *", "UTC", ErrorCode.BAD_CRON),  # never
    ("   ", "UTC", ErrorCode.BAD_CRON),
    ("x" * 300, "UTC", ErrorCode.BAD_CRON),
    ("0 * * * *", "Mars/Olympus", ErrorCode.BAD_TIMEZONE),
    ("0 * * * *", "../etc/passwd", ErrorCode.BAD_TIMEZONE),
    ("0 * * * *", "", ErrorCode.BAD_TIMEZONE),
])
def test_bad_expressions_and_zones_are_refused(expression: str, zone: str,
                                               code: ErrorCode) -> None:
    with pytest.raises(RequestError) as info:
        parse_cron(expression, parse_timezone(zone), utc_ms(2026, 1, 1))
    assert info.value.code == code


# -- the missed policy at boot -----------------------------------------------------------


def record(missed: MissedPolicy, last_fire_ms: int | None, counted_from_ms: int,
           paused: bool = False) -> ScheduleRecord:
    return ScheduleRecord("s", "q", "0 * * * *", "UTC", ScheduleJob(), missed, paused,
                          last_fire_ms, counted_from_ms, counted_from_ms)


HOUR = 3_600_000
T0 = utc_ms(2026, 6, 1)
HOURLY = parse_cron("0 * * * *", ZoneInfo("UTC"), T0)


def test_nothing_missed_fires_nothing_and_keeps_the_next_run() -> None:
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0, T0), T0 + HOUR // 2)
    assert (plan.missed, plan.fire_ms, plan.next_run_ms) == (False, None, T0 + HOUR)


def test_skip_fires_nothing_for_the_time_down() -> None:
    plan = plan_boot(HOURLY, record(MissedPolicy.SKIP, T0, T0), T0 + 5 * HOUR + 10)
    assert (plan.missed, plan.fire_ms, plan.next_run_ms) == (True, None, T0 + 6 * HOUR)


def test_once_fires_one_job_stamped_with_the_latest_missed_occurrence() -> None:
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0, T0), T0 + 5 * HOUR + 10)
    assert (plan.missed, plan.fire_ms, plan.next_run_ms) == (True, T0 + 5 * HOUR,
                                                             T0 + 6 * HOUR)
    # Booting exactly on an occurrence: that one is the latest missed.
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0, T0), T0 + 2 * HOUR)
    assert (plan.fire_ms, plan.next_run_ms) == (T0 + 2 * HOUR, T0 + 3 * HOUR)


def test_the_persisted_last_fire_and_a_resume_are_never_fired_again() -> None:
    # The last fire is the occurrence at boot time: nothing is missed.
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0 + HOUR, T0), T0 + HOUR)
    assert (plan.missed, plan.fire_ms) == (False, None)
    # Resumed after the occurrences of a pause: they are not back-filled.
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0, T0 + 3 * HOUR + 5),
                     T0 + 3 * HOUR + 10)
    assert (plan.missed, plan.fire_ms, plan.next_run_ms) == (False, None, T0 + 4 * HOUR)


def test_a_paused_schedule_plans_nothing() -> None:
    plan = plan_boot(HOURLY, record(MissedPolicy.ONCE, T0, T0, paused=True), T0 + 9 * HOUR)
    assert (plan.missed, plan.fire_ms, plan.next_run_ms) == (False, None, None)


# -- the broker's fires, with a manual clock -------------------------------------------


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def drain(writer: Writer) -> None:
    """Until a barrier commits alone: every fire submitted (and its callbacks) is done."""
    for _ in range(50):
        before = writer.operations
        await writer.submit(ops.Barrier()).durable
        if writer.operations == before + 1:
            return
    raise AssertionError("the writer never went quiet")


Body = Callable[[Broker, Store, Writer, Clock], Awaitable[None]]


async def run_broker(path: Path, clock: Clock, body: Body) -> None:
    store = Store(path, map_size=1 << 24, sync=False)
    config = Config()
    config = dataclasses.replace(config, schedules=dataclasses.replace(config.schedules,
                                                                       max_schedules=2))
    writer = Writer(store, asyncio.get_running_loop(), sync=False, max_batch=64,
                    max_map_size=1 << 26, reserved_headroom=0, jobs=config.jobs)
    await writer.start()
    try:
        broker = Broker(config, store, writer, clock)
        await broker.boot()
        await drain(writer)
        await body(broker, store, writer, clock)
        broker.stop_dispatch()
    finally:
        await writer.stop()
        store.close()


def request(name: str, cron: str, missed: MissedPolicy = MissedPolicy.SKIP,
            tz: str | None = "Europe/Berlin") -> ScheduleRequest:
    return ScheduleRequest(name, "q", cron, tz, ScheduleJob(b"\xa1x", 2, None, None, None),
                           missed)


def waiting(store: Store) -> int:
    return store.counts("q")[JobStatus.WAITING]


def test_fires_once_per_occurrence_across_ticks_and_restarts(tmp_path: Path) -> None:
    clock = Clock(local_ms(2026, 3, 28, 12, 0))

    async def first(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        await broker.add_queue("q", QueueConfig())
        added = await broker.add_schedule(request("daily", "30 2 * * *",
                                                  MissedPolicy.ONCE))
        assert added.next_run_ms == utc_ms(2026, 3, 29, 1, 0)  # after the DST jump
        await broker.add_schedule(request("quick", "*/10 * * * * *"))
        with pytest.raises(RequestError) as info:
            broker.add_schedule(request("third", "0 * * * *"))
        assert info.value.code == ErrorCode.TOO_MANY_SCHEDULES
        broker.tick(clock.now)
        await drain(writer)
        assert waiting(store) == 0  # nothing due yet
        clock.now += 10_000  # one occurrence of `quick`
        broker.tick(clock.now)
        broker.tick(clock.now)  # a second tick at the same time fires nothing more
        await drain(writer)
        assert waiting(store) == 1
        clock.now += 35_000  # three more, fired at one tick: each occurrence once
        broker.tick(clock.now)
        await drain(writer)
        assert waiting(store) == 4
        quick = broker.schedules["quick"]
        assert quick.record.last_fire_ms == local_ms(2026, 3, 28, 12, 0, 40)
        assert quick.next_run_ms == local_ms(2026, 3, 28, 12, 0, 50)
        # Paused: nothing fires; resumed: nothing is back-filled.
        await broker.set_schedule_paused("quick", True)
        clock.now += 60_000
        broker.tick(clock.now)
        await drain(writer)
        assert waiting(store) == 4
        resumed = await broker.set_schedule_paused("quick", False)
        assert resumed.next_run_ms is not None and resumed.next_run_ms > clock.now
        await broker.remove_schedule("quick")
        clock.now = utc_ms(2026, 3, 29, 1, 0)  # the daily one, at 03:00 CEST
        broker.tick(clock.now)
        await drain(writer)
        assert waiting(store) == 5
        assert broker.schedules["daily"].record.last_fire_ms == clock.now
        job = store.list_jobs("q", JobStatus.WAITING, 4, 1, 1 << 20)[0][0]
        assert (job.payload, job.max_attempts) == (b"\xa1x", 2)

    asyncio.run(run_broker(tmp_path / "data", clock, first))

    # Restarted at once: the last fire is stored, so it does not fire again.
    async def second(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        assert set(broker.schedules) == {"daily"}
        broker.tick(clock.now)
        await drain(writer)
        assert waiting(store) == 5
        assert broker.schedules["daily"].next_run_ms == local_ms(2026, 3, 30, 2, 30)

    asyncio.run(run_broker(tmp_path / "data", clock, second))

    # Down for three days: `once` fires a single job, stamped with the latest occurrence.
    clock.now = local_ms(2026, 4, 1, 9, 0)

    async def third(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        assert waiting(store) == 6
        daily = broker.schedules["daily"]
        assert daily.record.last_fire_ms == local_ms(2026, 4, 1, 2, 30)
        assert daily.next_run_ms == local_ms(2026, 4, 2, 2, 30)

    asyncio.run(run_broker(tmp_path / "data", clock, third))


def test_skip_after_a_restart_and_a_queue_that_went_away(tmp_path: Path) -> None:
    clock = Clock(utc_ms(2026, 6, 1))

    async def first(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        await broker.add_queue("q", QueueConfig())
        await broker.add_schedule(request("hourly", "0 * * * *", tz=None))

    asyncio.run(run_broker(tmp_path / "data", clock, first))
    clock.now += 5 * HOUR + 1

    async def second(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        assert waiting(store) == 0  # skip: nothing for the five hours down
        assert broker.schedules["hourly"].next_run_ms == utc_ms(2026, 6, 1, 6)
        await broker.obliterate_queue("q", True)
        clock.now = utc_ms(2026, 6, 1, 6)
        broker.tick(clock.now)
        await drain(writer)
        hourly = broker.schedules["hourly"]
        assert hourly.record.paused and hourly.next_run_ms is None

    asyncio.run(run_broker(tmp_path / "data", clock, second))


def test_a_change_whose_write_is_refused_is_undone_in_memory(tmp_path: Path) -> None:
    """The store is made to disagree with memory by writing to it behind the broker's
    back (through the same writer), so that the broker's next write is refused."""
    clock = Clock(utc_ms(2026, 6, 1))

    async def body(broker: Broker, store: Store, writer: Writer, clock: Clock) -> None:
        await broker.add_queue("q", QueueConfig())
        await broker.add_schedule(request("kept", "0 * * * *"))
        await writer.submit(ops.RemoveSchedule("kept")).durable
        with pytest.raises(RequestError) as info:
            await broker.set_schedule_paused("kept", True)
        assert info.value.code == ErrorCode.SCHEDULE_NOT_FOUND
        kept = broker.schedules["kept"]
        assert not kept.record.paused and kept.next_run_ms == utc_ms(2026, 6, 1, 1)
        with pytest.raises(RequestError):
            await broker.remove_schedule("kept")
        assert broker.schedules["kept"] is kept  # back, as it was

        await writer.submit(ops.RemoveQueue("q")).durable  # the queue is gone on disk
        replacing = broker.add_schedule(request("kept", "*/5 * * * *"))
        assert broker.schedules["kept"].spec.expression == "*/5 * * * *"  # seen at once
        with pytest.raises(RequestError) as info:
            await replacing
        assert info.value.code == ErrorCode.QUEUE_NOT_FOUND
        assert broker.schedules["kept"] is kept
        with pytest.raises(RequestError):
            await broker.add_schedule(request("new", "0 * * * *"))
        assert set(broker.schedules) == {"kept"}

    asyncio.run(run_broker(tmp_path / "data", clock, body))
