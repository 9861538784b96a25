"""The worker runner's job logs (JOBLOG) and its heartbeat pacing from the REGISTER limits."""

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from overhop_client import AsyncClient, Job, JobContext, JobStatus, Quest, ServerLimits, Worker

from tests.sdk.harness import running, wait_for_job, wait_for_status
from tests.support.server_process import ServerProcess


def test_log_lines_are_stored_before_the_outcome(url: str) -> None:
    async def main() -> None:
        app = Worker(url)

        @app.handler("async-logs")
        async def async_handler(ctx: JobContext) -> str:
            ctx.log("first")
            ctx.log("x" * 100_000)  # longer than the server takes: cut to its limit
            ctx.log("last")
            return "done"

        @app.handler("thread-logs")
        def thread_handler(ctx: JobContext) -> int:
            for n in range(150):  # more than one JOBLOG carries
                ctx.log(f"line {n}")
            return 150

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("async-logs")
            await client.add_queue("thread-logs")
            async_jid = await client.enqueue("async-logs")
            thread_jid = await client.enqueue("thread-logs")
            async with running(app):
                job = await wait_for_status(client, async_jid, JobStatus.COMPLETED)
                assert client.limits is not None
                limit = client.limits.max_log_line_bytes
                # Read as soon as the job is completed: the lines were stored first.
                assert [entry.line for entry in job.logs] == ["first", "x" * limit, "last"]
                job = await wait_for_status(client, thread_jid, JobStatus.COMPLETED)
                assert [entry.line for entry in job.logs] == [f"line {n}" for n in range(150)]

    asyncio.run(main())


def test_log_lines_reach_the_server_while_the_handler_runs(url: str) -> None:
    async def main() -> None:
        app = Worker(url)
        finish = asyncio.Event()
        after_end: list[JobContext] = []

        @app.handler("slow-logs")
        async def slow(ctx: JobContext) -> None:
            ctx.log("working")
            await finish.wait()
            after_end.append(ctx)

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("slow-logs")
            jid = await client.enqueue("slow-logs")
            async with running(app):
                job = await wait_for_job(client, jid, lambda j: len(j.logs) == 1,
                                         "the line sent before the handler ends")
                assert job.status == JobStatus.ACTIVE
                assert job.logs[0].line == "working"
                finish.set()
                await wait_for_status(client, jid, JobStatus.COMPLETED)
                # A line logged after the outcome stays local.
                after_end[0].log("too late")
                await after_end[0].flush_logs()
                job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert [entry.line for entry in job.logs] == ["working"]
                assert after_end[0].logs == ["working", "too late"]

    asyncio.run(main())


def _limits(stale_after: timedelta) -> ServerLimits:
    return ServerLimits(timedelta(seconds=1), stale_after, timedelta(seconds=10),
                        8 << 20, (8 << 20) - 4096, 65536, 4096)


def _quest(lease_ms: int) -> Quest:
    return Quest("d", "s", "q:j", "q", 1, 3, lease_ms, 10000, None)


def test_heartbeat_interval_stays_below_the_lease_and_stale_after() -> None:
    app = Worker(max_heartbeat_interval=10.0)
    assert app.heartbeat_interval(_quest(60_000), None) == 10.0
    assert app.heartbeat_interval(_quest(60_000), _limits(timedelta(seconds=30))) == 10.0
    assert app.heartbeat_interval(_quest(60_000), _limits(timedelta(seconds=6))) == 2.0
    assert app.heartbeat_interval(_quest(900), _limits(timedelta(seconds=6))) == 0.3


def test_heartbeats_keep_a_worker_from_going_stale(
        start_server: Callable[..., ServerProcess]) -> None:
    # The server drops a worker holding jobs after one silent second; the lease (a minute)
    # and the runner's default cap (ten seconds) would both beat far too rarely for that.
    server = start_server("--worker.stale_after_ms", "1000", "--heartbeat.interval_ms", "100")
    url = f"127.0.0.1:{server.port}"

    async def main() -> None:
        app = Worker(url)
        finish = asyncio.Event()

        @app.handler("patient")
        async def patient(ctx: JobContext) -> str:
            await finish.wait()
            return "finished"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("patient", max_attempts=1)
            jid = await client.enqueue("patient")
            async with running(app):
                def lease_end(job: Job) -> Any:
                    return job.delivery.lease_expires_at if job.delivery else None

                first = await wait_for_job(client, jid, lambda j: lease_end(j) is not None,
                                           "acknowledged")
                # Twice the stale time later, the same delivery is still out.
                later = await wait_for_job(
                    client, jid, lambda j: lease_end(j) is not None
                    and lease_end(j) > lease_end(first) + timedelta(seconds=2),
                    "heartbeats for two seconds")
                assert later.delivery is not None and first.delivery is not None
                assert later.delivery.delivery_id == first.delivery.delivery_id
                finish.set()
                job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert [a.outcome for a in job.history] == ["completed"]

    asyncio.run(main())
