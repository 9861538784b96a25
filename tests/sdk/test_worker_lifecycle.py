"""The worker runner's lifecycle: graceful stop, reconnection, signals."""

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from overhop_client import (
    AsyncClient,
    JobContext,
    JobStatus,
    QueueNotFoundError,
    QueueStats,
    SubscriptionEnded,
    Worker,
)

from tests.sdk.harness import DEADLINE_S, running, wait_for_job, wait_for_status, wait_until
from tests.support.server_process import ServerProcess


def test_graceful_stop_releases_unstarted_jobs_and_finishes_running_ones(url: str) -> None:
    async def main() -> None:
        # One job runs at a time; two more are held locally (prefetch), received but not
        # started, when the stop comes.
        app = Worker(url, concurrency=1, prefetch=2, shutdown_grace=DEADLINE_S)
        started: asyncio.Queue[str] = asyncio.Queue()
        finish = asyncio.Event()

        @app.handler("graceful")
        async def work(ctx: JobContext) -> str:
            started.put_nowait(ctx.jid)
            await finish.wait()
            return "finished"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("graceful")
            jids = [await client.enqueue("graceful", n) for n in range(3)]
            runner = asyncio.create_task(app.run_async())
            first = await asyncio.wait_for(started.get(), DEADLINE_S)
            assert first == jids[0]

            async def stats() -> QueueStats:
                return await client.stats("graceful")

            await wait_until(stats, lambda s: s.counts.active == 3, "three jobs in hand")

            stopping = asyncio.create_task(app.stop())
            # The two unstarted jobs come back while the first one still runs.
            for jid in jids[1:]:
                job = await wait_for_status(client, jid, JobStatus.WAITING)
                assert job.attempts_so_far == 0
                assert [a.outcome for a in job.history] == ["released"]
            assert not stopping.done()
            running_job = await client.job(first)
            assert running_job is not None and running_job.status == JobStatus.ACTIVE
            assert started.empty()

            finish.set()
            await asyncio.wait_for(stopping, DEADLINE_S)
            await runner
            job = await wait_for_status(client, first, JobStatus.COMPLETED)
            assert job.result == "finished"
            # GOODBYE: the worker is gone from the server.
            status = await client.status()
            assert {w.worker_id for w in status.workers} == {client.worker_id}

    asyncio.run(main())


def test_stop_after_the_grace_period_cancels_what_still_runs(url: str) -> None:
    async def main() -> None:
        app = Worker(url, shutdown_grace=0.2)
        started = asyncio.Event()
        cancelled = asyncio.Event()

        @app.handler("stuck")
        async def stuck(ctx: JobContext) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("stuck", max_attempts=2)
            jid = await client.enqueue("stuck")
            async with running(app):
                await asyncio.wait_for(started.wait(), DEADLINE_S)
            assert cancelled.is_set()
            # The interrupted attempt ended with the connection (GOODBYE): it counts.
            job = await wait_for_job(client, jid, lambda j: len(j.history) == 1, "one attempt")
            assert job.history[0].outcome == "disconnected"
            assert job.attempts_so_far == 1

    asyncio.run(main())


def test_a_missing_queue_stops_the_runner_unless_it_may_create_it(url: str) -> None:
    async def main() -> None:
        strict = Worker(url)
        strict.handler("absent")(lambda ctx: None)
        try:
            await strict.run_async()
        except QueueNotFoundError:
            pass
        else:
            raise AssertionError("run_async should raise QueueNotFoundError")

        lenient = Worker(url, create_queues=True)
        lenient.handler("absent")(lambda ctx: "made it")
        async with running(lenient), await AsyncClient.connect(url) as client:
            jid = await client.enqueue("absent")
            job = await wait_for_status(client, jid, JobStatus.COMPLETED)
            assert job.result == "made it"

    asyncio.run(main())


def test_worker_reconnects_and_resubscribes_after_a_server_restart(
        start_server: Callable[..., ServerProcess], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="overhop_client")
    first = start_server()
    address = {"url": f"127.0.0.1:{first.port}"}

    async def main() -> None:
        app = Worker(lambda: address["url"], reconnect_initial=0.05, reconnect_max=0.5)

        @app.handler("persistent")
        async def handle(ctx: JobContext) -> str:
            return f"done {ctx.payload}"

        async with await AsyncClient.connect(address["url"]) as client:
            await client.add_queue("persistent")
            before = await client.enqueue("persistent", "before")
            async with running(app):
                await wait_for_status(client, before, JobStatus.COMPLETED)
                await asyncio.to_thread(first.stop)
                second = await asyncio.to_thread(start_server)  # same storage, new port
                address["url"] = f"127.0.0.1:{second.port}"
                async with await AsyncClient.connect(address["url"]) as again:
                    after = await again.enqueue("persistent", "after")
                    job = await wait_for_status(again, after, JobStatus.COMPLETED)
                    assert job.result == "done after"
                    kept = await again.job(before)
                    assert kept is not None and kept.result == "done before"
                    assert app.connected

    asyncio.run(main())
    # A restart is routine: the subscriptions that ended with the server are no warning.
    assert [r.getMessage() for r in caplog.records if "unsubscribe" in r.getMessage()] == []


