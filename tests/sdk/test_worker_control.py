"""Worker control against a real server: an admin's quiet, stop and concurrency reach the
running Worker (WORKERCTL, CONTROL), STATUS shows each worker's state and concurrency, and
bad requests get their ERR."""

import asyncio
import threading
from datetime import timedelta

import pytest
from overhop_client import (
    AsyncClient,
    ForbiddenError,
    InvalidPayloadError,
    JobContext,
    JobStatus,
    MessageType,
    Worker,
    WorkerInfo,
    WorkerNotFoundError,
)

from tests.sdk.harness import DEADLINE_S, running, wait_for_status, wait_until
from tests.support.auth import add_users, url_of
from tests.support.server_process import ServerProcess


async def worker_named(client: AsyncClient, name: str) -> WorkerInfo | None:
    found = [w for w in (await client.status()).workers if w.name == name]
    return found[0] if found else None


async def wait_for_worker(client: AsyncClient, name: str, state: str,
                          concurrency: int | None = None) -> WorkerInfo:
    async def read() -> WorkerInfo | None:
        return await worker_named(client, name)

    def accept(info: WorkerInfo | None) -> bool:
        return info is not None and info.state == state and (
            concurrency is None or info.concurrency == concurrency)

    found = await wait_until(read, accept, f"worker {name} {state} {concurrency}")
    assert found is not None
    return found


def test_quiet_takes_no_new_jobs_and_finishes_running_ones(url: str) -> None:
    async def main() -> None:
        app = Worker(url, concurrency=2, name="quiet-one")
        gate = asyncio.Event()
        started: list[str] = []

        @app.handler("hushed")
        async def hold(ctx: JobContext) -> str:
            started.append(ctx.jid)
            await gate.wait()
            return "done"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("hushed")
            async with running(app) as task:
                info = await wait_for_worker(client, "quiet-one", "running", 2)
                assert info.subscriptions == 1
                jids = [await client.enqueue("hushed", n) for n in range(4)]
                async def started_count() -> int:
                    return len(started)

                await wait_until(started_count, lambda n: n == 2, "two jobs running")
                assert await client.quiet_worker("quiet-one") == 1
                info = await wait_for_worker(client, "quiet-one", "quiet")
                await wait_until(lambda: worker_named(client, "quiet-one"),
                                 lambda w: w is not None and w.subscriptions == 0,
                                 "the quiet worker unsubscribed")
                gate.set()
                for jid in started:
                    await wait_for_status(client, jid, JobStatus.COMPLETED)
                late = await client.enqueue("hushed", "late")
                assert (await client.stats("hushed")).counts.waiting == 3
                assert sorted(started) == sorted(jids[:2])
                assert not task.done()  # still connected, quiet
                assert (await client.job(late)).status == JobStatus.WAITING  # type: ignore[union-attr]
                assert app.state.value == "quiet"

    asyncio.run(main())


def test_stop_gives_back_unstarted_jobs_and_finishes_running_ones(url: str) -> None:
    async def main() -> None:
        stopping = Worker(url, concurrency=1, prefetch=2, name="stop-me")
        gate = asyncio.Event()
        ran_by: dict[int, str] = {}

        @stopping.handler("handed-back")
        async def slow(ctx: JobContext) -> str:
            ran_by[ctx.payload] = "stop-me"
            await gate.wait()
            return "finished in grace"

        other = Worker(url, name="the-other")

        @other.handler("handed-back")
        async def quick(ctx: JobContext) -> str:
            ran_by[ctx.payload] = "the-other"
            return "picked up"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("handed-back")
            task = asyncio.create_task(stopping.run_async())
            await wait_for_worker(client, "stop-me", "running", 1)
            jids = [await client.enqueue("handed-back", n) for n in range(3)]
            await wait_until(lambda: worker_named(client, "stop-me"),
                             lambda w: w is not None and w.deliveries == 3,
                             "one job running, two held")
            assert await client.stop_worker("stop-me", grace=timedelta(seconds=DEADLINE_S)) == 1
            info = await worker_named(client, "stop-me")
            assert info is not None and info.state == "stopping"
            async with running(other):
                await wait_for_status(client, jids[1], JobStatus.COMPLETED)
                await wait_for_status(client, jids[2], JobStatus.COMPLETED)
                assert not task.done()  # the running job holds it within the grace
                gate.set()
                await asyncio.wait_for(task, DEADLINE_S)  # run_async returned by itself
                first = await wait_for_status(client, jids[0], JobStatus.COMPLETED)
                assert first.result == "finished in grace"
            await wait_until(lambda: worker_named(client, "stop-me"), lambda w: w is None,
                             "the stopped worker gone")
            for jid in jids[1:]:
                job = await client.job(jid)
                assert job is not None and job.result == "picked up"
                assert [a.outcome for a in job.history] == ["released", "completed"]
                assert job.attempts_so_far == 1  # the release used no attempt
        assert ran_by == {0: "stop-me", 1: "the-other", 2: "the-other"}

    asyncio.run(main())


