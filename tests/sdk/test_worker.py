"""The worker runner against a real server: handlers, results, failures, timeouts, leases."""

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from overhop_client import AsyncClient, Job, JobContext, JobStatus, QueueStats, Worker

from tests.sdk.harness import running, wait_for_job, wait_for_status, wait_until
from tests.support.server_process import ServerProcess

QUICK_RETRY = timedelta(milliseconds=10)


def test_async_and_thread_handlers_complete_jobs(url: str) -> None:
    loop_thread: list[threading.Thread] = []
    seen: dict[str, Any] = {}

    async def main() -> None:
        loop_thread.append(threading.current_thread())
        app = Worker(url, concurrency=3, name="sdk-worker")

        @app.handler("async-jobs")
        async def echo(ctx: JobContext) -> dict[str, Any]:
            ctx.log(f"got {ctx.payload}")
            ctx.progress({"step": 1})
            seen[ctx.jid] = (ctx.attempt, ctx.max_attempts, ctx.queue, list(ctx.logs))
            return {"echo": ctx.payload}

        @app.handler("thread-jobs")
        def double(ctx: JobContext) -> int:
            seen[ctx.jid] = threading.current_thread()
            ctx.progress(50)
            return ctx.payload * 2

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("async-jobs", max_attempts=4)
            await client.add_queue("thread-jobs")
            async with running(app):
                async_ids = await asyncio.gather(
                    *(client.enqueue("async-jobs", {"n": n}) for n in range(20)))
                thread_ids = await asyncio.gather(
                    *(client.enqueue("thread-jobs", n) for n in range(20)))
                for n, jid in enumerate(async_ids):
                    job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                    assert job.result == {"echo": {"n": n}}
                    assert [a.outcome for a in job.history] == ["completed"]
                    assert seen[jid] == (1, 4, "async-jobs", [f"got {{'n': {n}}}"])
                for n, jid in enumerate(thread_ids):
                    job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                    assert job.result == n * 2
                    assert seen[jid] is not loop_thread[0]

    asyncio.run(main())


def test_concurrency_is_enforced_with_credits(url: str) -> None:
    async def main() -> None:
        app = Worker(url, concurrency=2)
        gate = asyncio.Event()
        running_now = 0
        most = 0

        @app.handler("limited")
        async def hold(ctx: JobContext) -> None:
            nonlocal running_now, most
            running_now += 1
            most = max(most, running_now)
            await gate.wait()
            running_now -= 1

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("limited")
            jids = await asyncio.gather(*(client.enqueue("limited", n) for n in range(10)))
            async with running(app):
                async def observe() -> tuple[QueueStats, int]:
                    return await client.stats("limited"), running_now

                held, _ = await wait_until(
                    observe, lambda seen: seen[0].counts.active == 2 and seen[1] == 2,
                    "two jobs running")
                # The server holds no credit for this worker: nothing more can come.
                assert (held.credits, held.counts.waiting, held.subscriptions) == (0, 8, 1)
                gate.set()
                for jid in jids:
                    await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert most == 2
                # Every credit is back: the subscription holds `concurrency` again.
                await wait_until(observe, lambda seen: seen[0].credits == 2, "credits restored")

    asyncio.run(main())


def test_an_exception_fails_the_attempt_retries_then_fails_the_job(url: str) -> None:
    async def main() -> None:
        app = Worker(url)

        @app.handler("flaky")
        async def flaky(ctx: JobContext) -> str:
            if ctx.payload == "always" or ctx.attempt == 1:
                raise ValueError(f"boom on attempt {ctx.attempt}")
            return f"ok on attempt {ctx.attempt}"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("flaky", max_attempts=3, retry_interval=QUICK_RETRY)
            recovers = await client.enqueue("flaky", "once")
            never = await client.enqueue("flaky", "always")
            async with running(app):
                job = await wait_for_status(client, recovers, JobStatus.COMPLETED)
                assert job.result == "ok on attempt 2"
                assert [a.outcome for a in job.history] == ["failed", "completed"]
                error = job.history[0].error
                assert error is not None and error["message"] == "boom on attempt 1"
                assert "Traceback" in error["details"]
                assert "ValueError: boom on attempt 1" in error["details"]

                job = await wait_for_status(client, never, JobStatus.FAILED)
                assert job.attempts_so_far == 3
                assert [a.error_message for a in job.history] == [
                    "boom on attempt 1", "boom on attempt 2", "boom on attempt 3"]

                # RETRY gives it a fresh set of attempts, which it uses up again.
                assert await client.retry_job(never) == JobStatus.WAITING
                job = await wait_for_job(client, never,
                                         lambda j: len(j.history) == 6, "six attempts")
                assert job.status == JobStatus.FAILED

    asyncio.run(main())


def test_a_result_that_cannot_be_stored_fails_the_job(url: str) -> None:
    async def main() -> None:
        app = Worker(url)

        @app.handler("odd-results")
        async def odd(ctx: JobContext) -> object:
            return {1, 2, 3}  # a set is not MessagePack

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("odd-results", max_attempts=1)
            jid = await client.enqueue("odd-results")
            async with running(app):
                job = await wait_for_status(client, jid, JobStatus.FAILED)
                message = job.history[0].error_message
                assert message is not None and message.startswith("the result cannot be stored")

    asyncio.run(main())