def test_a_queue_missing_at_a_reconnect_is_waited_for_while_others_go_on(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    address = {"url": f"127.0.0.1:{first.port}"}

    async def main() -> None:
        app = Worker(lambda: address["url"], reconnect_initial=0.05, reconnect_max=0.5)

        @app.handler("kept")
        async def kept(ctx: JobContext) -> str:
            return "kept"

        @app.handler("later")
        async def later(ctx: JobContext) -> str:
            return "later"

        async with await AsyncClient.connect(address["url"]) as client:
            await client.add_queue("kept")
            await client.add_queue("later")
        async with running(app) as task:
            # The worker reconnects to a server on other storage, where "later" does
            # not exist yet.
            await asyncio.to_thread(first.stop)
            second = await asyncio.to_thread(start_server, storage="elsewhere")
            async with await AsyncClient.connect(f"127.0.0.1:{second.port}") as again:
                await again.add_queue("kept")
                address["url"] = f"127.0.0.1:{second.port}"
                job = await wait_for_status(again, await again.enqueue("kept"),
                                            JobStatus.COMPLETED)
                assert job.result == "kept" and not task.done()
                await again.add_queue("later")
                job = await wait_for_status(again, await again.enqueue("later"),
                                            JobStatus.COMPLETED)
                assert job.result == "later"

    asyncio.run(main())


WORKER_SCRIPT = textwrap.dedent("""
    import sys
    from overhop_client import Worker

    app = Worker(sys.argv[1], name="signalled")

    @app.handler("signals")
    def handle(ctx):
        return "ok"

    app.run()
    print("stopped cleanly")
""")


def test_run_stops_gracefully_on_sigterm(url: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def main() -> None:
            async with await AsyncClient.connect(url) as client:
                await client.add_queue("signals")
                jid = await client.enqueue("signals")
                job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert job.result == "ok"
                process.send_signal(signal.SIGTERM)

        asyncio.run(main())
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, err
        assert out.strip() == "stopped cleanly"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_subscription_end_is_passed_to_the_client(url: str) -> None:
    async def main() -> None:
        ended: list[SubscriptionEnded] = []
        async with await AsyncClient.connect(url) as admin, await AsyncClient.connect(
                url, on_subscription_end=ended.append) as consumer:
            await admin.add_queue("short-lived")
            sid = await consumer.subscribe("short-lived", 1)
            assert await admin.obliterate_queue("short-lived") == 0

            async def received() -> list[SubscriptionEnded]:
                return ended

            await wait_until(received, bool, "SUBEND received")
            assert ended == [SubscriptionEnded(sid, "short-lived", "queue_obliterated")]

    asyncio.run(main())


def test_worker_subscribes_again_when_its_removed_queue_is_back(url: str) -> None:
    async def main() -> None:
        # create_queues is on, yet the removed queue is not created again by the worker.
        app = Worker(url, create_queues=True, reconnect_initial=0.05, reconnect_max=0.2)
        done: list[str] = []

        @app.handler("fickle")
        async def fickle(ctx: JobContext) -> None:
            done.append(ctx.jid)

        @app.handler("steady")
        async def steady(ctx: JobContext) -> None:
            done.append(ctx.jid)

        async with await AsyncClient.connect(url) as client, running(app):
            await client.remove_queue("fickle")

            async def subscribed() -> bool:
                return app.connected

            await wait_until(subscribed, lambda value: not value, "subscription ended")
            # The other queue goes on meanwhile.
            steady_jid = await client.enqueue("steady", "still here")
            await wait_for_status(client, steady_jid, "completed")
            await asyncio.sleep(0.5)  # several of the runner's checks, at most 0.2 s apart
            assert await client.queue("fickle") is None
            assert not app.connected

            await client.add_queue("fickle")
            await wait_until(subscribed, bool, "subscribed again")
            back_jid = await client.enqueue("fickle", "back")
            await wait_for_status(client, back_jid, "completed")
            assert done == [steady_jid, back_jid]

    asyncio.run(main())
