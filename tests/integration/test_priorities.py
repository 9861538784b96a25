"""Priorities over the wire: ENQUEUE's `priority`, dispatch order (highest first, FIFO
within one), the fair share that keeps low priorities going, LSJOB's order and paging of
waiting jobs, refusals, and a restart."""

import asyncio
from collections.abc import Callable

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient, enqueue
from tests.support.server_process import ServerProcess

SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, JOB, LSJOB, ENQUEUEMANY = 6, 8, 9, 14, 15, 17, 30
ACK, COMPLETE = 19, 20
QUEST = 106


async def take(client: RawClient, count: int) -> list[int]:
    """The payloads of the next `count` QUESTs, one at a time: each acknowledged and
    completed before the credit for the next is given."""
    seen = []
    for _ in range(count):
        quest = (await client.next_push(QUEST))["p"]
        seen.append(quest["job_payload"])
        delivery = {"jid": quest["jid"], "did": quest["did"]}
        await client.ok(ACK, delivery)
        await client.ok(COMPLETE, delivery)
        await client.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
    return seen


def test_higher_priorities_go_first_fifo_within_one(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> list[int]:
        client = await RawClient.connect(server.port)
        await client.register(name="priorities")
        await client.ok(ADDQUEUE, {"name": "p"})
        # Payload: priority * 100 + order of enqueue within that priority.
        for n, priority in enumerate([5, 1, 9, None, 9, 1, 5]):
            fields = {} if priority is None else {"priority": priority}
            await enqueue(client, "p", job_payload=(priority or 5) * 100 + n, **fields)
        listing = await client.ok(LSJOB, {"q": "p", "status": "waiting"})
        assert [job["payload"] for job in listing["jobs"]] == [902, 904, 500, 503, 506,
                                                               101, 105]
        assert [job["priority"] for job in listing["jobs"]] == [9, 9, 5, 5, 5, 1, 1]
        await client.ok(SUBSCRIBE, {"q": "p", "credits": 1})
        order = await take(client, 7)
        await client.close()
        return order

    assert asyncio.run(scenario()) == [902, 904, 500, 503, 506, 101, 105]


def test_the_fair_share_runs_the_oldest_job_whatever_its_priority(
        start_server: Callable[..., ServerProcess]) -> None:
    """Of every 10 jobs dispatched, one is the oldest waiting: a low-priority job waiting
    behind an endless stream of high-priority ones still runs."""
    server = start_server()

    async def scenario() -> list[int]:
        client = await RawClient.connect(server.port)
        await client.register(name="fairness")
        await client.ok(ADDQUEUE, {"name": "f"})
        await enqueue(client, "f", job_payload=-1, priority=1)  # the oldest, lowest
        await client.ok(ENQUEUEMANY, {"q": "f", "jobs": [
            {"job_payload": n, "priority": 9} for n in range(30)]})
        await client.ok(SUBSCRIBE, {"q": "f", "credits": 1})
        order = await take(client, 31)
        await client.close()
        return order

    order = asyncio.run(scenario())
    # The 10th dispatch is the fair share's: the low-priority job; all others by priority.
    assert order[9] == -1
    assert [n for n in order if n != -1] == list(range(30))


def test_bad_priorities_are_refused(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="bad")
        await client.ok(ADDQUEUE, {"name": "b"})
        for bad in (0, 10, -1, "high", True):  # (a float is MALFORMED anywhere)
            assert await client.err(ENQUEUE, {"q": "b", "priority": bad}) == "INVALID_PAYLOAD"
        assert await client.err(ENQUEUEMANY, {"q": "b", "jobs": [
            {"priority": 3}, {"priority": 99}]}) == "INVALID_PAYLOAD"
        listing = await client.ok(LSJOB, {"q": "b", "status": "waiting"})
        assert listing["jobs"] == []
        await client.close()

    asyncio.run(scenario())


def test_waiting_pages_follow_priority_order_across_a_restart(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def fill() -> list[str]:
        client = await RawClient.connect(server.port)
        await client.register(name="pages")
        await client.ok(ADDQUEUE, {"name": "w"})
        jids = [await enqueue(client, "w", job_payload=n, priority=priority)
                for n, priority in enumerate([2, 8, 2, 8, 5, 5])]
        await client.close()
        return jids

    jids = asyncio.run(fill())
    expected = [jids[1], jids[3], jids[4], jids[5], jids[0], jids[2]]
    server.kill()
    restarted = start_server()

    async def pages() -> list[str]:
        client = await RawClient.connect(restarted.port)
        await client.register(name="pages")
        seen: list[str] = []
        after = None
        while True:
            fields = {"q": "w", "status": "waiting", "page_size": 2}
            if after is not None:
                fields["after"] = after
            page = await client.ok(LSJOB, fields)
            seen += [job["jid"] for job in page["jobs"]]
            after = page["next_after"]
            if after is None:
                break
        job = await client.ok(JOB, {"jid": jids[1]})
        assert job["priority"] == 8
        await client.close()
        return seen

    assert asyncio.run(pages()) == expected
