"""Job delivery over TCP (PROTOCOL.md sections 4-7): SUBSCRIBE, credits and QUEST pushes,
fairness, PAUSE/RESUME, ACK, JOBBEAT, COMPLETE, FAIL, RELEASE, RETRY, GOODBYE, fencing of
stale deliveries, acknowledgement timeouts, leases, stale workers, backoff, shutdown (BYE)
and restart recovery.

Times are compared on the server's clock (PONG `server_time`, job records) where a bound
matters, so a busy machine makes these tests slower, not wrong.
"""

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient, enqueue, ms, server_now
from tests.support.server_process import ServerProcess

PING, SUBSCRIBE, CREDIT, ADDQUEUE, PAUSE, RESUME = 3, 6, 8, 9, 12, 13
ENQUEUE, JOB, RMJOB, QSTATS = 14, 15, 16, 18
ACK, COMPLETE, FAIL, JOBBEAT, GOODBYE, RETRY, RELEASE = 19, 20, 21, 22, 23, 24, 25
OK, ERR, PONG, QUEST, BYE = 101, 102, 105, 106, 107

STATUSES = ("new", "waiting", "delayed", "active", "completed", "failed", "cancelled")
QUEST_FIELDS = {"did", "sid", "jid", "q", "attempt", "max_attempts", "lease_ms",
                "ack_timeout_ms", "job_payload"}
# Bound for a server-driven change (timeout, lease, promotion) to show; never waited out
# when the server behaves.
CHANGE_TIMEOUT_S = 10.0


async def worker(port: int, name: str = "delivery-test") -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name=name)
    return client


async def subscribe(client: RawClient, queue: str, credits: int) -> str:
    return (await client.ok(SUBSCRIBE, {"q": queue, "credits": credits}))["sid"]


async def quest(client: RawClient, timeout: float = CHANGE_TIMEOUT_S) -> dict[str, Any]:
    message = await client.next_push(QUEST, timeout)
    assert message["rid"] == "0" and message["v"] == 2, message
    assert set(message["p"]) == QUEST_FIELDS, message
    return message["p"]


def ref(quest_p: dict[str, Any]) -> dict[str, Any]:
    return {"did": quest_p["did"], "jid": quest_p["jid"]}


async def job(client: RawClient, jid: str) -> dict[str, Any]:
    record = await client.ok(JOB, {"jid": jid})
    assert record["jid"] == jid, record
    return record


async def stats(client: RawClient, queue: str) -> dict[str, Any]:
    return await client.ok(QSTATS, {"q": queue})


