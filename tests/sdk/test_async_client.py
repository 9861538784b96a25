"""AsyncClient against a real server: connecting, pipelining, admin methods, typed errors."""

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from overhop_client import (
    AlreadySubscribedError,
    AsyncClient,
    Backoff,
    ConnectionLost,
    InvalidPayloadError,
    JobNotFoundError,
    JobStatus,
    JobStatusConflictError,
    OverrideNotAllowedError,
    PayloadTooLargeError,
    QueueAlreadyPausedError,
    QueueExistsError,
    QueueNameInvalidError,
    QueueNotEmptyError,
    QueueNotFoundError,
    QueueNotPausedError,
    QueueState,
    QueueSystemError,
    ServerUnreachable,
    SubscriptionNotFoundError,
)

from tests.sdk.harness import DEADLINE_S, wait_for_status
from tests.support.server_process import ServerProcess


def test_connect_registers_with_metadata_and_answers_ping(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(f"overhop://{url}", name="sdk-test",
                                             labels={"role": "producer"}) as client:
            assert uuid.UUID(client.worker_id)
            before = datetime.now(UTC) - timedelta(minutes=1)
            server_time = await client.ping()
            assert server_time is not None and server_time > before
            status = await client.status()
            me = [w for w in status.workers if w.worker_id == client.worker_id]
            assert len(me) == 1
            assert me[0].metadata["name"] == "sdk-test"
            assert me[0].metadata["labels"] == {"role": "producer"}
            assert me[0].metadata["pid"] == os.getpid()
        assert client.closed

    asyncio.run(main())


def test_five_hundred_pipelined_enqueues_all_succeed_with_distinct_ids(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("bulk")
            jids = await asyncio.gather(*(client.enqueue("bulk", {"n": n}) for n in range(500)))
            assert len(set(jids)) == 500
            assert all(jid.startswith("bulk:") for jid in jids)
            stats = await client.stats("bulk")
            assert stats.counts.waiting == 500
            jobs = await asyncio.gather(*(client.job(jid) for jid in jids[::50]))
            assert [job.payload["n"] for job in jobs if job] == list(range(0, 500, 50))

    asyncio.run(main())


def test_enqueue_many_in_batches_of_the_server_limit(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jobs.max_enqueue_batch", "64")
    url = f"127.0.0.1:{server.port}"

    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            assert client.limits is not None and client.limits.max_enqueue_batch == 64
            await client.add_queue("many")
            jids = await client.enqueue_many("many", ({"n": n} for n in range(200)),
                                             max_attempts=2)
            assert len(set(jids)) == 200
            jobs = await asyncio.gather(*(client.job(jid) for jid in jids))
            assert [job.payload["n"] for job in jobs if job] == list(range(200))
            assert all(job is not None and job.max_attempts == 2 for job in jobs)
            # (One request of 200 would have been refused: the server takes 64 at most.)
            assert (await client.stats("many")).counts.waiting == 200
            assert await client.enqueue_many("many", []) == []
            with pytest.raises(QueueNotFoundError):
                await client.enqueue_many("missing", [1, 2])
            with pytest.raises(ValueError):
                await client.enqueue_many("many", [1], run_at=datetime.now(UTC),
                                          delay=timedelta(seconds=1))

    asyncio.run(main())


def test_queue_administration(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            assert await client.queue("reports") is None
            qid = await client.add_queue(
                "reports", concurrency_limit=3, max_attempts=5,
                retry_interval=timedelta(seconds=2), backoff=Backoff.EXPONENTIAL,
                backoff_max=timedelta(minutes=1), backoff_jitter=True,
                lease=timedelta(seconds=90))
            info = await client.queue("reports")
            assert info is not None
            assert (info.id, info.name, info.state, info.system) == (
                qid, "reports", QueueState.ACTIVE, False)
            config = info.config
            assert config.concurrency_limit == 3
            assert config.max_attempts == 5
            assert config.retry_interval == timedelta(seconds=2)
            assert config.backoff == Backoff.EXPONENTIAL
            assert config.backoff_max == timedelta(minutes=1)
            assert config.backoff_jitter is True
            assert config.lease == timedelta(seconds=90)
            assert config.allow_job_overrides is True
            assert isinstance(info.created_at, datetime)

            names = {queue.name: queue for queue in await client.queues()}
            assert set(names) == {"_system", "reports"}
            assert names["_system"].system

            await client.pause("reports")
            paused = await client.queue("reports")
            assert paused is not None and paused.paused
            jid = await client.enqueue("reports", {"month": 11})
            job = await client.job(jid)
            assert job is not None and job.status == JobStatus.NEW
            await client.resume("reports")
            await wait_for_status(client, jid, JobStatus.WAITING)

            stats = await client.stats("reports")
            assert (stats.queue, stats.counts.waiting, stats.counts.total) == ("reports", 1, 1)
            assert stats.concurrency_limit == 3
            assert (stats.in_flight, stats.subscriptions, stats.credits) == (0, 0, 0)

            with pytest.raises(QueueNotEmptyError):
                await client.remove_queue("reports")
            with pytest.raises(JobStatusConflictError):
                await client.retry_job(jid)  # only failed jobs can be retried
            await client.subscribe("reports", 1)
            quest = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            with pytest.raises(JobStatusConflictError):
                await client.remove_job(jid)  # an active job cannot be removed
            await client.complete(quest, "done")
            await wait_for_status(client, jid, JobStatus.COMPLETED)
            await client.remove_job(jid)
            assert await client.job(jid) is None
            await client.remove_queue("reports")
            assert await client.queue("reports") is None

    asyncio.run(main())


def test_enqueue_options_and_job_record(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("scheduled")
            run_at = datetime.now(UTC) + timedelta(hours=1)
            later = await client.enqueue("scheduled", {"x": 1.5, "raw": b"\x00\x01"},
                                         run_at=run_at, max_attempts=7,
                                         retry_interval=timedelta(milliseconds=250),
                                         lease=timedelta(seconds=5))
            soon = await client.enqueue("scheduled", delay=timedelta(hours=2))
            now = await client.enqueue("scheduled", ["list", "payload"])

            job = await client.job(later)
            assert job is not None
            assert job.jid == later and job.queue == "scheduled"
            assert job.uuid == later.split(":", 1)[1]
            assert job.payload == {"x": 1.5, "raw": b"\x00\x01"}
            assert job.status == JobStatus.DELAYED
            assert job.execution_start_at is not None
            assert abs(job.execution_start_at - run_at) < timedelta(milliseconds=1)
            assert (job.max_attempts, job.retry_interval, job.lease) == (
                7, timedelta(milliseconds=250), timedelta(seconds=5))
            assert job.attempts_so_far == 0 and job.history == [] and job.delivery is None

            delayed = await client.job(soon)
            assert delayed is not None and delayed.payload is None
            assert delayed.execution_start_at is not None
            assert delayed.execution_start_at > run_at

            page = await client.jobs("scheduled", JobStatus.DELAYED, page_size=1)
            assert (page.queue, page.status, page.page, page.page_size) == (
                "scheduled", JobStatus.DELAYED, 1, 1)
            assert [j.jid for j in page] == [later]
            assert page.next_after == later
            second = await client.jobs("scheduled", "delayed", page=2, page_size=1)
            assert [j.jid for j in second] == [soon] and second.next_after is None
            after = await client.jobs("scheduled", "delayed", after=page.next_after)
            assert [j.jid for j in after] == [soon]
            waiting = await client.jobs("scheduled", JobStatus.WAITING)
            assert [j.jid for j in waiting] == [now] and len(waiting) == 1

            with pytest.raises(ValueError):
                await client.enqueue("scheduled", run_at=run_at, delay=timedelta(1))
            with pytest.raises(ValueError):
                await client.enqueue("scheduled", run_at=datetime(2030, 1, 1))  # naive
            with pytest.raises(ValueError):
                await client.enqueue("scheduled", {"too_big": 2**64})
            # The refused values never reached the server: the connection still works.
            assert (await client.stats("scheduled")).counts.total == 3

    asyncio.run(main())


def test_errors_raise_their_typed_exception_and_keep_the_connection(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("strict", allow_job_overrides=False)
            with pytest.raises(QueueExistsError) as exists:
                await client.add_queue("strict")
            assert exists.value.code == "QUEUE_EXISTS"
            assert "strict" in exists.value.message
            with pytest.raises(QueueNotFoundError):
                await client.enqueue("missing", {})
            with pytest.raises(QueueNotFoundError):
                await client.stats("missing")
            with pytest.raises(QueueNameInvalidError):
                await client.add_queue("no spaces allowed")
            with pytest.raises(QueueSystemError):
                await client.pause("_system")
            with pytest.raises(QueueNotPausedError):
                await client.resume("strict")
            await client.pause("strict")
            with pytest.raises(QueueAlreadyPausedError):
                await client.pause("strict")
            with pytest.raises(OverrideNotAllowedError):
                await client.enqueue("strict", max_attempts=2)
            with pytest.raises(InvalidPayloadError) as invalid:
                await client.jobs("strict", "finished")
            assert invalid.value.code == "INVALID_PAYLOAD"
            with pytest.raises(InvalidPayloadError):
                await client.add_queue("other", max_attempts=0)
            with pytest.raises(JobNotFoundError):
                await client.remove_job("strict:00000000-0000-0000-0000-000000000000")
            with pytest.raises(JobNotFoundError):
                await client.retry_job("strict:00000000-0000-0000-0000-000000000000")
            with pytest.raises(SubscriptionNotFoundError):
                await client.credit(str(uuid.uuid4()), 1)
            await client.subscribe("strict", 0)
            with pytest.raises(AlreadySubscribedError):
                await client.subscribe("strict", 1)
            # Errors in flight together each reach their own request.
            results = await asyncio.gather(
                client.queue("strict"), client.pause("strict"), client.stats("nope"),
                return_exceptions=True)
            assert results[0] is not None and results[0].name == "strict"
            assert isinstance(results[1], QueueAlreadyPausedError)
            assert isinstance(results[2], QueueNotFoundError)
            assert await client.ping() is not None

    asyncio.run(main())


def test_goodbye_closes_the_connection(url: str) -> None:
    async def main() -> None:
        client = await AsyncClient.connect(url)
        await client.goodbye("done for today")
        assert client.closed
        with pytest.raises(ConnectionLost):
            await client.ping()

    asyncio.run(main())


def test_server_shutdown_says_bye_then_closes(server: ServerProcess) -> None:
    async def main() -> None:
        seen = []
        client = await AsyncClient.connect(f"127.0.0.1:{server.port}", on_bye=seen.append)
        await asyncio.to_thread(server.stop)
        await client.wait_closed()
        assert client.bye is not None and client.bye.reason == "server_shutdown"
        assert seen == [client.bye]
        with pytest.raises(ConnectionLost):
            await client.queues()

    asyncio.run(main())


def test_connecting_to_a_closed_port_raises_server_unreachable(server: ServerProcess) -> None:
    port = server.port
    server.stop()

    async def main() -> None:
        with pytest.raises(ServerUnreachable) as refused:
            await AsyncClient.connect(f"127.0.0.1:{port}")
        assert str(refused.value) == (f"cannot connect to 127.0.0.1:{port}: connection "
                                      "refused (is the server running?)")
        assert refused.value.address == f"127.0.0.1:{port}"
        assert isinstance(refused.value, ConnectionError)  # retried like any OSError

    asyncio.run(main())


def test_large_payloads_payload_too_large_and_truncated_pages(
        start_server: Callable[..., ServerProcess]) -> None:
    # The smallest envelope the server allows: 64 KiB, of which a job payload may use all
    # but 4 KiB, and a listing page half.
    server = start_server("--wire.max_envelope_size_bytes", "65536")

    async def main() -> None:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}") as client:
            await client.add_queue("big")
            with pytest.raises(PayloadTooLargeError):
                await client.enqueue("big", b"x" * 62_000)
            jids = [await client.enqueue("big", b"y" * 20_000) for _ in range(3)]
            page = await client.jobs("big", JobStatus.WAITING, page_size=3)
            assert page.truncated
            assert 0 < len(page) < 3
            assert [job.jid for job in page] == jids[:len(page)]
            single = await client.jobs("big", JobStatus.WAITING, page=3, page_size=1)
            assert not single.truncated
            assert [job.payload for job in single] == [b"y" * 20_000]

    asyncio.run(main())
