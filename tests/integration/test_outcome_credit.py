"""An outcome that gives its credit back (PROTOCOL.md section 6, "Credits"): COMPLETE, FAIL
and RELEASE with `credit: true` give the subscription the delivery came on one credit as
the server takes them, as a CREDIT 1 would; none for a refused outcome, none once that
subscription is gone; and the queue's concurrency limit holds as ever.

"No credit given" is read from QSTATS after the outcome's reply: the server gives the
credit (and plans the dispatch it allows) while it takes the outcome, before it answers,
so a credit given would show as `credits` or as a slot taken (`concurrency.active`).
"""

import asyncio
import itertools
from typing import Any

from tests.integration.test_delivery import (
    job,
    no_quest_kept,
    quest,
    ref,
    stats,
    subscribe,
    worker,
)
from tests.support.raw_client import RawClient, enqueue, ms, server_now
from tests.support.server_process import ServerProcess

SUBSCRIBE, UNSUBSCRIBE, CREDIT, ADDQUEUE = 6, 7, 8, 9
COMPLETE, FAIL, RELEASE = 20, 21, 25
ERROR = {"message": "boom"}


async def assert_nothing_given(client: RawClient, queue: str, active: int) -> None:
    """The queue's subscriptions hold no credit, `active` slots are taken, and no QUEST
    came (a PING answered after everything sent so far)."""
    picture = await stats(client, queue)
    assert (picture["credits"], picture["concurrency"]["active"]) == (0, active), picture
    await server_now(client)
    assert no_quest_kept(client)


def test_complete_fail_and_release_with_credit_bring_the_next_job(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        # The failed job waits an hour before its retry: it cannot take the last credit.
        await client.ok(ADDQUEUE, {"name": "cb", "config": {"max_attempts": 3,
                                                           "retry_interval_ms": 3_600_000}})
        jids = [await enqueue(client, "cb", job_payload=n) for n in range(3)]
        await subscribe(client, "cb", 1)

        first = await quest(client)
        assert first["jid"] == jids[0]
        assert await client.ok(COMPLETE, {**ref(first), "credit": True}) == {}
        second = await quest(client)  # no CREDIT sent
        assert second["jid"] == jids[1]

        reply = await client.ok(FAIL, {**ref(second), "error": ERROR, "credit": True})
        assert reply["status"] == "delayed"
        third = await quest(client)
        assert third["jid"] == jids[2]

        assert await client.ok(RELEASE, {**ref(third), "credit": True}) == {}
        again = await quest(client)  # the released job, on the credit its RELEASE gave
        assert again["jid"] == jids[2] and again["did"] != third["did"]
        # Each credit given back was used by the QUEST it brought: none is left over.
        await assert_nothing_given(client, "cb", active=1)
        assert (await job(client, jids[0]))["status"] == "completed"

    asyncio.run(scenario())


def test_no_credit_without_it_nor_for_a_refused_outcome(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        other = await worker(server.port, "other")
        await client.ok(ADDQUEUE, {"name": "nc"})
        for n in range(4):
            await enqueue(client, "nc", job_payload=n)
        sid = await subscribe(client, "nc", 1)

        # `credit: false`, or none at all: the next job waits for a CREDIT.
        for credit in ({"credit": False}, {}):
            q = await quest(client)
            assert await client.ok(COMPLETE, {**ref(q), **credit}) == {}
            await assert_nothing_given(client, "nc", active=0)
            assert await client.ok(CREDIT, {"sid": sid, "credits": 1}) == {}

        # `credit` must be a bool: the outcome is refused, the delivery stays held.
        q = await quest(client)
        for credit in ("yes", 1, None, [True]):
            assert await client.err(COMPLETE, {**ref(q), "credit": credit}
                                    ) == "INVALID_PAYLOAD", credit
            assert await client.err(FAIL, {**ref(q), "error": ERROR, "credit": credit}
                                    ) == "INVALID_PAYLOAD", credit
            assert await client.err(RELEASE, {**ref(q), "credit": credit}
                                    ) == "INVALID_PAYLOAD", credit
        # Refused for what else it carries, or by whom it is sent: no credit either.
        assert await client.err(FAIL, {**ref(q), "error": {"no": "message"}, "credit": True}
                                ) == "INVALID_PAYLOAD"
        assert await client.err(COMPLETE, {**ref(q), "result": "y" * 70_000, "credit": True}
                                ) == "RESULT_TOO_LARGE"
        assert await other.err(COMPLETE, {**ref(q), "credit": True}) == "DELIVERY_NOT_FOUND"
        await assert_nothing_given(client, "nc", active=1)
        assert (await job(client, q["jid"]))["status"] == "active"

        # Taken: one credit, one QUEST. Sent again, stale: nothing more.
        assert await client.ok(COMPLETE, {**ref(q), "credit": True}) == {}
        await quest(client)
        for message_type, extra in ((COMPLETE, {}), (FAIL, {"error": ERROR}), (RELEASE, {})):
            assert await client.err(message_type, {**ref(q), **extra, "credit": True}
                                    ) == "DELIVERY_STALE"
        await assert_nothing_given(client, "nc", active=1)

    asyncio.run(scenario())


def test_no_credit_once_the_subscription_is_gone(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "gone"})
        for n in range(3):
            await enqueue(client, "gone", job_payload=n)
        sid = await subscribe(client, "gone", 1)
        q = await quest(client)

        # Unsubscribed, then subscribed again: the job came on the old subscription, whose
        # credit is dropped; the new one gets none from it.
        assert await client.ok(UNSUBSCRIBE, {"sid": sid}) == {}
        new_sid = await subscribe(client, "gone", 0)
        assert await client.ok(COMPLETE, {**ref(q), "credit": True}) == {}
        await assert_nothing_given(client, "gone", active=0)
        assert (await job(client, q["jid"]))["status"] == "completed"

        # And with no subscription at all.
        assert await client.ok(CREDIT, {"sid": new_sid, "credits": 1}) == {}
        q = await quest(client)
        assert await client.ok(UNSUBSCRIBE, {"sid": new_sid}) == {}
        assert await client.ok(RELEASE, {**ref(q), "credit": True}) == {}
        picture = await stats(client, "gone")
        assert (picture["subscriptions"], picture["credits"]) == (0, 0)
        assert picture["stats"]["waiting"] == 2

    asyncio.run(scenario())


def test_credits_given_back_never_lift_the_concurrency_limit(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "one", "config": {"concurrency_limit": 1}})
        jids = [await enqueue(client, "one", job_payload=n) for n in range(6)]
        await subscribe(client, "one", 5)

        seen: list[dict[str, Any]] = []
        for _ in jids:
            q = await quest(client)
            seen.append(q)
            # One job out, whatever the credits: the next QUEST waits for this outcome.
            picture = await stats(client, "one")
            assert picture["concurrency"] == {"active": 1, "limit": 1}, picture
            assert picture["credits"] == 4, picture
            await server_now(client)
            assert no_quest_kept(client)
            assert await client.ok(COMPLETE, {**ref(q), "credit": True}) == {}
        assert [q["jid"] for q in seen] == jids
        picture = await stats(client, "one")
        assert (picture["credits"], picture["concurrency"]["active"]) == (5, 0)
        # No two attempts overlapped, on the server's own record.
        records = [await job(client, jid) for jid in jids]
        spans = sorted((ms(entry["started_at"]), ms(entry["ended_at"]))
                       for record in records for entry in record["history"])
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))

    asyncio.run(scenario())
