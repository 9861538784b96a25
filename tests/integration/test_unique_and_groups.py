"""Unique jobs and groups over the wire.

Unique keys: a held key makes ENQUEUE answer the holder's id with `duplicate: true` and
add nothing, per scope (until start, until finish, for a duration), in ENQUEUEMANY per
job, freed by cancellation, kept across a kill -9. Groups: a queue's
`group_concurrency_limit` holds, strictly, while other groups go on; groups take turns so
one tenant's backlog does not delay another's single job; bad values are refused.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, JOB, LSJOB = 6, 8, 9, 14, 15, 17
ACK, COMPLETE, SETQUEUE, ENQUEUEMANY, CANCEL = 19, 20, 26, 30, 42
QUEST = 106


async def connect(server: ServerProcess, queue: str, **config: Any) -> RawClient:
    client = await RawClient.connect(server.port)
    await client.register(name="unique-groups")
    await client.ok(ADDQUEUE, {"name": queue, "config": config})
    return client


async def finish(client: RawClient, quest: dict[str, Any]) -> None:
    delivery = {"jid": quest["jid"], "did": quest["did"]}
    await client.ok(ACK, delivery)
    await client.ok(COMPLETE, delivery)


def test_a_held_key_answers_the_holder_and_adds_nothing(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await connect(server, "u")
        first = await client.ok(ENQUEUE, {"q": "u", "job_payload": 1, "unique_key": "a"})
        assert first["duplicate"] is False
        again = await client.ok(ENQUEUE, {"q": "u", "job_payload": 2, "unique_key": "a"})
        assert again == {"jid": first["jid"], "duplicate": True}
        plain = await client.ok(ENQUEUE, {"q": "u", "job_payload": 3})
        assert "duplicate" not in plain
        many = await client.ok(ENQUEUEMANY, {"q": "u", "jobs": [
            {"job_payload": 4, "unique_key": "b"}, {"job_payload": 5, "unique_key": "a"},
            {"job_payload": 6, "unique_key": "b"}, {"job_payload": 7}]})
        assert many["duplicate"] == [False, True, True, False]
        assert many["jids"][1] == first["jid"] and many["jids"][2] == many["jids"][0]
        listing = await client.ok(LSJOB, {"q": "u", "status": "waiting"})
        assert sorted(job["payload"] for job in listing["jobs"]) == [1, 3, 4, 7]
        job = await client.ok(JOB, {"jid": first["jid"]})
        assert (job["unique_key"], job["unique_until"]) == ("a", "finish")
        # Cancelling the holder frees its key.
        await client.ok(CANCEL, {"jid": first["jid"]})
        after = await client.ok(ENQUEUE, {"q": "u", "unique_key": "a"})
        assert after["duplicate"] is False and after["jid"] != first["jid"]
        await client.close()

    asyncio.run(scenario())


def test_each_scope_lets_go_at_its_own_point(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await connect(server, "s")
        start = await client.ok(ENQUEUE, {"q": "s", "unique_key": "s", "unique_until": "start"})
        whole = await client.ok(ENQUEUE, {"q": "s", "unique_key": "f"})
        ttl = await client.ok(ENQUEUE, {"q": "s", "unique_key": "t", "unique_ttl_ms": 400})
        await client.ok(SUBSCRIBE, {"q": "s", "credits": 3})
        quests = [(await client.next_push(QUEST))["p"] for _ in range(3)]
        # All three started: `start` let go, `finish` and the duration hold.
        after_start = await client.ok(ENQUEUE, {"q": "s", "unique_key": "s",
                                                "unique_until": "start"})
        assert after_start["duplicate"] is False and after_start["jid"] != start["jid"]
        assert (await client.ok(ENQUEUE, {"q": "s", "unique_key": "f"}))["jid"] == whole["jid"]
        for quest in quests:
            await finish(client, quest)
        # Finished: `finish` let go; the duration holds though its job is done...
        assert (await client.ok(ENQUEUE, {"q": "s", "unique_key": "f"}))["duplicate"] is False
        held = await client.ok(ENQUEUE, {"q": "s", "unique_key": "t", "unique_ttl_ms": 400})
        assert held == {"jid": ttl["jid"], "duplicate": True}
        # ...until it runs out.
        await asyncio.sleep(0.5)
        assert (await client.ok(ENQUEUE, {"q": "s", "unique_key": "t",
                                          "unique_ttl_ms": 400}))["duplicate"] is False
        await client.close()

    asyncio.run(scenario())


def test_a_held_key_survives_a_kill(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def enqueue_one(port: int) -> dict[str, Any]:
        client = await RawClient.connect(port)
        await client.register(name="unique-restart")
        if port == server.port:
            await client.ok(ADDQUEUE, {"name": "k"})
        reply = await client.ok(ENQUEUE, {"q": "k", "unique_key": "nightly-report"})
        await client.close()
        return reply

    first = asyncio.run(enqueue_one(server.port))
    server.kill()
    restarted = start_server()
    assert asyncio.run(enqueue_one(restarted.port)) == {"jid": first["jid"], "duplicate": True}


def test_bad_unique_and_group_fields_are_refused(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await connect(server, "b")
        for fields in ({"unique_key": ""}, {"unique_key": 5}, {"unique_key": "x" * 257},
                       {"unique_key": "k", "unique_until": "never"},
                       {"unique_key": "k", "unique_ttl_ms": 0},
                       {"unique_key": "k", "unique_until": "start", "unique_ttl_ms": 10},
                       {"unique_until": "start"}, {"group": ""}, {"group": 7},
                       {"group": "a\x00b"}, {"group": "g" * 129}):
            assert await client.err(ENQUEUE, {"q": "b", **fields}) == "INVALID_PAYLOAD", fields
        assert await client.err(SETQUEUE, {"name": "b", "config": {
            "group_concurrency_limit": 0}}) == "INVALID_PAYLOAD"
        listing = await client.ok(LSJOB, {"q": "b", "status": "waiting"})
        assert listing["jobs"] == []
        await client.close()

    asyncio.run(scenario())


def test_a_group_limit_holds_while_other_groups_go_on(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await connect(server, "g", group_concurrency_limit=1)
        for n in range(3):
            await client.ok(ENQUEUE, {"q": "g", "job_payload": f"a{n}", "group": "acme"})
        await client.ok(ENQUEUE, {"q": "g", "job_payload": "b0", "group": "bolt"})
        await client.ok(ENQUEUE, {"q": "g", "job_payload": "plain"})
        await client.ok(SUBSCRIBE, {"q": "g", "credits": 10})
        first = [(await client.next_push(QUEST))["p"] for _ in range(3)]
        assert sorted(q["job_payload"] for q in first) == ["a0", "b0", "plain"]
        # acme is at its limit: nothing more starts, though credit is left.
        await asyncio.sleep(0.3)
        active = await client.ok(LSJOB, {"q": "g", "status": "active"})
        assert len(active["jobs"]) == 3
        waiting = await client.ok(LSJOB, {"q": "g", "status": "waiting"})
        assert [(job["payload"], job["group"]) for job in waiting["jobs"]] == [
            ("a1", "acme"), ("a2", "acme")]
        held = await client.ok(JOB, {"jid": waiting["jobs"][0]["jid"]})
        assert held["blocked_by"] == {"reason": "group_limit", "group": "acme", "active": 1,
                                      "limit": 1}
        for expected in ("a1", "a2"):
            acme = next(q for q in first if q["job_payload"].startswith("a"))
            await finish(client, acme)
            quest = (await client.next_push(QUEST))["p"]
            assert quest["job_payload"] == expected
            first = [quest]
        await client.close()

    asyncio.run(scenario())


def test_one_tenants_backlog_does_not_delay_another(
        start_server: Callable[..., ServerProcess]) -> None:
    """A tenant enqueues 300 jobs, another one job after them: with one worker taking one
    job at a time, the second tenant's job is among the first three to run (FIFO would run
    it 301st)."""
    server = start_server()

    async def scenario() -> int:
        client = await connect(server, "t")
        await client.ok(ENQUEUEMANY, {"q": "t", "jobs": [
            {"job_payload": n, "group": "big"} for n in range(300)]})
        await client.ok(ENQUEUE, {"q": "t", "job_payload": "small", "group": "small"})
        await client.ok(SUBSCRIBE, {"q": "t", "credits": 1})
        order = []
        started = time.monotonic()
        for _ in range(5):
            quest = (await client.next_push(QUEST))["p"]
            order.append(quest["job_payload"])
            await finish(client, quest)
            await client.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
        assert time.monotonic() - started < 10
        await client.close()
        assert [n for n in order if n != "small"] == [0, 1, 2, 3][:len(order) - 1]
        return order.index("small")

    assert asyncio.run(scenario()) <= 2