def test_a_handler_past_its_timeout_is_failed_with_timeout(url: str) -> None:
    unblock = threading.Event()

    async def main() -> None:
        app = Worker(url)
        cancelled = asyncio.Event()

        @app.handler("slow-async", timeout=0.2)
        async def forever(ctx: JobContext) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        @app.handler("slow-thread", timeout=timedelta(milliseconds=200))
        def blocking(ctx: JobContext) -> str:
            unblock.wait(30)
            return "too late"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("slow-async", max_attempts=1)
            await client.add_queue("slow-thread", max_attempts=1)
            async with running(app):
                for queue in ("slow-async", "slow-thread"):
                    jid = await client.enqueue(queue)
                    job = await wait_for_status(client, jid, JobStatus.FAILED)
                    assert [a.error_message for a in job.history] == ["timeout"]
                assert cancelled.is_set()
                unblock.set()

    try:
        asyncio.run(main())
    finally:
        unblock.set()


def test_handlers_enqueue_follow_up_jobs(url: str) -> None:
    async def main() -> None:
        app = Worker(url)
        delivered: list[str] = []

        @app.handler("orders")
        async def fan_out(ctx: JobContext) -> list[str]:
            return [await ctx.enqueue("emails", {"order": ctx.payload, "line": line})
                    for line in range(2)]

        @app.handler("emails")
        def send(ctx: JobContext) -> str:
            delivered.append(ctx.jid)
            if ctx.payload["line"] == 0:
                ctx.enqueue_blocking("audit", ctx.jid, delay=timedelta(milliseconds=1))
            return "sent"

        @app.handler("audit")
        async def audit(ctx: JobContext) -> str:
            return f"audited {ctx.payload}"

        async with await AsyncClient.connect(url) as client:
            for queue in ("orders", "emails", "audit"):
                await client.add_queue(queue)
            async with running(app):
                order = await client.enqueue("orders", 42)
                job = await wait_for_status(client, order, JobStatus.COMPLETED)
                follow_ups = job.result
                assert len(follow_ups) == 2
                for jid in follow_ups:
                    email = await wait_for_status(client, jid, JobStatus.COMPLETED)
                    assert email.payload["order"] == 42
                audits = await wait_until(lambda: client.jobs("audit", JobStatus.COMPLETED),
                                          lambda page: len(page) == 1, "audit done")
                assert audits.jobs[0].result == f"audited {follow_ups[0]}"
                assert sorted(delivered) == sorted(follow_ups)

    asyncio.run(main())


def test_heartbeats_keep_the_lease_while_the_handler_runs(
        start_server: Callable[..., ServerProcess]) -> None:
    # Leases are checked every 100 ms: a job whose lease is not extended loses it quickly.
    server = start_server("--heartbeat.interval_ms", "100")
    url = f"127.0.0.1:{server.port}"
    lease = timedelta(milliseconds=300)

    async def main() -> None:
        app = Worker(url)
        finish = asyncio.Event()

        @app.handler("long")
        async def long_job(ctx: JobContext) -> str:
            await finish.wait()
            return "finished"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("long", max_attempts=1, lease=lease)
            jid = await client.enqueue("long")
            async with running(app):
                def lease_end(job: Job) -> Any:
                    return job.delivery.lease_expires_at if job.delivery else None

                first = await wait_for_job(client, jid, lambda j: lease_end(j) is not None,
                                           "acknowledged")
                first_end = lease_end(first)
                # Still the same delivery, three leases later: it was extended, not lost.
                later = await wait_for_job(
                    client, jid, lambda j: lease_end(j) is not None
                    and lease_end(j) > first_end + 3 * lease, "lease extended")
                assert later.status == JobStatus.ACTIVE
                assert later.delivery is not None and first.delivery is not None
                assert later.delivery.delivery_id == first.delivery.delivery_id
                finish.set()
                job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert [a.outcome for a in job.history] == ["completed"]

    asyncio.run(main())


FULL_STORE = ("--storage.initial_map_size_bytes", "1048576",
              "--storage.max_map_size_bytes", "1048576",
              "--storage.reserved_headroom_bytes", "0")
BIG_RESULT = {"blob": b"r" * 60_000}  # 40 of these cannot fit in the 1 MiB store


def test_an_outcome_the_server_could_not_write_is_sent_again(start_server) -> None:
    server: ServerProcess = start_server(*FULL_STORE)
    url = f"127.0.0.1:{server.port}"

    async def main() -> None:
        app = Worker(url, concurrency=4)

        @app.handler("big")
        async def produce(ctx: JobContext) -> dict[str, bytes]:
            return BIG_RESULT

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("big")
            jids = await asyncio.gather(*(client.enqueue("big", n) for n in range(40)))

            async def store_filled() -> bool:
                return bool(server.events("delivery_end_not_written"))

            async def clear_completed() -> int:
                for job in await client.jobs("big", JobStatus.COMPLETED):
                    await client.remove_job(job.jid)
                    removed.add(job.jid)
                return len(removed)

            removed: set[str] = set()
            async with running(app):
                await wait_until(store_filled, bool, "a COMPLETE refused for lack of space")
                # Make room: the runner's next try of the refused outcome goes through.
                await wait_until(clear_completed, lambda count: count == len(jids),
                                 "every job completed")
            counts = (await client.stats("big")).counts
            assert counts.active == counts.waiting == counts.delayed == counts.failed == 0

    asyncio.run(main())
