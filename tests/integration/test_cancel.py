"""CANCEL, BULK and RMJOB of waiting jobs over the wire (PROTOCOL.md 16, 42, 43, 111).

Unstarted jobs are cancelled at once; an active job's worker gets ABORT and the job ends
`cancelled` when the attempt ends (the worker's answer, the lease, a restart); BULK acts in
batches while other connections keep being answered.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient, enqueue
from tests.support.server_process import ServerProcess

PING, SUBSCRIBE, CREDIT, ADDQUEUE, PAUSE, ENQUEUE, JOB, RMJOB, LSJOB, QSTATS = (
    3, 6, 8, 9, 12, 14, 15, 16, 17, 18)
ACK, COMPLETE, FAIL, JOBBEAT, ENQUEUEMANY, WATCH, CANCEL, BULK = 19, 20, 21, 22, 30, 40, 42, 43
OK, PONG, QUEST, RESULT, ABORT = 101, 105, 106, 110, 111
HOUR_MS = 3_600_000
# Bound for a server-driven end (a lease, a tick) to show; never waited out when it works.
CHANGE_TIMEOUT_S = 10.0


async def client(port: int, name: str) -> RawClient:
    connection = await RawClient.connect(port)
    await connection.register(name=name)
    return connection


def ref(quest: dict[str, Any]) -> dict[str, Any]:
    return {"did": quest["did"], "jid": quest["jid"]}


async def take(worker: RawClient) -> dict[str, Any]:
    """The next QUEST, acknowledged."""
    quest = (await worker.next_push(QUEST))["p"]
    await worker.ok(ACK, ref(quest))
    return quest


async def quest_for(worker: RawClient, queue: str) -> dict[str, Any]:
    await worker.ok(SUBSCRIBE, {"q": queue, "credits": 1})
    return await take(worker)


async def status_of(producer: RawClient, jid: str) -> str:
    return str((await producer.ok(JOB, {"jid": jid}))["status"])


async def until_status(producer: RawClient, jid: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(CHANGE_TIMEOUT_S):
        while True:
            record = await producer.ok(JOB, {"jid": jid})
            if record["status"] == status:
                return record
            await asyncio.sleep(0.05)


def test_cancel_unstarted_jobs_and_the_refusals(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await client(server.port, "producer")
        await producer.ok(ADDQUEUE, {"name": "work"})
        await producer.ok(ADDQUEUE, {"name": "held"})
        await producer.ok(PAUSE, {"q": "held"})
        waiting = await enqueue(producer, "work")
        delayed = await enqueue(producer, "work", delay_ms=HOUR_MS)
        new = await enqueue(producer, "held")
        for jid in (waiting, delayed, new):
            assert await producer.ok(CANCEL, {"jid": jid, "reason": "not needed"}) == {
                "status": "cancelled"}
            record = await producer.ok(JOB, {"jid": jid})
            assert record["status"] == "cancelled"
            assert record["cancel_reason"] == "not needed"
            assert record["finished_at"] is not None and record["blocked_by"] is None
        # Idempotent: the first reason stays.
        assert await producer.ok(CANCEL, {"jid": waiting}) == {"status": "cancelled"}
        assert (await producer.ok(JOB, {"jid": waiting}))["cancel_reason"] == "not needed"
        listed = await producer.ok(LSJOB, {"q": "work", "status": "cancelled"})
        assert [job["jid"] for job in listed["jobs"]] == [waiting, delayed]
        stats = (await producer.ok(QSTATS, {"q": "work"}))["stats"]
        assert (stats["cancelled"], stats["waiting"], stats["delayed"]) == (2, 0, 0)
        # Without a reason, the default one.
        other = await enqueue(producer, "work")
        assert await producer.ok(CANCEL, {"jid": other}) == {"status": "cancelled"}
        assert (await producer.ok(JOB, {"jid": other}))["cancel_reason"] == "cancelled"

        assert await producer.err(CANCEL, {"jid": "work:0190a0b0-0000-7000-8000-000000000000"}
                                  ) == "JOB_NOT_FOUND"
        assert await producer.err(CANCEL, {"jid": waiting, "reason": 7}) == "INVALID_PAYLOAD"
        assert await producer.err(CANCEL, {"jid": waiting, "reason": ""}) == "INVALID_PAYLOAD"
        assert await producer.err(CANCEL, {"jid": waiting, "reason": "x" * 1025}
                                  ) == "INVALID_PAYLOAD"
        assert await producer.err(CANCEL, {}) == "INVALID_PAYLOAD"
        assert await producer.err(CANCEL, {"jid": "_system:x"}) == "QUEUE_SYSTEM"
        worker = await client(server.port, "worker")
        done = await enqueue(producer, "work")
        quest = await quest_for(worker, "work")
        assert quest["jid"] == done
        assert await worker.ok(COMPLETE, ref(quest)) == {}
        assert await producer.err(CANCEL, {"jid": done}) == "JOB_STATUS_CONFLICT"

    asyncio.run(scenario())


def test_cancel_an_active_job_pushes_abort_and_its_answer_ends_it_cancelled(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await client(server.port, "producer")
        watcher = await client(server.port, "watcher")
        worker = await client(server.port, "worker")
        await producer.ok(ADDQUEUE, {"name": "work", "config": {"max_attempts": 5}})
        jid = await enqueue(producer, "work", lease_ms=60_000)
        quest = await quest_for(worker, "work")
        await watcher.ok(WATCH, {"jid": jid})
        lease = (await worker.ok(JOBBEAT, ref(quest)))["lease_expires_at"]

        assert await producer.ok(CANCEL, {"jid": jid, "reason": "user left"}) == {
            "status": "active"}
        abort = await worker.next_push(ABORT)
        assert abort["p"] == {"jid": jid, "did": quest["did"], "reason": "user left"}
        record = await producer.ok(JOB, {"jid": jid})
        assert (record["status"], record["cancel_reason"]) == ("active", "user left")
        # Cancelled: a JOBBEAT no longer extends the lease.
        assert (await worker.ok(JOBBEAT, ref(quest)))["lease_expires_at"] == lease
        # A second CANCEL changes nothing and pushes nothing more.
        assert await producer.ok(CANCEL, {"jid": jid, "reason": "again"}) == {
            "status": "active"}

        # The worker answers FAIL (attempts remain): the job ends cancelled, not delayed.
        reply = await worker.ok(FAIL, {**ref(quest), "error": {"message": "cancelled"}})
        assert reply == {"status": "cancelled", "attempts_so_far": 1}
        record = await producer.ok(JOB, {"jid": jid})
        assert (record["status"], record["cancel_reason"]) == ("cancelled", "user left")
        assert [entry["outcome"] for entry in record["history"]] == ["failed"]
        result = await watcher.next_push(RESULT)
        assert result["p"]["status"] == "cancelled" and result["p"]["reason"] == "user left"
        assert not [push for push in worker.pushes if push["t"] == ABORT]

        # COMPLETE of a cancelled job keeps its result, and it ends cancelled too.
        second = await enqueue(producer, "work")
        await worker.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
        quest = await take(worker)
        assert quest["jid"] == second
        await producer.ok(CANCEL, {"jid": second})
        await worker.next_push(ABORT)
        assert await worker.ok(COMPLETE, {**ref(quest), "result": {"partial": True}}) == {}
        record = await producer.ok(JOB, {"jid": second})
        assert (record["status"], record["result"]) == ("cancelled", {"partial": True})
        assert await producer.ok(CANCEL, {"jid": second}) == {"status": "cancelled"}

    asyncio.run(scenario())


def test_a_cancelled_active_job_ends_at_its_lease_and_never_runs_after_a_restart(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--heartbeat.interval_ms", "100")

    async def lease_scenario() -> None:
        producer = await client(server.port, "producer")
        worker = await client(server.port, "worker")
        await producer.ok(ADDQUEUE, {"name": "work", "config": {"max_attempts": 5}})
        jid = await enqueue(producer, "work", lease_ms=300)
        quest = await quest_for(worker, "work")
        assert await producer.ok(CANCEL, {"jid": jid}) == {"status": "active"}
        await worker.next_push(ABORT)
        # The worker ignores ABORT and goes silent: the lease ends the job, cancelled.
        record = await until_status(producer, jid, "cancelled")
        assert [entry["outcome"] for entry in record["history"]] == ["lease_expired"]
        assert await worker.err(COMPLETE, ref(quest)) == "DELIVERY_STALE"

    async def before_restart() -> str:
        producer = await client(server.port, "producer")
        worker = await client(server.port, "worker")
        await producer.ok(ADDQUEUE, {"name": "again", "config": {"max_attempts": 5}})
        jid = await enqueue(producer, "again", lease_ms=600_000)
        await quest_for(worker, "again")
        assert await producer.ok(CANCEL, {"jid": jid, "reason": "stop"}) == {
            "status": "active"}
        assert (await producer.ok(JOB, {"jid": jid}))["status"] == "active"
        server.kill()  # its worker still connected: active, with the cancel stored
        return jid

    asyncio.run(lease_scenario())
    jid = asyncio.run(before_restart())
    restarted = start_server("--heartbeat.interval_ms", "100")

    async def after_restart() -> None:
        producer = await client(restarted.port, "producer")
        record = await producer.ok(JOB, {"jid": jid})
        assert (record["status"], record["cancel_reason"]) == ("cancelled", "stop")
        assert [entry["outcome"] for entry in record["history"]] == ["server_restart"]
        stats = (await producer.ok(QSTATS, {"q": "again"}))["stats"]
        assert (stats["waiting"], stats["delayed"], stats["active"]) == (0, 0, 0)
        # A worker with credit gets the next job, never the cancelled one.
        worker = await client(restarted.port, "worker")
        later = await enqueue(producer, "again")
        assert (await quest_for(worker, "again"))["jid"] == later

    asyncio.run(after_restart())


def test_rmjob_removes_a_waiting_job_but_not_an_active_one(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await client(server.port, "producer")
        await producer.ok(ADDQUEUE, {"name": "work"})
        first = await enqueue(producer, "work")
        second = await enqueue(producer, "work")
        assert await producer.ok(RMJOB, {"jid": second}) == {}
        assert await producer.ok(JOB, {"jid": second}) == {}
        worker = await client(server.port, "worker")
        assert (await quest_for(worker, "work"))["jid"] == first
        assert await producer.err(RMJOB, {"jid": first}) == "JOB_STATUS_CONFLICT"
        assert (await producer.ok(QSTATS, {"q": "work"}))["stats"]["waiting"] == 0

    asyncio.run(scenario())


async def _enqueue_jobs(producer: RawClient, queue: str, count: int, **fields: Any
                        ) -> list[str]:
    jids: list[str] = []
    while len(jids) < count:
        batch = [dict(fields) for _ in range(min(1000, count - len(jids)))]
        jids += (await producer.ok(ENQUEUEMANY, {"q": queue, "jobs": batch}))["jids"]
    return jids


async def _bulk_while_pinging(producer: RawClient, other: RawClient, p: dict[str, Any]
                              ) -> tuple[dict[str, Any], int]:
    """BULK on `producer` while `other` sends PINGs one after another: its reply, and how
    many PONGs came back before it."""
    rid = await producer.send(BULK, p)
    pending = asyncio.ensure_future(producer.reply_to(rid))
    pongs = 0
    while not pending.done():
        assert (await other.request(PING))["t"] == PONG
        pongs += 0 if pending.done() else 1
    reply = await pending
    assert reply["t"] == OK, reply
    return reply["p"], pongs


def test_bulk_actions_run_in_batches_while_others_are_served(server: ServerProcess) -> None:
    jobs = 1600  # four batches of 500

    async def scenario() -> None:
        producer = await client(server.port, "producer")
        other = await client(server.port, "other")
        await producer.ok(ADDQUEUE, {"name": "bulk", "config": {"max_attempts": 1}})
        await _enqueue_jobs(producer, "bulk", jobs)
        delayed = await _enqueue_jobs(producer, "bulk", 3, delay_ms=HOUR_MS)

        reply, pongs = await _bulk_while_pinging(producer, other, {
            "q": "bulk", "status": "waiting", "action": "cancel", "reason": "drained"})
        assert reply == {"count": jobs, "more": False}
        assert pongs >= 1  # another connection was answered between the batches
        stats = (await producer.ok(QSTATS, {"q": "bulk"}))["stats"]
        assert (stats["waiting"], stats["cancelled"], stats["delayed"]) == (0, jobs, 3)
        assert (await producer.ok(JOB, {"jid": delayed[0]}))["status"] == "delayed"

        reply, _ = await _bulk_while_pinging(producer, other, {
            "q": "bulk", "status": "cancelled", "action": "remove"})
        assert reply == {"count": jobs, "more": False}
        assert (await producer.ok(QSTATS, {"q": "bulk"}))["stats"]["cancelled"] == 0

        # Failed jobs (one attempt each), retried all at once.
        failing = await _enqueue_jobs(producer, "bulk", 600)
        worker = await client(server.port, "worker")
        await worker.ok(SUBSCRIBE, {"q": "bulk", "credits": len(failing)})
        quests = [(await worker.next_push(QUEST))["p"] for _ in failing]
        rids = [await worker.send(FAIL, {**ref(q), "error": {"message": "no"}}) for q in quests]
        for rid in rids:
            assert (await worker.reply_to(rid))["p"]["status"] == "failed"
        await worker.close()
        await producer.ok(PAUSE, {"q": "bulk"})  # retried jobs wait as new, undispatched
        reply, _ = await _bulk_while_pinging(producer, other, {
            "q": "bulk", "status": "failed", "action": "retry"})
        assert reply == {"count": len(failing), "more": False}
        stats = (await producer.ok(QSTATS, {"q": "bulk"}))["stats"]
        assert (stats["failed"], stats["new"]) == (0, len(failing))
        record = await producer.ok(JOB, {"jid": failing[0]})
        assert record["runtime"]["attempts_so_far"] == 0 and record["finished_at"] is None

        for bad, code in (
                ({"q": "bulk", "status": "waiting", "action": "retry"}, "INVALID_PAYLOAD"),
                ({"q": "bulk", "status": "active", "action": "cancel"}, "INVALID_PAYLOAD"),
                ({"q": "bulk", "status": "new", "action": "remove"}, "INVALID_PAYLOAD"),
                ({"q": "bulk", "status": "failed", "action": "explode"}, "INVALID_PAYLOAD"),
                ({"q": "bulk", "status": "dead", "action": "remove"}, "INVALID_PAYLOAD"),
                ({"q": "bulk", "action": "remove"}, "INVALID_PAYLOAD"),
                ({"q": "nope", "status": "failed", "action": "retry"}, "QUEUE_NOT_FOUND"),
                ({"q": "_system", "status": "failed", "action": "retry"}, "QUEUE_SYSTEM"),
                ({"q": "bad name!", "status": "failed", "action": "retry"},
                 "QUEUE_NAME_INVALID")):
            assert await producer.err(BULK, bad) == code, bad

    asyncio.run(scenario())
