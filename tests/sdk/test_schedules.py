"""Schedules through the Python client, async and blocking: add, list, pause, resume,
remove, the typed errors, and real jobs fired by a schedule with seconds."""

import asyncio
import time
from datetime import timedelta

import pytest
from overhop_client import (
    AsyncClient,
    BadCronError,
    BadTimezoneError,
    Client,
    JobStatus,
    MissedPolicy,
    QueueNotFoundError,
    ScheduleNotFoundError,
)

# Bound for the server's fires; never waited out when it behaves.
FIRE_TIMEOUT_S = 15.0


def test_the_async_client_manages_schedules_and_receives_their_jobs(url: str) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(url, name="scheduler") as client:
            await client.add_queue("reports")
            added = await client.add_schedule(
                "nightly", "reports", "0 3 * * *", timezone="Europe/Berlin",
                missed=MissedPolicy.ONCE, payload={"kind": "nightly"}, max_attempts=2,
                lease=timedelta(minutes=5), headers={"team": "ops"}, task="reports.nightly",
                priority=7)
            assert (added.task, added.priority) == ("reports.nightly", 7)
            assert (added.name, added.queue, added.cron, added.timezone) == (
                "nightly", "reports", "0 3 * * *", "Europe/Berlin")
            assert added.missed is MissedPolicy.ONCE and not added.paused
            assert added.next_run_at is not None and added.last_run_at is None
            assert added.next_run_at.utcoffset() == timedelta(0)
            assert added.payload == {"kind": "nightly"}
            assert added.overrides == {"max_attempts": 2, "lease_ms": 300_000}
            assert added.headers == {"team": "ops"}

            ticking = await client.add_schedule("tick", "reports", "* * * * * *")
            assert ticking.timezone == "UTC" and ticking.missed is MissedPolicy.SKIP
            assert (ticking.task, ticking.priority) == (None, 5)
            assert [s.name for s in await client.schedules()] == ["nightly", "tick"]
            deadline = time.monotonic() + FIRE_TIMEOUT_S
            while (await client.stats("reports")).counts.waiting < 2:
                assert time.monotonic() < deadline, "the schedule did not fire"
                await asyncio.sleep(0.05)
            paused = await client.pause_schedule("tick")
            assert paused.paused and paused.next_run_at is None
            assert paused.last_run_at is not None
            resumed = await client.resume_schedule("tick")
            assert not resumed.paused and resumed.next_run_at is not None
            await client.remove_schedule("tick")
            jobs = await client.jobs("reports", JobStatus.WAITING)
            assert jobs and all(job.payload is None for job in jobs)

            with pytest.raises(ScheduleNotFoundError):
                await client.remove_schedule("tick")
            with pytest.raises(BadCronError):
                await client.add_schedule("bad", "reports", "every day")
            with pytest.raises(BadTimezoneError):
                await client.add_schedule("bad", "reports", "0 3 * * *",
                                          timezone="Europe/Atlantis")
            with pytest.raises(QueueNotFoundError):
                await client.add_schedule("bad", "nowhere", "0 3 * * *")
            with pytest.raises(ValueError):
                await client.add_schedule("bad", "reports", "0 3 * * *", missed="never")

    asyncio.run(scenario())


def test_the_blocking_client_manages_schedules(url: str) -> None:
    with Client(url, name="scheduler") as client:
        client.add_queue("mail")
        added = client.add_schedule("digest", "mail", "0 8 * * MON", timezone="UTC")
        assert added.next_run_at is not None and added.next_run_at.weekday() == 0
        assert [s.name for s in client.schedules()] == ["digest"]
        assert client.pause_schedule("digest").paused
        assert not client.resume_schedule("digest").paused
        client.remove_schedule("digest")
        assert client.schedules() == []
        with pytest.raises(ScheduleNotFoundError):
            client.pause_schedule("digest")
