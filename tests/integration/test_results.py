"""Results without polling (PROTOCOL.md, WATCH and RESULT): a connection that watches a
job is pushed its final outcome once, when it completes, fails for good, or is removed."""

import asyncio
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, RMJOB = 6, 8, 9, 14, 16
ACK, COMPLETE, FAIL, CLEARQUEUE, ENQUEUEMANY, WATCH, UNWATCH = 19, 20, 21, 28, 30, 40, 41
QUEST, RESULT = 106, 110
# The server's per-connection bound (overhop/broker/watches.py).
MAX_WATCHES = 10_000


async def connect(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register()
    return client


async def run_one(worker: RawClient, outcome: int, fields: dict[str, Any]) -> str:
    quest = (await worker.next_push(QUEST))["p"]
    await worker.ok(ACK, {"did": quest["did"], "jid": quest["jid"]})
    await worker.ok(outcome, {"did": quest["did"], "jid": quest["jid"], **fields})
    return str(quest["jid"])


def test_enqueue_with_watch_pushes_the_result_once(server: ServerProcess) -> None:
    async def main() -> None:
        producer, worker = await connect(server.port), await connect(server.port)
        await producer.ok(ADDQUEUE, {"name": "work"})
        jid = (await producer.ok(ENQUEUE, {"q": "work", "job_payload": 2, "watch": True}))["jid"]
        sid = (await worker.ok(SUBSCRIBE, {"q": "work", "credits": 1}))["sid"]
        await run_one(worker, COMPLETE, {"result": {"doubled": 4}})
        pushed = await producer.next_push(RESULT)
        assert pushed["rid"] == "0" and pushed["v"] == 2
        assert pushed["p"] == {"jid": jid, "status": "completed", "result": {"doubled": 4}}
        # Once: that watch has ended; the next pushed RESULT is the next watched job's.
        other = (await producer.ok(ENQUEUE, {"q": "work", "watch": True}))["jid"]
        await worker.ok(CREDIT, {"sid": sid, "credits": 1})
        await run_one(worker, COMPLETE, {})
        again = await producer.next_push(RESULT)
        assert again["p"] == {"jid": other, "status": "completed", "result": None}
        assert not [m for m in producer.pushes if m["t"] == RESULT]

    asyncio.run(main())


def test_a_job_failed_for_good_pushes_its_error_and_history(server: ServerProcess) -> None:
    async def main() -> None:
        producer, worker = await connect(server.port), await connect(server.port)
        await producer.ok(ADDQUEUE, {"name": "fragile", "config": {"max_attempts": 1}})
        jid = (await producer.ok(ENQUEUE, {"q": "fragile", "watch": True}))["jid"]
        await worker.ok(SUBSCRIBE, {"q": "fragile", "credits": 1})
        await run_one(worker, FAIL, {"error": {"message": "boom", "details": "Traceback"}})
        pushed = (await producer.next_push(RESULT))["p"]
        assert pushed["jid"] == jid and pushed["status"] == "failed"
        assert pushed["attempts_so_far"] == 1
        assert pushed["error"] == {"message": "boom", "details": "Traceback"}
        (attempt,) = pushed["history"]
        assert attempt["outcome"] == "failed" and attempt["error"]["message"] == "boom"

    asyncio.run(main())


def test_watch_on_a_finished_job_answers_then_pushes_at_once(server: ServerProcess) -> None:
    async def main() -> None:
        producer, worker, late = (await connect(server.port), await connect(server.port),
                                  await connect(server.port))
        await producer.ok(ADDQUEUE, {"name": "done"})
        jid = (await producer.ok(ENQUEUE, {"q": "done"}))["jid"]
        await worker.ok(SUBSCRIBE, {"q": "done", "credits": 1})
        await run_one(worker, COMPLETE, {"result": "ok"})
        rid = await late.send(WATCH, {"jid": jid})
        reply = await late.reply_to(rid)
        assert reply["t"] == 101, reply
        pushed = await late.next_push(RESULT)
        assert pushed["p"] == {"jid": jid, "status": "completed", "result": "ok"}
        assert await late.err(WATCH, {"jid": "done:00000000-0000-7000-8000-000000000000"}
                              ) == "JOB_NOT_FOUND"

    asyncio.run(main())


def test_removed_and_cleared_jobs_tell_their_watchers(server: ServerProcess) -> None:
    async def main() -> None:
        producer = await connect(server.port)
        await producer.ok(ADDQUEUE, {"name": "idle"})
        delayed = (await producer.ok(ENQUEUE, {"q": "idle", "delay_ms": 3_600_000,
                                               "watch": True}))["jid"]
        waiting = (await producer.ok(ENQUEUE, {"q": "idle", "watch": True}))["jid"]
        await producer.ok(RMJOB, {"jid": delayed})
        assert (await producer.next_push(RESULT))["p"] == {"jid": delayed, "status": "removed"}
        await producer.ok(CLEARQUEUE, {"q": "idle"})
        assert (await producer.next_push(RESULT))["p"] == {"jid": waiting, "status": "removed"}

    asyncio.run(main())


def test_unwatch_and_the_watch_limit(server: ServerProcess) -> None:
    async def main() -> None:
        producer, worker = await connect(server.port), await connect(server.port)
        await producer.ok(ADDQUEUE, {"name": "many"})
        unwatched = (await producer.ok(ENQUEUE, {"q": "many", "watch": True}))["jid"]
        await producer.ok(UNWATCH, {"jid": unwatched})
        for _ in range(MAX_WATCHES // 1000 - 1):
            await producer.ok(ENQUEUEMANY, {"q": "many", "watch": True,
                                            "jobs": [{"job_payload": n} for n in range(1000)]})
        last = await producer.ok(ENQUEUEMANY, {"q": "many", "watch": True,
                                               "jobs": [{} for _ in range(999)]})
        assert len(last["jids"]) == 999
        # 9,999 watched: two more would pass the bound, and neither is added.
        reply = await producer.request(ENQUEUEMANY, {"q": "many", "watch": True,
                                                     "jobs": [{}, {}]})
        assert reply["t"] == 102 and reply["p"]["code"] == "WATCH_LIMIT", reply
        assert reply["p"]["msg"].startswith("a connection may watch at most 10000 jobs")
        one_more = (await producer.ok(ENQUEUE, {"q": "many", "watch": True}))["jid"]
        assert await producer.err(ENQUEUE, {"q": "many", "watch": True}) == "WATCH_LIMIT"
        assert await producer.err(ENQUEUE, {"q": "many", "watch": 1}) == "INVALID_PAYLOAD"
        # The unwatched job ends without a push; the first watched one pushes.
        await worker.ok(SUBSCRIBE, {"q": "many", "credits": 2})
        assert await run_one(worker, COMPLETE, {}) == unwatched
        second = await run_one(worker, COMPLETE, {})
        pushed = await producer.next_push(RESULT)
        assert pushed["p"]["jid"] == second != one_more

    asyncio.run(main())
