"""An outcome whose write fails changes nothing (PROTOCOL.md, "When an outcome cannot be
written"): the delivery stays current, so the worker may send its outcome again, and if the
worker leaves instead, its jobs go back through the retry path without a restart.

The failure is real: a store that may not grow, filled by large results until LMDB's map is
full, so a COMPLETE carrying one more is refused with STORAGE_FULL.
"""

import asyncio
import time
from typing import Any

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

SUBSCRIBE, ADDQUEUE, ENQUEUE, JOB, QSTATS, ACK, COMPLETE = 6, 9, 14, 15, 18, 19, 20
SETQUEUE = 26
QUEST = 106
FULL_STORE = ("--storage.initial_map_size_bytes", "1048576",
              "--storage.max_map_size_bytes", "1048576",
              "--storage.reserved_headroom_bytes", "0",
              "--heartbeat.interval_ms", "100")
JOBS = 40  # 40 results of 60 KB cannot fit in 1 MiB
BIG_RESULT = {"blob": b"r" * 60_000}
# Bound for the server to end a delivery on its own; never waited out when it behaves.
CHANGE_TIMEOUT_S = 10.0


async def _held_deliveries(client: RawClient) -> list[dict[str, Any]]:
    """JOBS jobs enqueued, all delivered to this worker and acknowledged."""
    await client.ok(ADDQUEUE, {"name": "full"})
    for index in range(JOBS):
        await client.ok(ENQUEUE, {"q": "full", "job_payload": {"n": index}})
    await client.ok(SUBSCRIBE, {"q": "full", "credits": JOBS})
    deliveries = []
    for _ in range(JOBS):
        quest = (await client.next_push(QUEST))["p"]
        ref = {"did": quest["did"], "jid": quest["jid"]}
        await client.ok(ACK, ref)
        deliveries.append(ref)
    return deliveries


async def _complete_until_full(client: RawClient, deliveries: list[dict[str, Any]]
                               ) -> int:
    """Complete with large results until one is refused; its index."""
    for index, ref in enumerate(deliveries):
        reply = await client.request(COMPLETE, {**ref, "result": BIG_RESULT})
        if reply["t"] == 102:
            assert reply["p"]["code"] == "STORAGE_FULL", reply
            assert index > 0  # some results fitted before the map was full
            return index
    raise AssertionError("the store never filled")


def test_a_refused_complete_leaves_the_delivery_current(start_server) -> None:
    server: ServerProcess = start_server(*FULL_STORE)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="full-worker")
        deliveries = await _held_deliveries(client)
        refused = deliveries[await _complete_until_full(client, deliveries)]

        record = await client.ok(JOB, {"jid": refused["jid"]})
        assert record["status"] == "active" and record["result"] is None, record
        # The same delivery is still this worker's: a smaller outcome goes through.
        await client.ok(COMPLETE, refused)
        record = await client.ok(JOB, {"jid": refused["jid"]})
        assert record["status"] == "completed", record
        assert [entry["outcome"] for entry in record["history"]] == ["completed"]
        await client.close()

    asyncio.run(scenario())
    assert server.events("delivery_end_not_written")


def test_jobs_of_a_worker_that_left_after_a_refused_outcome_are_retried(start_server
                                                                        ) -> None:
    server: ServerProcess = start_server(*FULL_STORE)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="leaving-worker")
        deliveries = await _held_deliveries(client)
        index = await _complete_until_full(client, deliveries)
        refused, next_one = deliveries[index], deliveries[index + 1]
        # The next large result is refused too, and the worker leaves without waiting for
        # the reply: the server ends that delivery itself once the write has failed.
        await client.send(COMPLETE, {**next_one, "result": BIG_RESULT})
        await client.close()

        admin = await RawClient.connect(server.port)
        await admin.register(name="admin")
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while (await admin.ok(QSTATS, {"q": "full"}))["stats"]["active"]:
            assert time.monotonic() < deadline, "jobs stayed active after their worker left"
            await asyncio.sleep(0.05)  # poll interval between real requests
        for ref in (refused, next_one):
            record = await admin.ok(JOB, {"jid": ref["jid"]})
            assert record["status"] in ("waiting", "delayed"), record
            assert [entry["outcome"] for entry in record["history"]] == ["disconnected"]
        await admin.close()

    asyncio.run(scenario())
    # Both refused outcomes were logged; the second delivery was then ended by the server.
    assert len(server.events("delivery_end_not_written")) >= 2


def test_a_slot_freed_by_a_refused_outcome_is_not_used(start_server) -> None:
    """With concurrency_limit 1, the next job is dispatched in the commit after a COMPLETE
    (the slot is lent at once), but not when that COMPLETE could not be written."""
    server: ServerProcess = start_server(*FULL_STORE)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="limited-worker")
        await client.ok(ADDQUEUE, {"name": "one", "config": {"concurrency_limit": 1}})
        first = await client.ok(ENQUEUE, {"q": "one"})
        second = await client.ok(ENQUEUE, {"q": "one"})
        await client.ok(SUBSCRIBE, {"q": "one", "credits": 2})
        quest = (await client.next_push(QUEST))["p"]
        assert quest["jid"] == first["jid"]
        held = {"did": quest["did"], "jid": quest["jid"]}
        await client.ok(ACK, held)
        deliveries = await _held_deliveries(client)
        await _complete_until_full(client, deliveries)

        reply = await client.request(COMPLETE, {**held, "result": BIG_RESULT})
        assert reply["p"]["code"] == "STORAGE_FULL", reply
        # A write after the dispatch that was to use the lent slot: once it is answered,
        # that dispatch has been committed (it took nothing).
        await client.ok(SETQUEUE, {"q": "one", "config": {"concurrency_limit": 1}})
        assert not [push for push in client.pushes if push["t"] == QUEST]
        stats = await client.ok(QSTATS, {"q": "one"})
        assert (stats["stats"]["active"], stats["stats"]["waiting"]) == (1, 1), stats
        assert stats["concurrency"] == {"active": 1, "limit": 1}, stats

        await client.ok(COMPLETE, held)  # written this time: the slot goes to the next job
        quest = (await client.next_push(QUEST))["p"]
        assert quest["jid"] == second["jid"]
        await client.close()

    asyncio.run(scenario())
