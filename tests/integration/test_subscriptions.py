"""Subscriptions over the wire: SUBSCRIBE, UNSUBSCRIBE and CREDIT, and whose they are."""

import asyncio
import uuid
from typing import Any

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

SUBSCRIBE, UNSUBSCRIBE, CREDIT, ADDQUEUE, STATUS, RMQUEUE, QSTATS = 6, 7, 8, 9, 10, 11, 18


def assert_uuid(value: Any) -> None:
    assert type(value) is str and str(uuid.UUID(value)) == value, value


async def worker(port: int, name: str) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name=name)
    return client


async def queue_subscriptions(client: RawClient, queue: str) -> tuple[int, int]:
    """(subscriptions, their credits in total) of one queue, from QSTATS."""
    reply = await client.ok(QSTATS, {"q": queue})
    return reply["subscriptions"], reply["credits"]


async def own_subscriptions(client: RawClient, wid: str) -> int:
    status = await client.ok(STATUS)
    return {w["wid"]: w for w in status["pools"]["worker_list"]}[wid]["subscriptions"]


def test_subscribe(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        wid = await client.register(name="subscriber")
        for name in ("a", "b", "c", "d"):
            await client.ok(ADDQUEUE, {"name": name})

        first = (await client.ok(SUBSCRIBE, {"q": "a"}))["sid"]
        assert_uuid(first)
        assert await queue_subscriptions(client, "a") == (1, 0)

        # One worker, many queues, each subscription with its own id and credits.
        sids = [first]
        for name, credits in (("b", 5), ("c", 0), ("d", 2**31)):
            sid = (await client.ok(SUBSCRIBE, {"q": name, "credits": credits}))["sid"]
            assert_uuid(sid)
            sids.append(sid)
            assert await queue_subscriptions(client, name) == (1, credits)
        assert len(set(sids)) == 4
        assert await own_subscriptions(client, wid) == 4

        # But only once to each queue.
        assert await client.err(SUBSCRIBE, {"q": "a"}) == "ALREADY_SUBSCRIBED"
        assert await client.err(SUBSCRIBE, {"q": "b", "credits": 1}) == "ALREADY_SUBSCRIBED"
        assert await queue_subscriptions(client, "b") == (1, 5)

        assert await client.err(SUBSCRIBE, {"q": "missing"}) == "QUEUE_NOT_FOUND"
        assert await client.err(SUBSCRIBE, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await client.err(SUBSCRIBE, {"q": "no good"}) == "QUEUE_NAME_INVALID"
        assert await client.err(SUBSCRIBE, {}) == "INVALID_PAYLOAD"
        await client.ok(ADDQUEUE, {"name": "e"})
        for credits in (-1, -100, "3", [3], True, 2**31 + 1):
            assert await client.err(SUBSCRIBE, {"q": "e", "credits": credits}
                                    ) == "INVALID_PAYLOAD", credits
        assert await queue_subscriptions(client, "e") == (0, 0)
        assert await own_subscriptions(client, wid) == 4

        # Another worker subscribes to the same queue independently.
        other = await worker(server.port, "other")
        assert_uuid((await other.ok(SUBSCRIBE, {"q": "a", "credits": 3}))["sid"])
        assert await queue_subscriptions(client, "a") == (2, 3)

        status = await client.ok(STATUS)
        assert status["pools"]["subscriptions"] == 5

    asyncio.run(scenario())


def test_unsubscribe(server: ServerProcess) -> None:
    async def scenario() -> None:
        owner = await RawClient.connect(server.port)
        wid = await owner.register(name="owner")
        stranger = await worker(server.port, "stranger")
        await owner.ok(ADDQUEUE, {"name": "q1"})
        await owner.ok(ADDQUEUE, {"name": "q2"})
        sid = (await owner.ok(SUBSCRIBE, {"q": "q1", "credits": 2}))["sid"]
        keep = (await owner.ok(SUBSCRIBE, {"q": "q2"}))["sid"]

        # Only the owner can end a subscription.
        assert await stranger.err(UNSUBSCRIBE, {"sid": sid}) == "SUBSCRIPTION_NOT_FOUND"
        assert await queue_subscriptions(owner, "q1") == (1, 2)
        assert await owner.err(UNSUBSCRIBE, {"sid": str(uuid.uuid4())}
                               ) == "SUBSCRIPTION_NOT_FOUND"
        assert await owner.err(UNSUBSCRIBE, {"sid": "not-a-sid"}) == "SUBSCRIPTION_NOT_FOUND"
        assert await owner.err(UNSUBSCRIBE, {}) == "INVALID_PAYLOAD"
        assert await owner.err(UNSUBSCRIBE, {"sid": 5}) == "INVALID_PAYLOAD"

        assert await owner.ok(UNSUBSCRIBE, {"sid": sid}) == {}
        assert await queue_subscriptions(owner, "q1") == (0, 0)
        assert await own_subscriptions(owner, wid) == 1
        assert await owner.err(UNSUBSCRIBE, {"sid": sid}) == "SUBSCRIPTION_NOT_FOUND"
        assert await owner.err(CREDIT, {"sid": sid, "credits": 1}) == "SUBSCRIPTION_NOT_FOUND"

        # The queue can be subscribed to again, under a new id; the other one is untouched.
        again = (await owner.ok(SUBSCRIBE, {"q": "q1"}))["sid"]
        assert again != sid
        assert await queue_subscriptions(owner, "q1") == (1, 0)
        assert await queue_subscriptions(owner, "q2") == (1, 0)
        assert await owner.ok(UNSUBSCRIBE, {"sid": keep}) == {}
        assert await own_subscriptions(owner, wid) == 1

        # Removing a queue ends its subscriptions.
        assert await owner.ok(RMQUEUE, {"q": "q1"}) == {}
        assert await own_subscriptions(owner, wid) == 0
        assert await owner.err(UNSUBSCRIBE, {"sid": again}) == "SUBSCRIPTION_NOT_FOUND"

    asyncio.run(scenario())


def test_credit(server: ServerProcess) -> None:
    async def scenario() -> None:
        owner = await worker(server.port, "owner")
        stranger = await worker(server.port, "stranger")
        await owner.ok(ADDQUEUE, {"name": "cq"})
        sid = (await owner.ok(SUBSCRIBE, {"q": "cq"}))["sid"]

        # Credits are increments and add up.
        assert await owner.ok(CREDIT, {"sid": sid, "credits": 5}) == {}
        assert await queue_subscriptions(owner, "cq") == (1, 5)
        assert await owner.ok(CREDIT, {"sid": sid, "credits": 3}) == {}
        assert await queue_subscriptions(owner, "cq") == (1, 8)
        assert await owner.ok(CREDIT, {"sid": sid, "credits": 2**31}) == {}
        assert await queue_subscriptions(owner, "cq") == (1, 8 + 2**31)

        # They must be > 0: CREDIT never takes credits away.
        for credits in (0, -1, -8, "4", None, 2**31 + 1):
            assert await owner.err(CREDIT, {"sid": sid, "credits": credits}
                                   ) == "INVALID_PAYLOAD", credits
        assert await owner.err(CREDIT, {"sid": sid}) == "INVALID_PAYLOAD"
        assert await owner.err(CREDIT, {"credits": 1}) == "INVALID_PAYLOAD"
        assert await queue_subscriptions(owner, "cq") == (1, 8 + 2**31)

        # Only the owner can credit its subscription.
        assert await stranger.err(CREDIT, {"sid": sid, "credits": 1}
                                  ) == "SUBSCRIPTION_NOT_FOUND"
        assert await owner.err(CREDIT, {"sid": str(uuid.uuid4()), "credits": 1}
                               ) == "SUBSCRIPTION_NOT_FOUND"
        assert await queue_subscriptions(owner, "cq") == (1, 8 + 2**31)

    asyncio.run(scenario())
