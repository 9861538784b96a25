"""Job delivery with AsyncClient: QUEST within credits, ACK, JOBBEAT, RELEASE, COMPLETE, FAIL."""

import asyncio
from datetime import timedelta

import pytest
from overhop_client import (
    AsyncClient,
    DeliveryAlreadyAckedError,
    JobStatus,
    Quest,
)

from tests.sdk.harness import DEADLINE_S, wait_for_job, wait_for_status


async def next_quest(client: AsyncClient) -> Quest:
    return await asyncio.wait_for(client.quests.get(), DEADLINE_S)


def test_quests_follow_credits_and_every_outcome_is_recorded(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as producer, \
                await AsyncClient.connect(url, name="hand-worker") as worker:
            await producer.add_queue("work", max_attempts=2,
                                     retry_interval=timedelta(milliseconds=10))
            first = await producer.enqueue("work", {"n": 1})
            second = await producer.enqueue("work", {"n": 2})

            sid = await worker.subscribe("work", credits=1)
            quest = await next_quest(worker)
            assert (quest.sid, quest.jid, quest.queue, quest.payload) == (
                sid, first, "work", {"n": 1})
            assert (quest.attempt, quest.max_attempts) == (1, 2)
            assert quest.lease_ms > 0 and quest.ack_timeout_ms > 0
            # One credit, one job: the second stays waiting (and the server holds no credit).
            stats = await producer.stats("work")
            assert (stats.counts.active, stats.counts.waiting, stats.credits) == (1, 1, 0)
            assert worker.quests.empty()

            lease_end = await worker.ack(quest)
            assert lease_end is not None
            with pytest.raises(DeliveryAlreadyAckedError):
                await worker.ack(quest)
            extended = await worker.heartbeat(quest, progress={"done": 0.5})
            assert extended is not None and extended >= lease_end
            job = await producer.job(first)
            assert job is not None and job.status == JobStatus.ACTIVE
            assert job.delivery is not None
            assert job.delivery.delivery_id == quest.did
            assert job.delivery.worker_id == worker.worker_id
            assert job.delivery.progress == {"done": 0.5}
            assert job.delivery.acked

            # RELEASE: back to waiting, no attempt used; a new credit brings it back.
            await worker.release(quest)
            released = await wait_for_status(producer, first, JobStatus.WAITING)
            assert released.attempts_so_far == 0
            assert released.history[-1].outcome == "released"
            await worker.credit(sid, 1)
            again = await next_quest(worker)
            assert again.jid == first and again.did != quest.did and again.attempt == 1

            await worker.ack(again)
            await worker.complete(again, {"sent": True})
            done = await wait_for_status(producer, first, JobStatus.COMPLETED)
            assert done.result == {"sent": True}
            assert done.finished_at is not None
            assert [a.outcome for a in done.history] == ["released", "completed"]

            # FAIL with attempts left: delayed for a retry, then failed for good.
            await worker.credit(sid, 1)
            failing = await next_quest(worker)
            assert failing.jid == second
            outcome = await worker.fail(failing, "smtp down", {"code": 421})
            assert (outcome.status, outcome.attempts_so_far) == (JobStatus.DELAYED, 1)
            assert outcome.retry_at is not None
            await worker.credit(sid, 1)
            retried = await next_quest(worker)
            assert (retried.jid, retried.attempt) == (second, 2)
            outcome = await worker.fail(retried, "smtp still down")
            assert (outcome.status, outcome.attempts_so_far, outcome.retry_at) == (
                JobStatus.FAILED, 2, None)
            failed = await producer.job(second)
            assert failed is not None
            assert [a.error_message for a in failed.history] == [
                "smtp down", "smtp still down"]
            assert failed.history[0].error == {"message": "smtp down", "details": {"code": 421}}

            # RETRY puts it back with fresh attempts.
            assert await producer.retry_job(second) == JobStatus.WAITING
            await worker.unsubscribe(sid)
            back = await wait_for_job(producer, second, lambda j: j.attempts_so_far == 0)
            assert back.status == JobStatus.WAITING
            assert worker.quests.empty()

    asyncio.run(main())


def test_complete_refuses_a_result_that_cannot_be_encoded(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("results")
            jid = await client.enqueue("results")
            await client.subscribe("results", 1)
            quest = await next_quest(client)
            with pytest.raises(TypeError):
                await client.complete(quest, {"when": object()})
            await client.complete(quest, [1, 2, 3])
            job = await wait_for_status(client, jid, JobStatus.COMPLETED)
            assert job.result == [1, 2, 3]

    asyncio.run(main())
