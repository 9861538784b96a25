"""Unique keys and groups through the SDK, async and blocking, against a real server."""

import asyncio
from datetime import timedelta

import pytest
from overhop_client import AsyncClient, Client, Enqueued, InvalidPayloadError, QueueConfig


def test_enqueue_unique_says_when_a_key_is_held(url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("reports")
            first = await client.enqueue_unique("reports", {"day": 1}, unique_key="day-1")
            assert first == Enqueued(first.jid, duplicate=False)
            again = await client.enqueue_unique("reports", {"day": 1}, unique_key="day-1")
            assert again == Enqueued(first.jid, duplicate=True)
            # `enqueue` gives the holder's id.
            assert await client.enqueue("reports", unique_key="day-1") == first.jid
            start = await client.enqueue("reports", unique_key="s", unique_for="start")
            timed = await client.enqueue("reports", unique_key="t",
                                         unique_for=timedelta(minutes=5), group="acme")
            job = await client.job(timed)
            assert job is not None
            assert (job.unique_key, job.unique_until, job.group) == ("t", "ttl", "acme")
            assert job.unique_expires_at is not None
            held = await client.job(start)
            assert held is not None and held.unique_until == "start"
            with pytest.raises(ValueError, match="unique_for"):
                await client.enqueue("reports", unique_for="start")
            with pytest.raises(ValueError, match="enqueue_many"):
                await client.enqueue_many("reports", [1, 2], unique_key="k")
            with pytest.raises(InvalidPayloadError):
                await client.enqueue("reports", group="")

    asyncio.run(main())


def test_groups_through_the_blocking_client(url: str) -> None:
    with Client(url) as client:
        client.add_queue("tenants", group_concurrency_limit=2)
        jids = client.enqueue_many("tenants", [1, 2, 3], group="acme")
        assert [job.group for job in (client.job(jid) for jid in jids) if job] == ["acme"] * 3
        assert client.set_queue("tenants", group_concurrency_limit=3) == QueueConfig(
            group_concurrency_limit=3)
        added = client.enqueue_unique("tenants", 4, unique_key="once")
        assert client.enqueue_unique("tenants", 5, unique_key="once") == Enqueued(
            added.jid, duplicate=True)
