"""Cancellation in the SDK: `cancel`, the bulk methods, `JobCancelledError`, and the
worker side of ABORT (`ctx.cancelled`, an async handler's task cancelled)."""

import asyncio
import logging
import threading

import pytest
from overhop_client import (
    AsyncClient,
    Client,
    JobCancelledError,
    JobContext,
    JobStatus,
    JobStatusConflictError,
    Worker,
)

from tests.sdk.harness import DEADLINE_S, running, wait_for_status


def test_an_async_handler_is_cancelled_and_the_job_ends_cancelled(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="overhop_client")
    started = asyncio.Event()
    seen: dict[str, object] = {}
    app = Worker(url, concurrency=2)

    @app.handler("long")
    async def long(ctx: JobContext) -> object:
        started.set()
        try:
            await asyncio.sleep(DEADLINE_S * 2)
        except asyncio.CancelledError:
            seen.update(cancelled=ctx.cancelled, reason=ctx.cancel_reason)
            raise
        return "not cancelled"

    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("long", max_attempts=3)
            async with running(app):
                jid = await client.enqueue("long", None)
                await asyncio.wait_for(started.wait(), DEADLINE_S)
                assert not seen
                assert await client.cancel(jid, "user left") == JobStatus.ACTIVE
                with pytest.raises(JobCancelledError) as cancelled:
                    await client.result(jid, timeout=DEADLINE_S)
                assert (cancelled.value.jid, cancelled.value.reason) == (jid, "user left")
                job = await wait_for_status(client, jid, "cancelled")
                assert job.cancel_reason == "user left"
                assert [a.outcome for a in job.history] == ["failed"]
                assert job.history[0].error_message == "cancelled"

    asyncio.run(main())
    assert seen == {"cancelled": True, "reason": "user left"}
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("job_cancelled") for m in messages), messages
    assert not any(m.startswith("job_failed") for m in messages), messages


def test_a_plain_handler_reads_ctx_cancelled_and_stops_early(url: str) -> None:
    started = threading.Event()
    app = Worker(url, concurrency=1)

    @app.handler("plain")
    def plain(ctx: JobContext) -> object:
        started.set()
        for _ in range(int(DEADLINE_S * 100)):  # bounded: a broken ABORT fails the test
            if ctx.cancelled:
                return f"stopped: {ctx.cancel_reason}"
            threading.Event().wait(0.01)
        return "ran to the end"

    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("plain")
            async with running(app):
                jid = await client.enqueue("plain", None)
                await asyncio.get_running_loop().run_in_executor(None, started.wait,
                                                                 DEADLINE_S)
                assert await client.cancel(jid) == JobStatus.ACTIVE
                job = await wait_for_status(client, jid, "cancelled")
                # Its answer was a COMPLETE: kept, but the job is cancelled all the same.
                assert job.result == "stopped: cancelled"
                assert [a.outcome for a in job.history] == ["completed"]

    asyncio.run(main())


def test_the_blocking_client_cancels_and_acts_in_bulk(url: str) -> None:
    with Client(url) as client:
        client.add_queue("emails", max_attempts=1)
        jids = [client.enqueue("emails", n) for n in range(5)]
        assert client.cancel(jids[0], "typo") == JobStatus.CANCELLED
        assert client.cancel(jids[0]) == JobStatus.CANCELLED  # idempotent
        with pytest.raises(JobCancelledError) as cancelled:
            client.result(jids[0], timeout=DEADLINE_S)
        assert cancelled.value.reason == "typo"
        assert client.cancel_waiting("emails", "drained") == 4
        assert client.stats("emails").counts.cancelled == 5
        assert client.job(jids[1]).cancel_reason == "drained"  # type: ignore[union-attr]
        assert client.remove_jobs("emails", JobStatus.CANCELLED) == 5
        assert client.job(jids[1]) is None
        assert client.retry_failed("emails") == 0

    async def fail_two() -> list[str]:
        async with await AsyncClient.connect(url) as producer:
            quests: asyncio.Queue[object] = asyncio.Queue()
            worker = await AsyncClient.connect(url, on_quest=quests.put_nowait)
            jids = [await producer.enqueue("emails", n) for n in range(2)]
            await worker.subscribe("emails", credits=2)
            for _ in jids:
                quest = await asyncio.wait_for(quests.get(), DEADLINE_S)
                await worker.fail(quest, "bounced")  # type: ignore[arg-type]
            await worker.close()
            with pytest.raises(JobStatusConflictError):
                await producer.cancel(jids[0])
            return jids

    failed = asyncio.run(fail_two())
    with Client(url) as client:
        assert client.retry_failed("emails") == 2
        assert {client.job(jid).status for jid in failed} == {  # type: ignore[union-attr]
            JobStatus.WAITING}