def test_stop_past_its_grace_ends_running_jobs_as_disconnected(url: str) -> None:
    async def main() -> None:
        app = Worker(url, name="stuck")

        @app.handler("stuck-jobs")
        async def forever(ctx: JobContext) -> None:
            await asyncio.sleep(DEADLINE_S * 2)

        async def acknowledged(jid: str) -> bool:
            job = await client.job(jid)
            return job is not None and job.delivery is not None and bool(job.delivery.acked)

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("stuck-jobs", max_attempts=1)
            task = asyncio.create_task(app.run_async())
            await wait_for_worker(client, "stuck", "running")
            jid = await client.enqueue("stuck-jobs")
            await wait_until(lambda: acknowledged(jid), bool, "the job acknowledged")
            assert await client.stop_worker("stuck", grace=timedelta(milliseconds=100)) == 1
            await asyncio.wait_for(task, DEADLINE_S)
            job = await wait_for_status(client, jid, JobStatus.FAILED)
            assert [a.outcome for a in job.history] == ["disconnected"]

    asyncio.run(main())


def test_concurrency_changes_live_and_status_shows_it(url: str) -> None:
    async def main() -> None:
        app = Worker(url, concurrency=1, name="resizable")
        release = threading.Event()
        lock = threading.Lock()
        now_running = 0
        most = 0

        @app.handler("resized")
        def hold(ctx: JobContext) -> None:  # a plain function: its thread pool grows too
            nonlocal now_running, most
            with lock:
                now_running += 1
                most = max(most, now_running)
            release.wait(DEADLINE_S)
            with lock:
                now_running -= 1

        async def running_now() -> int:
            return now_running

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("resized")
            async with running(app):
                await wait_for_worker(client, "resizable", "running", 1)
                jids = [await client.enqueue("resized", n) for n in range(6)]
                await wait_until(running_now, lambda n: n == 1, "one job at once")
                assert await client.set_worker_concurrency("resizable", 3) == 1
                await wait_until(running_now, lambda n: n == 3, "three jobs at once")
                await wait_for_worker(client, "resizable", "running", 3)
                assert (await client.stats("resized")).counts.waiting == 3
                release.set()
                for jid in jids:
                    await wait_for_status(client, jid, JobStatus.COMPLETED)
        assert most == 3

    asyncio.run(main())


def test_control_errors(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url, name="bystander") as client:
            with pytest.raises(WorkerNotFoundError, match="'nobody'"):
                await client.quiet_worker("nobody")
            bad = [({"worker": "bystander", "action": "pause"}, "'action' must be one of"),
                   ({"worker": "bystander", "action": "concurrency"}, "'concurrency'"),
                   ({"worker": "bystander", "action": "concurrency", "concurrency": 0},
                    "'concurrency' must be in 1..10000"),
                   ({"worker": "bystander", "action": "quiet", "grace_ms": 5}, "'grace_ms'"),
                   ({"worker": "bystander", "action": "stop", "grace_ms": -1}, "'grace_ms'"),
                   ({"action": "quiet"}, "'action' must be 'report'"),
                   ({"action": "report", "state": "asleep"}, "'state' must be one of"),
                   ({"worker": 7, "action": "quiet"}, "'worker'")]
            for payload, message in bad:
                with pytest.raises(InvalidPayloadError, match=message):
                    await client.request(MessageType.WORKERCTL, payload)
            # Nothing changed, and a connection may report itself.
            info = await worker_named(client, "bystander")
            assert info is not None and (info.state, info.concurrency) == ("running", None)
            await client.report_worker_state("quiet", 7)
            info = await worker_named(client, "bystander")
            assert info is not None and (info.state, info.concurrency) == ("quiet", 7)
            # By id as well as by name; a command to a plain client is only noted.
            assert await client.set_worker_concurrency(info.worker_id, 2) == 1
            info = await worker_named(client, "bystander")
            assert info is not None and info.concurrency == 2

    asyncio.run(main())


def test_only_an_admin_controls_workers_and_any_worker_reports_itself(
        server: ServerProcess) -> None:
    admin = ("root", "root-Pa55word-7c1")

    async def main() -> None:
        await add_users(server, {admin[0]: (admin[1], ["admin", "manage", "read"]),
                                 "crew": ("crew-Pa55word-3b", ["consume:secure-q",
                                                               "read:secure-q"])})
        app = Worker(url_of(server, "crew", "crew-Pa55word-3b"), concurrency=3,
                     name="secure-w")

        @app.handler("secure-q")
        async def work(ctx: JobContext) -> None:
            return None

        async with await AsyncClient.connect(url_of(server, *admin)) as root:
            await root.add_queue("secure-q")
            async with running(app):
                # The worker's own report needs no permission: STATUS shows it.
                await wait_for_worker(root, "secure-w", "running", 3)
                async with await AsyncClient.connect(
                        url_of(server, "crew", "crew-Pa55word-3b")) as crew:
                    with pytest.raises(ForbiddenError, match="'admin'"):
                        await crew.quiet_worker("secure-w")
                assert (await worker_named(root, "secure-w")).state == "running"  # type: ignore[union-attr]
                assert await root.quiet_worker("secure-w") == 1
                await wait_for_worker(root, "secure-w", "quiet", 3)

    asyncio.run(main())
