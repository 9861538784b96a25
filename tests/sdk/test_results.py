"""Waiting for results without polling: `run`, `result`, failures, removals, timeouts."""

import asyncio
import threading
from datetime import timedelta

import pytest
from overhop_client import (
    AsyncClient,
    Client,
    JobContext,
    JobFailedError,
    JobRemovedError,
    JobStatus,
    Worker,
)

from tests.sdk.harness import DEADLINE_S, running


def _worker(url: str) -> Worker:
    app = Worker(url, concurrency=4)

    @app.handler("math")
    async def double(ctx: JobContext) -> object:
        if ctx.payload == "boom":
            raise ValueError("cannot double boom")
        if ctx.payload == "slow":
            await asyncio.sleep(DEADLINE_S)
        return ctx.payload * 2

    return app


def test_run_and_result_wait_for_the_outcome(url: str) -> None:
    async def main() -> None:
        app = _worker(url)
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("math")
            async with running(app):
                assert await client.run("math", 21, timeout=DEADLINE_S) == 42
                jid = await client.enqueue("math", [1])
                assert await client.result(jid, timeout=DEADLINE_S) == [1, 1]
                # An ended job's result comes at once, from the server.
                assert await client.result(jid, timeout=DEADLINE_S) == [1, 1]
                results = await asyncio.gather(*(client.run("math", n, timeout=DEADLINE_S)
                                                 for n in range(20)))
                assert results == [n * 2 for n in range(20)]

    asyncio.run(main())


def test_a_failed_job_raises_with_its_error_and_history(url: str) -> None:
    async def main() -> None:
        app = _worker(url)
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("math", max_attempts=2, retry_interval=timedelta(milliseconds=1))
            async with running(app):
                with pytest.raises(JobFailedError) as failed:
                    await client.run("math", "boom", timeout=DEADLINE_S)
        error = failed.value
        assert error.attempts_so_far == 2
        assert error.error is not None and error.error["message"] == "cannot double boom"
        assert "Traceback" in error.error["details"]  # the worker's traceback
        assert [attempt.outcome for attempt in error.history] == ["failed", "failed"]
        assert "cannot double boom" in str(error)

    asyncio.run(main())


def test_a_timeout_leaves_the_job_and_a_removed_job_raises(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("idle")
            jid = await client.enqueue("idle", "later")
            with pytest.raises(TimeoutError):
                await client.result(jid, timeout=0.2)
            job = await client.job(jid)
            assert job is not None and job.status == JobStatus.WAITING
            delayed = await client.enqueue("idle", delay=timedelta(hours=1))
            waiting = asyncio.create_task(client.result(delayed, timeout=DEADLINE_S))
            await asyncio.sleep(0)  # one turn: the task sends WATCH, ahead of RMJOB
            await client.remove_job(delayed)
            with pytest.raises(JobRemovedError):
                await waiting

    asyncio.run(main())


def test_the_blocking_client_waits_for_results(url: str) -> None:
    app = _worker(url)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve() -> None:
        async with running(app):
            ready.set()
            await asyncio.to_thread(done.wait)

    done = threading.Event()
    with Client(url) as client:
        client.add_queue("math")
        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
        thread.start()
        try:
            assert ready.wait(DEADLINE_S)
            assert client.run("math", 5, timeout=DEADLINE_S) == 10
            jid = client.enqueue("math", 7)
            assert client.result(jid, timeout=DEADLINE_S) == 14
        finally:
            done.set()
            thread.join(DEADLINE_S)