async def wait_for(client: RawClient, jid: str,
                   predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read JOB (each reply awaited) until `predicate` holds, within CHANGE_TIMEOUT_S."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        record = await job(client, jid)
        if predicate(record):
            return record
        assert time.monotonic() < deadline, f"{jid} never reached the state wanted: {record}"


def outcomes(record: dict[str, Any]) -> list[str]:
    return [entry["outcome"] for entry in record["history"]]


def no_quest_kept(client: RawClient) -> bool:
    return not any(message["t"] == QUEST for message in client.pushes)


# -- dispatch --------------------------------------------------------------------------


def test_quests_follow_credits_in_fifo_order(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await RawClient.connect(server.port)
        consumer_wid = await consumer.register(name="consumer")
        await producer.ok(ADDQUEUE, {"name": "fifo"})
        payloads = [{"n": 0, "f": 1.5}, [1, "two", None], "three", b"\x00four", None, "five"]
        jids = [await enqueue(producer, "fifo", job_payload=p) for p in payloads[:4]]
        jids.append(await enqueue(producer, "fifo"))  # no payload at all: nil
        jids.append(await enqueue(producer, "fifo", job_payload=payloads[5]))

        # SUBSCRIBE's OK comes before any QUEST of the new subscription.
        rid = await consumer.send(SUBSCRIBE, {"q": "fifo", "credits": 2})
        reply = await consumer.read_frame()
        assert reply is not None and reply["rid"] == rid and reply["t"] == OK, reply
        sid = reply["p"]["sid"]
        first = [await quest(consumer) for _ in range(2)]
        # Oldest first, with every field of section 5.
        assert [q["jid"] for q in first] == jids[:2]
        for index, q in enumerate(first):
            assert q["sid"] == sid
            assert q["q"] == "fifo"
            assert q["attempt"] == 1
            assert q["max_attempts"] == 3
            assert q["lease_ms"] == 60000
            assert q["ack_timeout_ms"] == 10000
            assert q["job_payload"] == payloads[index]
        assert first[0]["did"] != first[1]["did"]

        # No QUEST beyond the credits: nothing arrived before this PONG, nothing is being
        # dispatched (no slot taken), and the other jobs are still waiting.
        await server_now(consumer)
        assert no_quest_kept(consumer)
        picture = await stats(producer, "fifo")
        assert picture["credits"] == 0
        assert picture["concurrency"] == {"active": 2, "limit": None}
        assert picture["stats"] == {**dict.fromkeys(STATUSES, 0), "waiting": 4, "active": 2}
        assert (await job(producer, jids[2]))["status"] == "waiting"
        active = await job(producer, jids[0])
        assert active["status"] == "active"
        assert active["runtime"]["delivery_id"] == first[0]["did"]
        assert active["runtime"]["worker_id"] == consumer_wid
        assert active["runtime"]["acked"] is False

        # CREDIT releases exactly that many more, still oldest first.
        assert await consumer.ok(CREDIT, {"sid": sid, "credits": 3}) == {}
        rest = [await quest(consumer) for _ in range(3)]
        assert [q["jid"] for q in rest] == jids[2:5]
        assert [q["job_payload"] for q in rest] == payloads[2:5]
        await server_now(consumer)
        assert no_quest_kept(consumer)
        assert (await job(producer, jids[5]))["status"] == "waiting"

        # A job enqueued while the subscription has credit is pushed at once: just await it.
        assert await consumer.ok(CREDIT, {"sid": sid, "credits": 2}) == {}
        assert (await quest(consumer))["jid"] == jids[5]
        fresh = await enqueue(producer, "fifo", job_payload={"late": True})
        pushed = await quest(consumer)
        assert pushed["jid"] == fresh and pushed["job_payload"] == {"late": True}
        assert pushed["sid"] == sid
        # Direct hand-over on one connection: the QUEST comes before the ENQUEUE's OK, and
        # the job was dispatched in its enqueue commit.
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        rid = await consumer.send(ENQUEUE, {"q": "fifo", "job_payload": "own"})
        pushed = await consumer.read_frame()
        assert pushed is not None and pushed["t"] == QUEST, pushed
        assert pushed["p"]["job_payload"] == "own"
        reply = await consumer.read_frame()
        assert reply is not None and reply["rid"] == rid and reply["t"] == OK, reply
        assert reply["p"]["jid"] == pushed["p"]["jid"]
        record = await job(producer, reply["p"]["jid"])
        assert record["status"] == "active"
        assert record["runtime"]["started_at"] == record["created_at"]

        # CREDIT errors.
        assert await consumer.err(CREDIT, {"sid": sid, "credits": 0}) == "INVALID_PAYLOAD"
        assert await consumer.err(CREDIT, {"sid": sid}) == "INVALID_PAYLOAD"
        assert await producer.err(CREDIT, {"sid": sid, "credits": 1}) == "SUBSCRIPTION_NOT_FOUND"

    asyncio.run(scenario())


def test_round_robin_between_subscriptions_and_pause_resume(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        first = await worker(server.port, "first")
        second = await worker(server.port, "second")
        await producer.ok(ADDQUEUE, {"name": "rr"})
        # Jobs collected while the queue is paused go out in one dispatch on RESUME.
        assert await producer.ok(PAUSE, {"q": "rr"}) == {}
        assert await producer.err(PAUSE, {"q": "rr"}) == "QUEUE_ALREADY_PAUSED"
        jids = [await enqueue(producer, "rr", job_payload=n) for n in range(6)]
        sid_first = await subscribe(first, "rr", 10)
        sid_second = await subscribe(second, "rr", 10)
        # Paused: credits are there, nothing is dispatched, the jobs are new.
        await server_now(first)
        await server_now(second)
        assert no_quest_kept(first) and no_quest_kept(second)
        picture = await stats(producer, "rr")
        assert picture["state"] == "paused"
        assert picture["credits"] == 20 and picture["concurrency"]["active"] == 0
        assert picture["stats"]["new"] == 6

        assert await producer.ok(RESUME, {"q": "rr"}) == {}
        assert await producer.err(RESUME, {"q": "rr"}) == "QUEUE_NOT_PAUSED"
        got_first = [await quest(first) for _ in range(3)]
        got_second = [await quest(second) for _ in range(3)]
        assert {q["sid"] for q in got_first} == {sid_first}
        assert {q["sid"] for q in got_second} == {sid_second}
        # Served in turn, one job each per round, oldest first.
        assert [q["jid"] for q in got_first] == jids[0::2]
        assert [q["jid"] for q in got_second] == jids[1::2]

        # The next dispatch starts with the subscription after the one served first.
        one = await enqueue(producer, "rr")
        assert (await quest(second))["jid"] == one
        two = await enqueue(producer, "rr")
        assert (await quest(first))["jid"] == two
        three = await enqueue(producer, "rr")
        assert (await quest(second))["jid"] == three

        # PAUSE stops dispatch of waiting jobs even when credit arrives; RESUME restarts it.
        await producer.ok(ADDQUEUE, {"name": "held"})
        lone = await worker(server.port, "lone")
        sid = await subscribe(lone, "held", 0)
        waiting = await enqueue(producer, "held")
        assert await producer.ok(PAUSE, {"q": "held"}) == {}
        assert await lone.ok(CREDIT, {"sid": sid, "credits": 2}) == {}
        picture = await stats(producer, "held")
        assert picture["credits"] == 2 and picture["concurrency"]["active"] == 0
        assert (await job(producer, waiting))["status"] == "waiting"
        fresh = await enqueue(producer, "held")
        assert (await job(producer, fresh))["status"] == "new"
        await server_now(lone)
        assert no_quest_kept(lone)
        assert await producer.ok(RESUME, {"q": "held"}) == {}
        assert [(await quest(lone))["jid"] for _ in range(2)] == [waiting, fresh]

    asyncio.run(scenario())


def test_one_worker_gets_jobs_from_two_queues(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await worker(server.port, "consumer")
        await producer.ok(ADDQUEUE, {"name": "left"})
        await producer.ok(ADDQUEUE, {"name": "right"})
        sid_left = await subscribe(consumer, "left", 2)
        sid_right = await subscribe(consumer, "right", 2)
        assert sid_left != sid_right
        # A busy queue cannot use up the credits of the other one.
        left = [await enqueue(producer, "left", job_payload=f"l{n}") for n in range(4)]
        right = await enqueue(producer, "right", job_payload="r0")
        got = [await quest(consumer) for _ in range(3)]
        by_queue: dict[str, list[dict[str, Any]]] = {"left": [], "right": []}
        for q in got:
            by_queue[q["q"]].append(q)
        assert [q["jid"] for q in by_queue["left"]] == left[:2]
        assert [q["jid"] for q in by_queue["right"]] == [right]
        assert {q["sid"] for q in by_queue["left"]} == {sid_left}
        assert by_queue["right"][0]["sid"] == sid_right
        assert by_queue["right"][0]["job_payload"] == "r0"
        assert (await stats(producer, "left"))["stats"]["waiting"] == 2
        for q in got:
            assert await consumer.ok(COMPLETE, ref(q)) == {}
        assert (await job(producer, right))["status"] == "completed"

    asyncio.run(scenario())


# -- outcomes --------------------------------------------------------------------------


def test_ack_jobbeat_and_complete(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await RawClient.connect(server.port)
        consumer_wid = await consumer.register(name="consumer")
        await producer.ok(ADDQUEUE, {"name": "work"})
        await subscribe(consumer, "work", 1)
        jid = await enqueue(producer, "work", job_payload={"task": "resize"})
        q = await quest(consumer)
        assert q["jid"] == jid

        before = await server_now(consumer)
        acked = await consumer.ok(ACK, ref(q))
        after = await server_now(consumer)
        lease = ms(acked["lease_expires_at"])
        assert before + 60000 <= lease <= after + 60000
        assert await consumer.err(ACK, ref(q)) == "DELIVERY_ALREADY_ACKED"

        record = await job(producer, jid)
        assert record["status"] == "active"
        assert record["runtime"]["acked"] is True
        assert record["runtime"]["delivery_id"] == q["did"]
        assert ms(record["runtime"]["lease_expires_at"]) == lease
        assert record["runtime"]["attempts_so_far"] == 0
        assert "progress" not in record["runtime"]

        # JOBBEAT restarts the lease from now and records progress.
        while await server_now(consumer) <= lease - 60000:
            pass  # each PONG awaited: the server's clock has moved past the ACK
        beat_before = await server_now(consumer)
        beat = await consumer.ok(JOBBEAT, {**ref(q), "progress": {"done": 0.5, "step": 2}})
        new_lease = ms(beat["lease_expires_at"])
        assert new_lease > lease
        assert new_lease >= beat_before + 60000
        record = await job(producer, jid)
        assert record["runtime"]["progress"] == {"done": 0.5, "step": 2}
        assert ms(record["runtime"]["lease_expires_at"]) == new_lease
        # No progress (or nil) keeps the last one.
        await consumer.ok(JOBBEAT, {**ref(q), "progress": None})
        await consumer.ok(JOBBEAT, ref(q))
        assert (await job(producer, jid))["runtime"]["progress"] == {"done": 0.5, "step": 2}
        assert await consumer.err(JOBBEAT, {"did": q["did"]}) == "INVALID_PAYLOAD"

        done_before = await server_now(consumer)
        result = {"ok": True, "sizes": [1, 2.25, None], "blob": b"\x01\x02"}
        assert await consumer.ok(COMPLETE, {**ref(q), "result": result}) == {}
        record = await job(producer, jid)
        assert record["status"] == "completed"
        assert record["result"] == result
        assert ms(record["finished_at"]) >= done_before
        assert record["runtime"] == {"attempts_so_far": 1}
        (entry,) = record["history"]
        assert entry["outcome"] == "completed"
        assert entry["attempt"] == 1 and entry["counted"] is True
        assert entry["delivery_id"] == q["did"]
        assert entry["worker_id"] == consumer_wid
        assert ms(entry["ended_at"]) == ms(record["finished_at"])
        assert ms(entry["started_at"]) <= ms(entry["ended_at"])
        assert "error" not in entry
        counts = (await stats(producer, "work"))["stats"]
        assert counts == {**dict.fromkeys(STATUSES, 0), "completed": 1}

        # The delivery is over: every outcome for it is stale, the job does not change.
        for message_type in (ACK, COMPLETE, JOBBEAT, RELEASE):
            assert await consumer.err(message_type, ref(q)) == "DELIVERY_STALE"
        assert await consumer.err(FAIL, {**ref(q), "error": {"message": "late"}}
                                  ) == "DELIVERY_STALE"
        assert await job(producer, jid) == record

        # RETRY only applies to failed jobs.
        assert await producer.err(RETRY, {"jid": jid}) == "JOB_STATUS_CONFLICT"
        assert await producer.err(RETRY, {"jid": "work:0190a0d4-0000-7000-8000-000000000000"}
                                  ) == "JOB_NOT_FOUND"
        assert await producer.err(RETRY, {}) == "INVALID_PAYLOAD"

        # Once the job is removed, its old delivery is not found (rather than stale).
        assert await producer.ok(RMJOB, {"jid": jid}) == {}
        assert await consumer.err(COMPLETE, ref(q)) == "DELIVERY_NOT_FOUND"
        assert await consumer.err(ACK, ref(q)) == "DELIVERY_NOT_FOUND"

    asyncio.run(scenario())


def test_result_too_large_keeps_the_delivery(start_server: Callable[..., ServerProcess]
                                             ) -> None:
    server = start_server("--jobs.max_result_bytes", "64")

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "big"})
        await subscribe(client, "big", 1)
        jid = await enqueue(client, "big")
        q = await quest(client)
        await client.ok(ACK, ref(q))
        # "y" * 62 encodes to 64 bytes (str 8 header), "y" * 63 to 65.
        assert await client.err(COMPLETE, {**ref(q), "result": "y" * 63}) == "RESULT_TOO_LARGE"
        assert await client.err(COMPLETE, {**ref(q), "result": {"data": "x" * 100}}
                                ) == "RESULT_TOO_LARGE"
        assert await client.err(FAIL, {**ref(q), "error": {"message": "x" * 100}}
                                ) == "RESULT_TOO_LARGE"
        assert await client.err(JOBBEAT, {**ref(q), "progress": "x" * 100}
                                ) == "RESULT_TOO_LARGE"
        record = await job(client, jid)
        assert record["status"] == "active"
        assert record["runtime"]["delivery_id"] == q["did"]
        assert record["history"] == []
        assert "progress" not in record["runtime"]
        # Still held: a beat works, and a result within the limit completes it.
        await client.ok(JOBBEAT, {**ref(q), "progress": 1})
        assert await client.ok(COMPLETE, {**ref(q), "result": "y" * 62}) == {}
        record = await job(client, jid)
        assert record["status"] == "completed" and record["result"] == "y" * 62
        assert outcomes(record) == ["completed"]

    asyncio.run(scenario())


def test_fail_retries_then_fails_and_retry_restarts(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await worker(server.port, "consumer")
        await producer.ok(ADDQUEUE, {"name": "flaky", "config": {"retry_interval_ms": 200}})
        await subscribe(consumer, "flaky", 10)
        jid = await enqueue(producer, "flaky", job_payload="p")

        q = await quest(consumer)
        assert q["attempt"] == 1
        assert await consumer.err(FAIL, ref(q)) == "INVALID_PAYLOAD"
        assert await consumer.err(FAIL, {**ref(q), "error": {"details": 1}}) == "INVALID_PAYLOAD"
        assert await consumer.err(FAIL, {**ref(q), "error": "boom"}) == "INVALID_PAYLOAD"
        errors = [{"message": f"boom {n}", "details": {"code": n, "ratio": n / 4}}
                  for n in range(1, 4)]
        reply = await consumer.ok(FAIL, {**ref(q), "error": errors[0]})
        assert reply["status"] == "delayed" and reply["attempts_so_far"] == 1
        retry_at = ms(reply["retry_at"])
        record = await job(producer, jid)
        assert record["status"] == "delayed"
        assert ms(record["execution_start_at"]) == retry_at
        (entry,) = record["history"]
        assert entry["outcome"] == "failed" and entry["counted"] is True
        assert entry["error"] == errors[0]
        assert retry_at - ms(entry["ended_at"]) == 200

        q2 = await quest(consumer)
        # Not before the retry interval has passed, on the server's clock.
        assert await server_now(consumer) >= retry_at
        assert q2["jid"] == jid and q2["attempt"] == 2 and q2["did"] != q["did"]
        record = await job(producer, jid)
        assert ms(record["runtime"]["started_at"]) >= retry_at
        reply = await consumer.ok(FAIL, {**ref(q2), "error": errors[1]})
        assert reply["status"] == "delayed" and reply["attempts_so_far"] == 2

        q3 = await quest(consumer)
        assert q3["attempt"] == 3 and q3["max_attempts"] == 3
        reply = await consumer.ok(FAIL, {**ref(q3), "error": errors[2]})
        assert reply == {"status": "failed", "attempts_so_far": 3}
        record = await job(producer, jid)
        assert record["status"] == "failed"
        assert record["finished_at"] is not None
        assert record["runtime"] == {"attempts_so_far": 3}
        assert [(e["attempt"], e["outcome"], e["counted"], e["error"])
                for e in record["history"]] == [
            (n + 1, "failed", True, errors[n]) for n in range(3)]
        assert [e["delivery_id"] for e in record["history"]] == [q["did"], q2["did"], q3["did"]]
        counts = (await stats(producer, "flaky"))["stats"]
        assert counts == {**dict.fromkeys(STATUSES, 0), "failed": 1}

        # RETRY: waiting again with fresh attempts, history kept, delivered again.
        assert await producer.ok(RETRY, {"jid": jid}) == {"status": "waiting"}
        q4 = await quest(consumer)
        assert q4["jid"] == jid and q4["attempt"] == 1 and q4["job_payload"] == "p"
        record = await job(producer, jid)
        assert record["status"] == "active" and record["finished_at"] is None
        assert record["runtime"]["attempts_so_far"] == 0
        assert len(record["history"]) == 3
        assert await producer.err(RETRY, {"jid": jid}) == "JOB_STATUS_CONFLICT"
        assert await consumer.ok(COMPLETE, ref(q4)) == {}
        assert outcomes(await job(producer, jid)) == ["failed"] * 3 + ["completed"]

    asyncio.run(scenario())


def test_exponential_backoff_grows(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "expo", "config": {
            "backoff": "exponential", "retry_interval_ms": 200, "max_attempts": 4}})
        await subscribe(client, "expo", 10)
        jid = await enqueue(client, "expo")
        gaps = []
        for attempt in range(1, 4):
            q = await quest(client)
            assert q["attempt"] == attempt
            reply = await client.ok(FAIL, {**ref(q), "error": {"message": str(attempt)}})
            assert reply["status"] == "delayed"
            record = await job(client, jid)
            gaps.append(ms(reply["retry_at"]) - ms(record["history"][-1]["ended_at"]))
        assert gaps == [200, 400, 800]
        q = await quest(client)
        assert q["attempt"] == 4
        reply = await client.ok(FAIL, {**ref(q), "error": {"message": "last"}})
        assert reply == {"status": "failed", "attempts_so_far": 4}

    asyncio.run(scenario())


def test_release_and_fencing_of_old_deliveries(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await worker(server.port, "consumer")
        other = await worker(server.port, "other")
        await producer.ok(ADDQUEUE, {"name": "rel"})
        sid = await subscribe(consumer, "rel", 1)
        jid = await enqueue(producer, "rel", job_payload="r")
        spare = await enqueue(producer, "rel")
        q = await quest(consumer)
        assert q["jid"] == jid
        start = (await job(producer, jid))["execution_start_at"]
        await consumer.ok(ACK, ref(q))
        await consumer.ok(JOBBEAT, {**ref(q), "progress": "half"})
        assert (await job(producer, jid))["runtime"]["progress"] == "half"

        assert await consumer.ok(RELEASE, ref(q)) == {}
        record = await job(producer, jid)
        assert record["status"] == "waiting"
        assert record["runtime"] == {"attempts_so_far": 0}
        assert record["execution_start_at"] == start
        (entry,) = record["history"]
        assert (entry["outcome"], entry["counted"], entry["attempt"]) == ("released", False, 1)

        # The released delivery is over: every outcome for it is stale.
        for message_type in (ACK, COMPLETE, JOBBEAT, RELEASE):
            assert await consumer.err(message_type, ref(q)) == "DELIVERY_STALE"
        assert await consumer.err(FAIL, {**ref(q), "error": {"message": "x"}}
                                  ) == "DELIVERY_STALE"

        # Delivered again (it keeps its place ahead of the newer job), same attempt number.
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        q2 = await quest(consumer)
        assert q2["jid"] == jid and q2["attempt"] == 1 and q2["did"] != q["did"]
        # The older delivery of the same job stays stale and changes nothing.
        assert await consumer.err(COMPLETE, {**ref(q), "result": "old"}) == "DELIVERY_STALE"
        assert await consumer.err(FAIL, {**ref(q), "error": {"message": "old"}}
                                  ) == "DELIVERY_STALE"
        assert await consumer.err(RELEASE, ref(q)) == "DELIVERY_STALE"
        record = await job(producer, jid)
        assert record["status"] == "active"
        assert record["runtime"]["delivery_id"] == q2["did"]
        assert record["runtime"]["attempts_so_far"] == 0
        assert "progress" not in record["runtime"]  # it ended with its delivery
        assert outcomes(record) == ["released"]

        # Another connection cannot touch this worker's current delivery.
        for message_type in (ACK, COMPLETE, JOBBEAT, RELEASE):
            assert await other.err(message_type, ref(q2)) == "DELIVERY_NOT_FOUND"
        assert await other.err(FAIL, {**ref(q2), "error": {"message": "x"}}
                               ) == "DELIVERY_NOT_FOUND"
        # An unknown job is not found either, from anyone.
        ghost = {"did": q2["did"], "jid": "rel:0190a0d4-0000-7000-8000-000000000000"}
        assert await other.err(COMPLETE, ghost) == "DELIVERY_NOT_FOUND"
        # A delivery this worker holds, quoted with another job's id, is a bad request.
        assert await consumer.err(COMPLETE, {"did": q2["did"], "jid": spare}
                                  ) == "INVALID_PAYLOAD"
        record = await job(producer, jid)
        assert record["status"] == "active" and record["runtime"]["acked"] is False
        assert record["runtime"]["delivery_id"] == q2["did"]
        assert (await job(producer, spare))["status"] == "waiting"

        assert await consumer.ok(COMPLETE, {**ref(q2), "result": "new"}) == {}
        record = await job(producer, jid)
        assert record["status"] == "completed" and record["result"] == "new"
        assert outcomes(record) == ["released", "completed"]
        assert record["runtime"]["attempts_so_far"] == 1

    asyncio.run(scenario())


# -- timeouts, leases, disconnects -----------------------------------------------------


def test_ack_timeout_withdraws_without_using_an_attempt(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--dispatch.ack_timeout_ms", "300", "--heartbeat.interval_ms", "100")

    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await worker(server.port, "consumer")
        await producer.ok(ADDQUEUE, {"name": "slow"})
        sid = await subscribe(consumer, "slow", 1)
        jid = await enqueue(producer, "slow")
        q = await quest(consumer)
        assert q["ack_timeout_ms"] == 300

        record = await wait_for(producer, jid, lambda r: r["status"] == "waiting")
        assert record["runtime"] == {"attempts_so_far": 0}
        (entry,) = record["history"]
        assert (entry["outcome"], entry["counted"], entry["delivery_id"]) == (
            "withdrawn", False, q["did"])
        assert ms(entry["ended_at"]) - ms(entry["started_at"]) >= 300
        assert await consumer.err(ACK, ref(q)) == "DELIVERY_STALE"
        assert await consumer.err(COMPLETE, ref(q)) == "DELIVERY_STALE"

        # Redelivered, still attempt 1; acknowledged in time, it is not withdrawn.
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        q2 = await quest(consumer)
        assert q2["jid"] == jid and q2["attempt"] == 1 and q2["did"] != q["did"]
        await consumer.ok(ACK, ref(q2))
        # Well past the acknowledgement timeout (server clock), the delivery still holds.
        started = ms((await job(producer, jid))["runtime"]["started_at"])
        while await server_now(producer) < started + 700:
            pass
        record = await job(producer, jid)
        assert record["status"] == "active"
        assert record["runtime"]["delivery_id"] == q2["did"]
        assert await consumer.ok(COMPLETE, ref(q2)) == {}
        assert outcomes(await job(producer, jid)) == ["withdrawn", "completed"]

    asyncio.run(scenario())


def test_lease_expiry_counts_an_attempt_and_jobbeat_keeps_the_lease(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jobs.default_lease_ms", "300", "--heartbeat.interval_ms", "100")

    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        consumer = await worker(server.port, "consumer")
        await producer.ok(ADDQUEUE, {"name": "leased", "config": {"retry_interval_ms": 100}})
        sid = await subscribe(consumer, "leased", 2)
        jid = await enqueue(producer, "leased")
        q = await quest(consumer)
        assert q["lease_ms"] == 300
        lease = ms((await consumer.ok(ACK, ref(q)))["lease_expires_at"])

        # Silence: the lease ends, the attempt is used, the job retries after its backoff.
        q2 = await quest(consumer)
        assert q2["jid"] == jid and q2["attempt"] == 2 and q2["did"] != q["did"]
        record = await job(producer, jid)
        (entry,) = record["history"]
        assert (entry["outcome"], entry["counted"], entry["attempt"]) == (
            "lease_expired", True, 1)
        assert ms(entry["ended_at"]) >= lease
        assert record["runtime"]["attempts_so_far"] == 1
        # The expired delivery is stale and changes nothing.
        for message_type in (COMPLETE, JOBBEAT, ACK, RELEASE):
            assert await consumer.err(message_type, ref(q)) == "DELIVERY_STALE"
        record = await job(producer, jid)
        assert record["status"] == "active"
        assert record["runtime"]["delivery_id"] == q2["did"]
        assert outcomes(record) == ["lease_expired"]

        assert await consumer.ok(COMPLETE, ref(q2)) == {}
        record = await job(producer, jid)
        assert outcomes(record) == ["lease_expired", "completed"]
        assert record["runtime"]["attempts_so_far"] == 2

        # JOBBEATs (the first one acknowledges) keep a delivery well past its lease_ms. This
        # job's own lease (1000 ms) leaves a slow machine room between two beats.
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        beaten = await enqueue(producer, "leased", lease_ms=1000)
        q3 = await quest(consumer)
        assert q3["jid"] == beaten and q3["lease_ms"] == 1000
        first = await consumer.ok(JOBBEAT, ref(q3))
        begun = ms(first["lease_expires_at"]) - 1000
        last = ms(first["lease_expires_at"])
        while await server_now(consumer) < begun + 2500:
            await asyncio.sleep(0.15)  # the worker busy with its job between beats
            beat = await consumer.ok(JOBBEAT, ref(q3))
            assert ms(beat["lease_expires_at"]) >= last
            last = ms(beat["lease_expires_at"])
        record = await job(producer, beaten)
        assert record["status"] == "active" and record["history"] == []
        assert record["runtime"]["delivery_id"] == q3["did"]
        assert record["runtime"]["acked"] is True
        assert await consumer.ok(COMPLETE, ref(q3)) == {}
        record = await job(producer, beaten)
        assert outcomes(record) == ["completed"]
        assert record["runtime"]["attempts_so_far"] == 1

    asyncio.run(scenario())


def test_disconnect_and_goodbye_give_jobs_back(server: ServerProcess) -> None:
    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        await producer.ok(ADDQUEUE, {"name": "gone"})
        await producer.ok(ADDQUEUE, {"name": "bye"})

        # Disconnect: the acknowledged job uses an attempt, the other one is withdrawn.
        leaver = await worker(server.port, "leaver")
        await subscribe(leaver, "gone", 2)
        acked_jid = await enqueue(producer, "gone")
        loose_jid = await enqueue(producer, "gone")
        quests = {q["jid"]: q for q in [await quest(leaver), await quest(leaver)]}
        await leaver.ok(ACK, ref(quests[acked_jid]))
        await leaver.close()
        acked = await wait_for(producer, acked_jid, lambda r: r["status"] == "delayed")
        assert acked["runtime"] == {"attempts_so_far": 1}
        (entry,) = acked["history"]
        assert (entry["outcome"], entry["counted"]) == ("disconnected", True)
        loose = await wait_for(producer, loose_jid, lambda r: r["status"] == "waiting")
        assert loose["runtime"] == {"attempts_so_far": 0}
        (entry,) = loose["history"]
        assert (entry["outcome"], entry["counted"]) == ("withdrawn", False)
        picture = await stats(producer, "gone")
        assert picture["subscriptions"] == 0 and picture["concurrency"]["active"] == 0

        # An outcome that arrived before the close is handled first: the job is completed,
        # not given back.
        hasty = await worker(server.port, "hasty")
        await subscribe(hasty, "gone", 1)
        hasty_q = await quest(hasty)  # a job given back above, dispatched again
        before = outcomes(await job(producer, hasty_q["jid"]))
        await hasty.ok(ACK, ref(hasty_q))
        await hasty.send(COMPLETE, {**ref(hasty_q), "result": "done"})
        await hasty.close()
        record = await wait_for(producer, hasty_q["jid"], lambda r: r["status"] != "active")
        assert record["status"] == "completed" and record["result"] == "done"
        assert outcomes(record) == [*before, "completed"]

        # GOODBYE: a bad reason is refused and changes nothing; a good one closes.
        polite = await worker(server.port, "polite")
        await subscribe(polite, "bye", 2)
        acked_jid = await enqueue(producer, "bye")
        loose_jid = await enqueue(producer, "bye")
        quests = {q["jid"]: q for q in [await quest(polite), await quest(polite)]}
        await polite.ok(ACK, ref(quests[acked_jid]))
        for bad in ("", "x" * 257, 42):
            assert await polite.err(GOODBYE, {"reason": bad}) == "INVALID_PAYLOAD"
        await server_now(polite)
        assert (await job(producer, acked_jid))["status"] == "active"
        assert (await job(producer, loose_jid))["status"] == "active"
        assert await polite.ok(GOODBYE, {"reason": "deploying"}) == {}
        assert await polite.read_frame() is None  # the server closed the connection
        acked = await wait_for(producer, acked_jid, lambda r: r["status"] == "delayed")
        assert outcomes(acked) == ["disconnected"]
        assert acked["runtime"] == {"attempts_so_far": 1}
        loose = await wait_for(producer, loose_jid, lambda r: r["status"] == "waiting")
        assert outcomes(loose) == ["withdrawn"]
        assert loose["runtime"] == {"attempts_so_far": 0}
        assert (await stats(producer, "bye"))["subscriptions"] == 0

    asyncio.run(scenario())


def test_stale_worker_is_dropped_and_a_pinging_one_stays(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--worker.stale_after_ms", "1000", "--heartbeat.interval_ms", "100",
                          "--jobs.default_lease_ms", "60000")

    async def scenario() -> None:
        producer = await worker(server.port, "producer")
        await producer.ok(ADDQUEUE, {"name": "quiet"})
        silent = await worker(server.port, "silent")
        chatty = await worker(server.port, "chatty")
        idle = await worker(server.port, "idle")  # holds nothing: never judged stale
        await subscribe(silent, "quiet", 1)
        silent_jid = await enqueue(producer, "quiet")
        silent_q = await quest(silent)
        assert silent_q["jid"] == silent_jid
        await subscribe(chatty, "quiet", 1)
        chatty_jid = await enqueue(producer, "quiet")
        chatty_q = await quest(chatty)
        assert chatty_q["jid"] == chatty_jid
        await chatty.ok(ACK, ref(chatty_q))
        last_word = await server_now(silent)
        await silent.ok(ACK, ref(silent_q))  # the silent worker's last message

        async def keep_pinging(stop: asyncio.Event) -> int:
            pings = 0
            while not stop.is_set():
                await server_now(chatty)
                pings += 1
                await asyncio.sleep(0.2)  # a worker's PING interval, well under 1000 ms
            return pings

        stop = asyncio.Event()
        pinger = asyncio.create_task(keep_pinging(stop))
        assert await silent.read_frame(CHANGE_TIMEOUT_S) is None  # closed, nothing sent
        dropped_seen = await server_now(producer)
        assert dropped_seen >= last_word + 1000
        record = await wait_for(producer, silent_jid, lambda r: r["status"] == "delayed")
        assert outcomes(record) == ["stale_worker"]
        assert record["history"][0]["counted"] is True
        assert record["runtime"] == {"attempts_so_far": 1}

        # The pinging worker outlives another stale period and still holds its job.
        while await server_now(producer) < dropped_seen + 1200:
            await asyncio.sleep(0.1)  # let time pass while the pinger works
        stop.set()
        assert await pinger >= 5
        record = await job(producer, chatty_jid)
        assert record["status"] == "active"
        assert record["runtime"]["delivery_id"] == chatty_q["did"]
        assert await chatty.ok(COMPLETE, ref(chatty_q)) == {}
        # Idle for the whole time, holding nothing: still connected.
        assert await server_now(idle) >= dropped_seen
        picture = await stats(producer, "quiet")
        assert picture["subscriptions"] == 1  # the dropped worker's subscription ended

    asyncio.run(scenario())


# -- shutdown and restart --------------------------------------------------------------


def test_shutdown_sends_bye_and_accepts_outcomes_during_grace(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--shutdown.grace_ms", "2000")

    async def scenario() -> tuple[str, str, str, int, float]:
        # BYE goes to every open connection, registered or not.
        anonymous = await RawClient.connect(server.port)
        helloed = await RawClient.connect(server.port)
        assert (await helloed.request(1, {}))["t"] == 103  # HELLO answered HI
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "closing"})
        await subscribe(client, "closing", 3)  # one credit stays unused
        done_jid = await enqueue(client, "closing")
        held_jid = await enqueue(client, "closing")
        quests = {q["jid"]: q for q in [await quest(client), await quest(client)]}
        for q in quests.values():
            await client.ok(ACK, ref(q))

        signalled = time.monotonic()
        stopping = asyncio.get_running_loop().run_in_executor(None, server.stop,
                                                              signal.SIGTERM)
        bye = await client.next_push(BYE, CHANGE_TIMEOUT_S)
        assert bye == {"v": 2, "t": BYE, "rid": "0",
                       "p": {"reason": "server_shutdown", "grace_ms": 2000}}
        assert await anonymous.next_push(BYE, CHANGE_TIMEOUT_S) == bye
        assert await helloed.next_push(BYE, CHANGE_TIMEOUT_S) == bye
        # Still served during the grace period: the outcome is accepted and committed, an
        # ENQUEUE is accepted, but no QUEST is sent any more, credit or not.
        assert await client.ok(COMPLETE, {**ref(quests[done_jid]), "result": "in time"}) == {}
        late_jid = await enqueue(client, "closing", job_payload="late")
        # The other job is still out, so the server waits out the grace, then closes.
        while (message := await client.read_frame(CHANGE_TIMEOUT_S)) is not None:
            assert message["t"] != QUEST, message
        assert no_quest_kept(client)
        code = await stopping
        return done_jid, held_jid, late_jid, code, time.monotonic() - signalled

    done_jid, held_jid, late_jid, code, took = asyncio.run(scenario())
    assert code == 0
    assert took >= 2.0
    assert server.events("server_stopped")

    restarted = start_server()

    async def check() -> None:
        client = await worker(restarted.port)
        done = await job(client, done_jid)
        assert done["status"] == "completed" and done["result"] == "in time"
        assert outcomes(done) == ["completed"]
        held = await job(client, held_jid)
        assert held["status"] == "waiting"
        assert held["runtime"] == {"attempts_so_far": 0}
        assert [(e["outcome"], e["counted"]) for e in held["history"]] == [
            ("server_shutdown", False)]
        late = await job(client, late_jid)
        assert late["status"] == "waiting" and late["history"] == []
        assert late["payload"] == "late"

    asyncio.run(check())


def test_restart_after_sigkill_retries_active_jobs(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()

    async def before_crash() -> dict[str, dict[str, Any]]:
        client = await worker(first.port)
        await client.ok(ADDQUEUE, {"name": "crashy", "config": {"retry_interval_ms": 100}})
        await subscribe(client, "crashy", 2)
        acked = await enqueue(client, "crashy", job_payload="acked")
        loose = await enqueue(client, "crashy", job_payload="loose")
        quests = {q["jid"]: q for q in [await quest(client), await quest(client)]}
        assert set(quests) == {acked, loose}
        await client.ok(ACK, ref(quests[acked]))
        first.kill()
        return quests

    quests = asyncio.run(before_crash())
    second = start_server()

    async def after_restart() -> None:
        client = await worker(second.port)
        for jid, old in quests.items():
            record = await job(client, jid)
            assert record["status"] in ("delayed", "waiting")
            (entry,) = record["history"]
            assert (entry["outcome"], entry["counted"], entry["attempt"]) == (
                "server_restart", True, 1)
            assert entry["delivery_id"] == old["did"]
            assert record["runtime"] == {"attempts_so_far": 1}
        # The old deliveries are stale for everyone.
        for old in quests.values():
            assert await client.err(COMPLETE, ref(old)) == "DELIVERY_STALE"
        await subscribe(client, "crashy", 2)
        fresh = {q["jid"]: q for q in [await quest(client), await quest(client)]}
        assert set(fresh) == set(quests)
        for jid, q in fresh.items():
            assert q["attempt"] == 2 and q["did"] != quests[jid]["did"]
            assert q["job_payload"] == quests[jid]["job_payload"]
            assert await client.ok(COMPLETE, ref(q)) == {}
            assert outcomes(await job(client, jid)) == ["server_restart", "completed"]
        counts = (await stats(client, "crashy"))["stats"]
        assert counts == {**dict.fromkeys(STATUSES, 0), "completed": 2}

    asyncio.run(after_restart())
