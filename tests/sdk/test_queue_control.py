"""Queue control through the SDK against a real server: live settings, rate limits,
retention settings, clearing, obliterating, relative delays and why jobs wait."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from overhop_client import (
    AsyncClient,
    Backoff,
    BlockReason,
    ClearedJobs,
    Client,
    DeliveryNotFoundError,
    DeliveryStaleError,
    InvalidPayloadError,
    JobOverrides,
    JobStatus,
    QueueConfig,
    QueueHasActiveJobsError,
    QueueNotFoundError,
    QueueState,
    RateStats,
)

from tests.sdk.harness import DEADLINE_S, wait_for_job
from tests.support.server_process import ServerProcess


def test_set_queue_changes_live_settings_and_none_clears_them(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("live", max_attempts=2)
            own = await client.enqueue("live", max_attempts=7, lease=timedelta(seconds=9))
            follows = await client.enqueue("live")

            config = await client.set_queue(
                "live", concurrency_limit=4, max_attempts=5, rate_limit=20,
                rate_window=timedelta(seconds=2), keep_completed=100,
                keep_completed_for=timedelta(days=1), keep_failed=50,
                keep_failed_for=timedelta(hours=6), backoff=Backoff.EXPONENTIAL,
                retry_interval=timedelta(milliseconds=250))
            assert config == QueueConfig(
                concurrency_limit=4, max_attempts=5, retry_interval=timedelta(milliseconds=250),
                backoff=Backoff.EXPONENTIAL, rate_limit=20, rate_window=timedelta(seconds=2),
                keep_completed=100, keep_completed_for=timedelta(days=1), keep_failed=50,
                keep_failed_for=timedelta(hours=6))
            info = await client.queue("live")
            assert info is not None and info.config == config

            # Jobs follow the queue's live settings unless they set their own.
            job = await client.job(follows)
            assert job is not None
            assert (job.max_attempts, job.overrides) == (5, JobOverrides())
            assert job.retry_interval == timedelta(milliseconds=250)
            job = await client.job(own)
            assert job is not None
            assert (job.max_attempts, job.lease) == (7, timedelta(seconds=9))
            assert job.overrides == JobOverrides(max_attempts=7, lease=timedelta(seconds=9))

            cleared = await client.set_queue("live", concurrency_limit=None, rate_limit=None,
                                             keep_failed_for=None)
            assert (cleared.concurrency_limit, cleared.rate_limit, cleared.keep_failed_for) == (
                None, None, None)
            assert cleared.keep_completed == 100  # untouched

            with pytest.raises(ValueError, match="cannot be cleared"):
                await client.set_queue("live", rate_window=None)
            with pytest.raises(ValueError, match="at least one"):
                await client.set_queue("live")
            with pytest.raises(TypeError, match="unknown queue setting"):
                await client.set_queue("live", speed=3)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="timedelta"):
                await client.set_queue("live", lease=5000)  # type: ignore[typeddict-item]
            with pytest.raises(InvalidPayloadError):
                await client.set_queue("live", max_attempts=0)
            with pytest.raises(QueueNotFoundError):
                await client.set_queue("missing", max_attempts=2)
            # A refused change changed nothing.
            info = await client.queue("live")
            assert info is not None and info.config == cleared

    asyncio.run(main())


def test_add_queue_takes_rate_and_retention_and_qstats_shows_the_rate(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("metered", rate_limit=1, rate_window=timedelta(minutes=1),
                                   keep_completed=3, keep_failed_for=timedelta(hours=1))
            info = await client.queue("metered")
            assert info is not None
            assert (info.config.rate_limit, info.config.rate_window) == (
                1, timedelta(minutes=1))
            assert (info.config.keep_completed, info.config.keep_failed_for) == (
                3, timedelta(hours=1))

            stats = await client.stats("metered")
            assert stats.rate == RateStats(1, timedelta(minutes=1), 0)
            assert (stats.state, stats.oldest_waiting_age) == (QueueState.ACTIVE, None)

            first = await client.enqueue("metered", 1)
            second = await client.enqueue("metered", 2)
            job = await client.job(first)
            assert job is not None and job.blocked_by is not None
            assert job.blocked_by.reason == BlockReason.NO_WORKER_CREDIT
            assert job.blocked_by.details == {"subscriptions": 0}

            await client.subscribe("metered", 5)
            quest = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            assert quest.jid == first
            running = await client.job(first)
            assert running is not None and running.blocked_by is None
            held = await client.job(second)
            assert held is not None and held.blocked_by is not None
            assert held.blocked_by.reason == BlockReason.RATE_LIMITED
            until = held.blocked_by.until
            assert until is not None
            assert timedelta(seconds=50) < until - datetime.now(UTC) <= timedelta(minutes=1)

            stats = await client.stats("metered")
            assert stats.rate is not None and stats.rate.started_in_window == 1
            assert stats.oldest_waiting_age is not None
            assert (stats.counts.active, stats.counts.waiting, stats.in_flight) == (1, 1, 1)
            await client.pause("metered")
            assert (await client.stats("metered")).state == QueueState.PAUSED
            paused = await client.job(second)
            assert paused is not None and paused.blocked_by is not None
            assert paused.blocked_by.reason == BlockReason.QUEUE_PAUSED

    asyncio.run(main())


def test_delay_is_counted_by_the_server_and_shown_as_scheduled(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("later")
            before = datetime.now(UTC)
            jid = await client.enqueue("later", delay=timedelta(hours=1))
            after = datetime.now(UTC)
            job = await client.job(jid)
            assert job is not None and job.status == JobStatus.DELAYED
            start = job.execution_start_at
            assert start is not None
            slack = timedelta(milliseconds=2)
            assert before + timedelta(hours=1) - slack <= start <= after + timedelta(hours=1)
            assert job.blocked_by is not None
            assert (job.blocked_by.reason, job.blocked_by.until) == (BlockReason.SCHEDULED, start)
            with pytest.raises(ValueError, match="negative"):
                await client.enqueue("later", delay=timedelta(seconds=-1))

    asyncio.run(main())


def test_clear_removes_pending_jobs_and_obliterate_removes_the_queue(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("doomed")
            jids = [await client.enqueue("doomed", n) for n in range(3)]
            await client.enqueue("doomed", delay=timedelta(hours=1))
            await client.subscribe("doomed", 1)
            quest = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            assert quest.jid == jids[0]
            await client.pause("doomed")
            await client.enqueue("doomed", "new")

            removed = await client.clear_queue("doomed")
            assert removed == ClearedJobs(new=1, waiting=2, delayed=1)
            assert removed.total == 4
            stats = await client.stats("doomed")
            assert (stats.counts.total, stats.counts.active) == (1, 1)
            assert await client.clear_queue("doomed") == ClearedJobs()

            with pytest.raises(QueueHasActiveJobsError) as refused:
                await client.obliterate_queue("doomed")
            assert refused.value.code == "QUEUE_HAS_ACTIVE_JOBS"
            assert await client.obliterate_queue("doomed", force=True) == 1
            assert await client.queue("doomed") is None
            assert await client.job(quest.jid) is None
            # The fenced delivery's outcome is refused: its job is gone.
            with pytest.raises(DeliveryNotFoundError):
                await client.complete(quest, "too late")
            with pytest.raises(QueueNotFoundError):
                await client.clear_queue("doomed")

    asyncio.run(main())


def test_job_logs_are_stored_split_into_batches_and_bounded(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("logged")
            jid = await client.enqueue("logged")
            await client.subscribe("logged", 1)
            quest = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            totals = await client.log(quest, "starting", "step 1")
            assert (totals.kept, totals.dropped) == (2, 0)
            many = [f"line {n}" for n in range(250)]  # three JOBLOG messages
            totals = await client.log(quest, *many)
            assert (totals.kept, totals.dropped) == (252, 0)
            assert client.limits is not None
            with pytest.raises(ValueError, match="longer"):
                await client.log(quest, "x" * (client.limits.max_log_line_bytes + 1))
            with pytest.raises(ValueError, match="at least one"):
                await client.log(quest)
            await client.complete(quest, "ok")

            job = await client.job(jid)
            assert job is not None
            assert [entry.line for entry in job.logs] == ["starting", "step 1", *many]
            assert job.logs_dropped == 0
            assert all(entry.at is not None for entry in job.logs)
            assert [(a.outcome, a.counted) for a in job.history] == [("completed", True)]
            with pytest.raises(DeliveryStaleError):
                await client.log(quest, "after the end")

    asyncio.run(main())


def test_released_attempts_are_not_counted(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("handback")
            jid = await client.enqueue("handback")
            sid = await client.subscribe("handback", 1)
            first = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            await client.release(first)
            await client.credit(sid, 1)
            second = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            assert second.attempt == 1  # the release used no attempt
            await client.complete(second)
            job = await wait_for_job(client, jid, lambda j: len(j.history) == 2)
            assert [(a.outcome, a.counted) for a in job.history] == [
                ("released", False), ("completed", True)]

    asyncio.run(main())


def test_register_reports_the_server_limits(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--worker.stale_after_ms", "4000", "--heartbeat.interval_ms", "200",
                          "--dispatch.ack_timeout_ms", "1500", "--jobs.max_log_line_bytes",
                          "512", "--wire.max_envelope_size_bytes", "65536")

    async def main() -> None:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}") as client:
            limits = client.limits
            assert limits is not None
            assert (limits.stale_after, limits.heartbeat_interval, limits.ack_timeout) == (
                timedelta(seconds=4), timedelta(milliseconds=200),
                timedelta(milliseconds=1500))
            assert (limits.max_envelope_size_bytes, limits.max_job_payload_bytes) == (
                65536, 65536 - 4096)
            assert (limits.max_log_line_bytes, limits.max_result_bytes) == (512, 65536)

    asyncio.run(main())


def test_blocking_client_has_the_queue_control_calls(url: str) -> None:
    with Client(url) as client:
        client.add_queue("blocking")
        config = client.set_queue("blocking", rate_limit=10)
        assert config.rate_limit == 10
        client.enqueue("blocking", 1)
        assert client.clear_queue("blocking") == ClearedJobs(waiting=1)
        assert client.obliterate_queue("blocking") == 0
        assert client.queue("blocking") is None
