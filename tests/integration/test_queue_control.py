"""Queue control over the wire: rate limits, SETQUEUE, CLEARQUEUE, OBLITERATE, retention,
JOBLOG, why a job is not running (`blocked_by`), the dispatch side of QSTATS, ENQUEUE's
`delay_ms` and REGISTER's `limits`.

Times are compared on the server's own clock (job records, PONG `server_time`), never on
the test's, so a busy machine slows the tests down without making them wrong.
"""

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient, enqueue, frame, ms, server_now
from tests.support.server_process import ServerProcess

HELLO, REGISTER, PING, QUEUE, LSQUEUE, SUBSCRIBE, UNSUBSCRIBE, CREDIT = 1, 2, 3, 4, 5, 6, 7, 8
ADDQUEUE, RMQUEUE, PAUSE, RESUME, ENQUEUE, JOB, RMJOB, LSJOB, QSTATS = (
    9, 11, 12, 13, 14, 15, 16, 17, 18)
ACK, COMPLETE, FAIL = 19, 20, 21
SETQUEUE, JOBLOG, CLEARQUEUE, OBLITERATE = 26, 27, 28, 29
OK, ERR, PONG, QUEST, SUBEND = 101, 102, 105, 106, 108

STATUSES = ("new", "waiting", "delayed", "active", "completed", "failed", "cancelled")
# Bound for a server-driven change (retention, promotion, a timer) to show; never waited
# out when the server behaves.
CHANGE_TIMEOUT_S = 10.0
# Keep deliveries out long enough that no acknowledgement timeout interferes with a test.
LONG_ACK = ("--dispatch.ack_timeout_ms", "600000")
HOUR_MS = 3_600_000


async def worker(port: int, name: str = "queue-control-test") -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name=name)
    return client


async def enqueue_many(client: RawClient, queue: str, count: int, **fields: Any) -> list[str]:
    """`count` ENQUEUEs sent back to back, then their replies: job ids in creation order."""
    rids = [await client.send(ENQUEUE, {"q": queue, **fields}) for _ in range(count)]
    jids = []
    for rid in rids:
        reply = await client.reply_to(rid)
        assert reply["t"] == OK, reply
        jids.append(reply["p"]["jid"])
    return jids


async def job(client: RawClient, jid: str) -> dict[str, Any]:
    return await client.ok(JOB, {"jid": jid})


async def stats(client: RawClient, queue: str) -> dict[str, int]:
    return (await client.ok(QSTATS, {"q": queue}))["stats"]


def counts(**nonzero: int) -> dict[str, int]:
    return {**dict.fromkeys(STATUSES, 0), **nonzero}


async def listed(client: RawClient, queue: str, status: str) -> list[str]:
    reply = await client.ok(LSJOB, {"q": queue, "status": status, "page_size": 1000})
    return [entry["jid"] for entry in reply["jobs"]]


async def agree(client: RawClient, queue: str, expected: dict[str, int]) -> None:
    """QSTATS shows `expected` and LSJOB lists as many jobs in every status."""
    assert await stats(client, queue) == expected
    for status in STATUSES:
        assert len(await listed(client, queue, status)) == expected[status], status


async def take_quests(client: RawClient, count: int) -> dict[str, dict[str, Any]]:
    """The next `count` QUEST pushes, by job id, in arrival order."""
    quests = {}
    for _ in range(count):
        quest = (await client.next_push(QUEST))["p"]
        quests[quest["jid"]] = quest
    return quests


def quests_left(client: RawClient) -> list[dict[str, Any]]:
    return [message for message in client.pushes if message["t"] == QUEST]


def delivery(quest: dict[str, Any]) -> dict[str, str]:
    return {"did": quest["did"], "jid": quest["jid"]}


async def finish(client: RawClient, quest: dict[str, Any], outcome: int = COMPLETE
                 ) -> dict[str, Any]:
    """ACK a QUEST, then COMPLETE or FAIL it; the outcome's reply."""
    await client.ok(ACK, delivery(quest))
    extra = {"error": {"message": "boom"}} if outcome == FAIL else {}
    return await client.ok(outcome, {**delivery(quest), **extra})


async def poll(read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Read (each reply awaited) until `done` holds, within CHANGE_TIMEOUT_S."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value}"


_pipeline_rids = itertools.count(1)


async def pipelined(client: RawClient, *requests: tuple[int, dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Requests written in one write (so the server reads them together, each pipelined
    right behind the one before); their replies, in request order."""
    rids = [f"pipe-{next(_pipeline_rids)}" for _ in requests]
    await client.send_raw(b"".join(
        frame({"v": 2, "t": message_type, "rid": rid, "p": payload})
        for rid, (message_type, payload) in zip(rids, requests, strict=True)))
    return [await client.reply_to(rid) for rid in rids]


def assert_sliding_window(starts: list[int], limit: int, window_ms: int) -> None:
    """No `window_ms` span of the server's clock holds more than `limit` starts."""
    starts = sorted(starts)
    for first, later in zip(starts, starts[limit:], strict=False):
        assert later - first >= window_ms, (starts, limit, window_ms)


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limit_holds_jobs_back_and_the_server_releases_them(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "rated",
                                  "config": {"rate_limit": 5, "rate_window_ms": 1000}})
        await admin.ok(ADDQUEUE, {"name": "free"})
        assert (await admin.ok(QSTATS, {"q": "free"}))["rate"] is None
        jids = await enqueue_many(admin, "rated", 12)
        assert (await admin.ok(QSTATS, {"q": "rated"}))["rate"] == {
            "limit": 5, "window_ms": 1000, "started_in_window": 0}

        await consumer.ok(SUBSCRIBE, {"q": "rated", "credits": 100})
        first = await take_quests(consumer, 5)
        assert list(first) == jids[:5]

        # While the window is closed: the next job says why it waits, and until when.
        held = await job(admin, jids[5])
        assert held["status"] == "waiting"
        assert held["blocked_by"]["reason"] == "rate_limited"
        first_starts = [ms((await job(admin, jid))["runtime"]["started_at"])
                        for jid in jids[:5]]
        assert ms(held["blocked_by"]["until"]) == min(first_starts) + 1000
        rate = (await admin.ok(QSTATS, {"q": "rated"}))["rate"]
        assert rate == {"limit": 5, "window_ms": 1000, "started_in_window": 5}

        # The rest come without anything more from the client: the server's timer.
        rest = await take_quests(consumer, 7)
        assert list(rest) == jids[5:]
        records = [await job(admin, jid) for jid in jids]
        assert all(record["status"] == "active" for record in records)
        starts = [ms(record["runtime"]["started_at"]) for record in records]
        assert starts == sorted(starts)  # oldest first
        assert_sliding_window(starts, 5, 1000)
        assert starts[5] >= ms(held["blocked_by"]["until"])
        assert starts[10] >= min(first_starts) + 2000
        assert await stats(admin, "rated") == counts(active=12)
        assert quests_left(consumer) == []

    asyncio.run(scenario())


def test_rate_and_concurrency_limits_together(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)
    total, concurrency, rate, window = 9, 2, 3, 400

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "both", "config": {
            "concurrency_limit": concurrency, "rate_limit": rate, "rate_window_ms": window}})
        jids = await enqueue_many(admin, "both", total)
        await consumer.ok(SUBSCRIBE, {"q": "both", "credits": 100})

        held: list[dict[str, Any]] = []
        received: list[str] = []
        saw_concurrency_block = False
        while len(received) < total or held:
            if len(received) < total and len(held) < concurrency:
                quest = (await consumer.next_push(QUEST))["p"]
                held.append(quest)
                received.append(quest["jid"])
                picture = await admin.ok(QSTATS, {"q": "both"})
                assert picture["concurrency"]["active"] <= concurrency, picture
                assert picture["rate"]["started_in_window"] <= rate, picture
                if len(held) == concurrency and len(received) < total:
                    blocked = (await job(admin, jids[len(received)]))["blocked_by"]
                    assert blocked == {"reason": "concurrency_limit", "active": concurrency,
                                       "limit": concurrency}
                    saw_concurrency_block = True
                continue
            await finish(consumer, held.pop(0))
        assert received == jids
        assert saw_concurrency_block

        intervals = []
        for jid in jids:
            record = await job(admin, jid)
            assert record["status"] == "completed"
            (attempt,) = record["history"]
            intervals.append((ms(attempt["started_at"]), ms(attempt["ended_at"])))
        assert_sliding_window([start for start, _ in intervals], rate, window)
        # At no moment of the server's clock were more than `concurrency` jobs out.
        for start, _ in intervals:
            out = sum(1 for s, e in intervals if s <= start < e)
            assert out <= concurrency, intervals
        assert await stats(admin, "both") == counts(completed=total)

    asyncio.run(scenario())


# -- SETQUEUE ------------------------------------------------------------------------------


def test_setqueue_concurrency_and_rate_apply_at_once(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def concurrency(client: RawClient, queue: str) -> dict[str, Any]:
        return (await client.ok(QSTATS, {"q": queue}))["concurrency"]

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "grow", "config": {"concurrency_limit": 1}})
        jids = await enqueue_many(admin, "grow", 6)
        await consumer.ok(SUBSCRIBE, {"q": "grow", "credits": 10})
        quests = await take_quests(consumer, 1)
        assert list(quests) == jids[:1]
        assert await concurrency(admin, "grow") == {"active": 1, "limit": 1}

        # Raised: the extra jobs go out at once, with no further client action.
        reply = await admin.ok(SETQUEUE, {"q": "grow", "config": {"concurrency_limit": 3}})
        assert reply["config"]["concurrency_limit"] == 3
        assert reply["config"] == (await admin.ok(QUEUE, {"q": "grow"}))["config"]
        quests |= await take_quests(consumer, 2)
        assert list(quests) == jids[:3]
        assert await concurrency(admin, "grow") == {"active": 3, "limit": 3}
        assert await stats(admin, "grow") == counts(waiting=3, active=3)

        # Lowered: finished jobs free slots, but no new job starts until under the limit.
        await admin.ok(SETQUEUE, {"q": "grow", "config": {"concurrency_limit": 1}})
        await finish(consumer, quests[jids[0]])
        assert await concurrency(admin, "grow") == {"active": 2, "limit": 1}
        assert (await job(admin, jids[3]))["blocked_by"] == {
            "reason": "concurrency_limit", "active": 2, "limit": 1}
        await finish(consumer, quests[jids[1]])
        assert await concurrency(admin, "grow") == {"active": 1, "limit": 1}
        # A later write has committed (the writer is first in, first out): still no start.
        await enqueue(consumer, "grow", scheduled_at="2999-01-01T00:00:00Z")
        assert await stats(admin, "grow") == counts(waiting=3, active=1, completed=2,
                                                    delayed=1)
        assert quests_left(consumer) == []
        await finish(consumer, quests[jids[2]])
        assert list(await take_quests(consumer, 1)) == jids[3:4]
        assert await concurrency(admin, "grow") == {"active": 1, "limit": 1}

        # Cleared with nil: no limit any more, the rest go out at once.
        reply = await admin.ok(SETQUEUE, {"q": "grow", "config": {"concurrency_limit": None}})
        assert "concurrency_limit" not in reply["config"]
        assert list(await take_quests(consumer, 2)) == jids[4:]
        assert await concurrency(admin, "grow") == {"active": 3, "limit": None}

        # A raised rate limit, and a cleared one, dispatch at once too.
        await admin.ok(ADDQUEUE, {"name": "trickle",
                                  "config": {"rate_limit": 2, "rate_window_ms": HOUR_MS}})
        slow = await enqueue_many(admin, "trickle", 5)
        await consumer.ok(SUBSCRIBE, {"q": "trickle", "credits": 10})
        assert list(await take_quests(consumer, 2)) == slow[:2]
        assert (await job(admin, slow[2]))["blocked_by"]["reason"] == "rate_limited"
        reply = await admin.ok(SETQUEUE, {"q": "trickle", "config": {"rate_limit": 4}})
        assert reply["config"]["rate_limit"] == 4
        assert list(await take_quests(consumer, 2)) == slow[2:4]
        rate = (await admin.ok(QSTATS, {"q": "trickle"}))["rate"]
        assert rate == {"limit": 4, "window_ms": HOUR_MS, "started_in_window": 4}
        await admin.ok(SETQUEUE, {"q": "trickle", "config": {"rate_limit": None}})
        assert list(await take_quests(consumer, 1)) == slow[4:]
        assert (await admin.ok(QSTATS, {"q": "trickle"}))["rate"] is None
        assert await stats(admin, "trickle") == counts(active=5)

    asyncio.run(scenario())


def test_setqueue_validation_and_persistence(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def config_of(client: RawClient, queue: str) -> dict[str, Any]:
        return (await client.ok(QUEUE, {"q": queue}))["config"]

    async def first_life() -> tuple[str, dict[str, Any], str]:
        client = await worker(server.port)
        qid = (await client.ok(ADDQUEUE, {"name": "tuned", "config": {
            "concurrency_limit": 2, "max_attempts": 5}}))["qid"]
        original = await config_of(client, "tuned")
        system_config = await config_of(client, "_system")

        bad_changes: list[Any] = [
            {"concurrency_limit": 0}, {"concurrency_limit": "3"}, {"concurrency_limit": -2},
            {"concurrency_limit": True}, {"max_attempts": 1001}, {"lease_ms": 99},
            {"rate_limit": 0}, {"rate_window_ms": 9}, {"rate_window_ms": None},
            {"completed_max_count": -1}, {"failed_max_age_ms": "1"},
            {"backoff": "linear"}, {"backoff": None}, {"allow_job_overrides": 1},
            {"backoff_jitter": "yes"}, {"bogus": 1},
            # One bad setting spoils the request: the good one beside it is not applied.
            {"concurrency_limit": 7, "lease_ms": 1},
            {}, "concurrency_limit", [{"concurrency_limit": 3}],
        ]
        for changes in bad_changes:
            assert await client.err(SETQUEUE, {"q": "tuned", "config": changes}
                                    ) == "INVALID_PAYLOAD", changes
            assert await config_of(client, "tuned") == original, changes
        assert await client.err(SETQUEUE, {"q": "tuned"}) == "INVALID_PAYLOAD"
        assert await client.err(SETQUEUE, {"config": {"lease_ms": 1000}}) == "INVALID_PAYLOAD"
        assert await client.err(SETQUEUE, {"q": "missing", "config": {"lease_ms": 1000}}
                                ) == "QUEUE_NOT_FOUND"
        assert await client.err(SETQUEUE, {"q": "_system", "config": {"lease_ms": 1000}}
                                ) == "QUEUE_SYSTEM"
        assert await client.err(SETQUEUE, {"q": "bad name", "config": {"lease_ms": 1000}}
                                ) == "QUEUE_NAME_INVALID"
        assert await config_of(client, "_system") == system_config
        assert await config_of(client, "tuned") == original

        changes = {"rate_limit": 7, "rate_window_ms": 2000, "lease_ms": 5000,
                   "retry_interval_ms": 250, "backoff": "exponential", "backoff_max_ms": 60000,
                   "backoff_jitter": True, "allow_job_overrides": False,
                   "completed_max_age_ms": 86_400_000, "failed_max_count": 50}
        expected = {**original, **changes}
        reply = await client.ok(SETQUEUE, {"q": "tuned", "config": changes})
        assert reply == {"config": expected}
        # nil clears a setting: no limit, or the server's default.
        reply = await client.ok(SETQUEUE, {"q": "tuned", "config": {
            "concurrency_limit": None, "backoff_max_ms": None}})
        del expected["concurrency_limit"], expected["backoff_max_ms"]
        assert reply == {"config": expected}
        assert await config_of(client, "tuned") == expected

        picture = await client.ok(QSTATS, {"q": "tuned"})
        assert picture["concurrency"]["limit"] is None
        assert picture["rate"] == {"limit": 7, "window_ms": 2000, "started_in_window": 0}
        assert await client.err(ENQUEUE, {"q": "tuned", "max_attempts": 2}
                                ) == "OVERRIDE_NOT_ALLOWED"
        jid = await enqueue(client, "tuned")
        record = await job(client, jid)
        assert (record["max_attempts"], record["retry_interval_ms"], record["lease_ms"]) == (
            5, 250, 5000)
        assert record["backoff"] == {"kind": "exponential", "max_ms": None, "jitter": True}
        assert record["overrides"] == {}
        await client.close()
        return qid, expected, jid

    qid, expected, jid = asyncio.run(first_life())
    assert server.stop() == 0
    restarted = start_server()

    async def second_life() -> None:
        client = await worker(restarted.port)
        queue = await client.ok(QUEUE, {"q": "tuned"})
        assert queue["id"] == qid
        assert queue["config"] == expected
        record = await job(client, jid)
        assert (record["max_attempts"], record["retry_interval_ms"], record["lease_ms"]) == (
            5, 250, 5000)
        assert (await client.ok(QSTATS, {"q": "tuned"}))["rate"]["limit"] == 7

    asyncio.run(second_life())


def test_setqueue_retry_and_lease_apply_to_waiting_jobs(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "retune", "config": {"retry_interval_ms": 10}})
        jid = await enqueue(admin, "retune")
        assert (await job(admin, jid))["max_attempts"] == 3  # the server's default

        await admin.ok(SETQUEUE, {"q": "retune", "config": {"max_attempts": 2,
                                                            "lease_ms": 7000}})
        record = await job(admin, jid)
        assert (record["max_attempts"], record["lease_ms"], record["overrides"]) == (
            2, 7000, {})

        await consumer.ok(SUBSCRIBE, {"q": "retune", "credits": 5})
        quest = (await consumer.next_push(QUEST))["p"]
        assert (quest["jid"], quest["attempt"], quest["max_attempts"], quest["lease_ms"]) == (
            jid, 1, 2, 7000)
        before = await server_now(consumer)
        lease = ms((await consumer.ok(ACK, delivery(quest)))["lease_expires_at"])
        after = await server_now(consumer)
        assert before + 7000 <= lease <= after + 7000
        reply = await consumer.ok(FAIL, {**delivery(quest), "error": {"message": "once"}})
        assert (reply["status"], reply["attempts_so_far"]) == ("delayed", 1)

        quest = (await consumer.next_push(QUEST))["p"]
        assert (quest["jid"], quest["attempt"], quest["max_attempts"]) == (jid, 2, 2)
        reply = await finish(consumer, quest, FAIL)
        # Failed for good after the new number of attempts, not the old three.
        assert reply == {"status": "failed", "attempts_so_far": 2}
        record = await job(admin, jid)
        assert record["status"] == "failed"
        assert [entry["outcome"] for entry in record["history"]] == ["failed", "failed"]

        # The next QUEST carries a lease changed in between.
        await admin.ok(SETQUEUE, {"q": "retune", "config": {"lease_ms": 3000}})
        second = await enqueue(admin, "retune")
        quest = (await consumer.next_push(QUEST))["p"]
        assert (quest["jid"], quest["lease_ms"]) == (second, 3000)
        before = await server_now(consumer)
        lease = ms((await consumer.ok(ACK, delivery(quest)))["lease_expires_at"])
        after = await server_now(consumer)
        assert before + 3000 <= lease <= after + 3000

    asyncio.run(scenario())


# -- CLEARQUEUE ----------------------------------------------------------------------------


def test_clearqueue_removes_pending_jobs_only(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "cq"})
        await admin.ok(ADDQUEUE, {"name": "neighbour"})
        neighbour = await enqueue_many(admin, "neighbour", 2)

        started = await enqueue_many(admin, "cq", 3, max_attempts=1)
        sid = (await consumer.ok(SUBSCRIBE, {"q": "cq", "credits": 3}))["sid"]
        quests = await take_quests(consumer, 3)
        completed, failed, active = started
        await finish(consumer, quests[completed])
        assert (await finish(consumer, quests[failed], FAIL))["status"] == "failed"
        await consumer.ok(ACK, delivery(quests[active]))
        waiting = await enqueue_many(admin, "cq", 4)
        delayed = await enqueue_many(admin, "cq", 2, delay_ms=HOUR_MS)
        await admin.ok(PAUSE, {"q": "cq"})
        new = await enqueue_many(admin, "cq", 3)
        await agree(admin, "cq", counts(new=3, waiting=4, delayed=2, active=1, completed=1,
                                        failed=1))

        # A paused queue can be cleared; active and finished jobs stay.
        reply = await admin.ok(CLEARQUEUE, {"q": "cq"})
        assert reply == {"removed": {"new": 3, "waiting": 4, "delayed": 2}}
        await agree(admin, "cq", counts(active=1, completed=1, failed=1))
        for jid in waiting + delayed + new:
            assert await job(admin, jid) == {}, jid
        for jid, status in ((completed, "completed"), (failed, "failed"), (active, "active")):
            assert (await job(admin, jid))["status"] == status
        queue = await admin.ok(QUEUE, {"q": "cq"})
        assert queue["state"] == "paused"
        assert await admin.ok(CLEARQUEUE, {"q": "cq"}) == {
            "removed": {"new": 0, "waiting": 0, "delayed": 0}}
        await agree(admin, "neighbour", counts(waiting=2))
        assert await listed(admin, "neighbour", "waiting") == neighbour

        # The held job is unaffected; the queue works on afterwards.
        await admin.ok(RESUME, {"q": "cq"})
        await consumer.ok(COMPLETE, delivery(quests[active]))
        later = await enqueue_many(admin, "cq", 2)
        reply = await admin.ok(CLEARQUEUE, {"q": "cq"})
        assert reply == {"removed": {"new": 0, "waiting": 2, "delayed": 0}}
        assert [await job(admin, jid) for jid in later] == [{}, {}]
        fresh = await enqueue(admin, "cq")
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        assert list(await take_quests(consumer, 1)) == [fresh]
        await agree(admin, "cq", counts(active=1, completed=2, failed=1))

        assert await admin.err(CLEARQUEUE, {"q": "missing"}) == "QUEUE_NOT_FOUND"
        assert await admin.err(CLEARQUEUE, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await admin.err(CLEARQUEUE, {"q": "no way"}) == "QUEUE_NAME_INVALID"
        assert await admin.err(CLEARQUEUE, {}) == "INVALID_PAYLOAD"

    asyncio.run(scenario())


def test_clearqueue_of_thousands_while_another_queue_works(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)
    busy_total = 300

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "bulk"})
        await admin.ok(ADDQUEUE, {"name": "busy"})
        await enqueue_many(admin, "bulk", 2500)
        await enqueue_many(admin, "bulk", 500, delay_ms=HOUR_MS)
        busy = await enqueue_many(admin, "busy", busy_total)
        assert await stats(admin, "bulk") == counts(waiting=2500, delayed=500)
        sid = (await consumer.ok(SUBSCRIBE, {"q": "busy", "credits": 5}))["sid"]
        working = asyncio.Event()

        async def work() -> list[str]:
            done: list[str] = []
            while len(done) < busy_total:
                quest = (await consumer.next_push(QUEST))["p"]
                await finish(consumer, quest)
                await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
                done.append(quest["jid"])
                if len(done) == 20:
                    working.set()
            return done

        async def clear() -> dict[str, Any]:
            await asyncio.wait_for(working.wait(), CHANGE_TIMEOUT_S)
            return await admin.ok(CLEARQUEUE, {"q": "bulk"})

        done, cleared = await asyncio.gather(work(), clear())
        assert cleared == {"removed": {"new": 0, "waiting": 2500, "delayed": 500}}
        assert sorted(done) == sorted(busy) and len(set(done)) == busy_total
        await agree(admin, "bulk", counts())
        assert await stats(admin, "busy") == counts(completed=busy_total)

    asyncio.run(scenario())


# -- OBLITERATE ----------------------------------------------------------------------------


def test_obliterate(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def queue_names(client: RawClient) -> list[str]:
        return [q["name"] for q in (await client.ok(LSQUEUE))["queues"]]

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)

        # An empty queue.
        await admin.ok(ADDQUEUE, {"name": "empty"})
        assert await admin.ok(OBLITERATE, {"q": "empty"}) == {"removed": 0}
        assert await admin.ok(QUEUE, {"q": "empty"}) == {}
        assert "empty" not in await queue_names(admin)
        assert await admin.err(QSTATS, {"q": "empty"}) == "QUEUE_NOT_FOUND"
        assert await admin.err(OBLITERATE, {"q": "empty"}) == "QUEUE_NOT_FOUND"

        # Finished and pending jobs go with it, and so does the subscription.
        await admin.ok(ADDQUEUE, {"name": "full", "config": {"max_attempts": 1}})
        finished = await enqueue_many(admin, "full", 3)
        full_sid = (await consumer.ok(SUBSCRIBE, {"q": "full", "credits": 3}))["sid"]
        quests = await take_quests(consumer, 3)
        await finish(consumer, quests[finished[0]])
        await finish(consumer, quests[finished[1]])
        await finish(consumer, quests[finished[2]], FAIL)
        pending = await enqueue_many(admin, "full", 3)
        pending += await enqueue_many(admin, "full", 1, delay_ms=HOUR_MS)
        await agree(admin, "full", counts(completed=2, failed=1, waiting=3, delayed=1))
        assert await admin.ok(OBLITERATE, {"q": "full"}) == {"removed": 7}
        assert await admin.ok(QUEUE, {"q": "full"}) == {}
        for jid in finished + pending:
            assert await job(admin, jid) == {}, jid
        assert (await consumer.next_push(SUBEND))["p"] == {
            "sid": full_sid, "q": "full", "reason": "queue_obliterated"}
        assert await consumer.err(CREDIT, {"sid": full_sid, "credits": 1}
                                  ) == "SUBSCRIPTION_NOT_FOUND"

        # An active job stops it, unless forced.
        old_qid = (await admin.ok(ADDQUEUE, {"name": "busy"}))["qid"]
        running, queued = await enqueue_many(admin, "busy", 2)
        busy_sid = (await consumer.ok(SUBSCRIBE, {"q": "busy", "credits": 1}))["sid"]
        quest = (await consumer.next_push(QUEST))["p"]
        assert quest["jid"] == running
        await consumer.ok(ACK, delivery(quest))
        for request in ({"q": "busy"}, {"q": "busy", "force": False}):
            assert await admin.err(OBLITERATE, request) == "QUEUE_HAS_ACTIVE_JOBS"
        for force in (1, 0, "true", [True]):
            assert await admin.err(OBLITERATE, {"q": "busy", "force": force}
                                   ) == "INVALID_PAYLOAD", force
        assert (await admin.ok(QUEUE, {"q": "busy"}))["id"] == old_qid
        await agree(admin, "busy", counts(active=1, waiting=1))
        assert (await job(admin, running))["status"] == "active"
        assert (await admin.ok(QSTATS, {"q": "busy"}))["subscriptions"] == 1

        assert await admin.ok(OBLITERATE, {"q": "busy", "force": True}) == {"removed": 2}
        assert await admin.ok(QUEUE, {"q": "busy"}) == {}
        assert [await job(admin, jid) for jid in (running, queued)] == [{}, {}]
        # The fenced delivery's outcome is refused: its job no longer exists, which
        # section 6 of PROTOCOL.md answers with DELIVERY_NOT_FOUND.
        assert await consumer.err(JOBLOG, {**delivery(quest), "lines": ["late"]}
                                  ) == "DELIVERY_NOT_FOUND"
        assert await consumer.err(COMPLETE, delivery(quest)) == "DELIVERY_NOT_FOUND"
        assert (await consumer.next_push(SUBEND))["p"] == {
            "sid": busy_sid, "q": "busy", "reason": "queue_obliterated"}
        assert await consumer.err(CREDIT, {"sid": busy_sid, "credits": 1}
                                  ) == "SUBSCRIPTION_NOT_FOUND"
        assert (await consumer.request(PING))["t"] == PONG

        # The name is free again, for a new, empty queue.
        new_qid = (await admin.ok(ADDQUEUE, {"name": "busy"}))["qid"]
        assert new_qid != old_qid
        picture = await admin.ok(QSTATS, {"q": "busy"})
        assert picture["stats"] == counts()
        assert picture["concurrency"]["active"] == 0 and picture["subscriptions"] == 0
        await consumer.ok(SUBSCRIBE, {"q": "busy", "credits": 1})
        reborn = await enqueue(admin, "busy")
        assert list(await take_quests(consumer, 1)) == [reborn]
        assert await stats(admin, "busy") == counts(active=1)

        assert await admin.err(OBLITERATE, {"q": "missing"}) == "QUEUE_NOT_FOUND"
        assert await admin.err(OBLITERATE, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await admin.err(OBLITERATE, {}) == "INVALID_PAYLOAD"
        assert "_system" in await queue_names(admin)

    asyncio.run(scenario())


def test_removed_queue_ends_its_subscriptions_with_subend(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        quitter = await worker(server.port)
        for name in ("gone", "kept"):
            await admin.ok(ADDQUEUE, {"name": name})
        own_sid = (await admin.ok(SUBSCRIBE, {"q": "gone", "credits": 0}))["sid"]
        gone_sid = (await consumer.ok(SUBSCRIBE, {"q": "gone", "credits": 5}))["sid"]
        kept_sid = (await consumer.ok(SUBSCRIBE, {"q": "kept", "credits": 5}))["sid"]
        quit_sid = (await quitter.ok(SUBSCRIBE, {"q": "gone", "credits": 5}))["sid"]
        await quitter.ok(UNSUBSCRIBE, {"sid": quit_sid})

        assert await admin.ok(RMQUEUE, {"q": "gone"}) == {}
        # On the remover's own connection the SUBEND came before the OK.
        assert [m["p"] for m in admin.pushes if m["t"] == SUBEND] == [
            {"sid": own_sid, "q": "gone", "reason": "queue_removed"}]
        assert (await consumer.next_push(SUBEND))["p"] == {
            "sid": gone_sid, "q": "gone", "reason": "queue_removed"}
        assert await consumer.err(CREDIT, {"sid": gone_sid, "credits": 1}
                                  ) == "SUBSCRIPTION_NOT_FOUND"
        # The worker's other subscription goes on.
        jid = await enqueue(admin, "kept")
        quest = (await consumer.next_push(QUEST))["p"]
        assert (quest["jid"], quest["sid"]) == (jid, kept_sid)
        # A subscription ended by UNSUBSCRIBE is not told again; a failed RMQUEUE ends
        # nothing.
        assert (await quitter.request(PING))["t"] == PONG
        assert not [m for m in quitter.pushes if m["t"] == SUBEND]
        assert await admin.err(RMQUEUE, {"q": "kept"}) == "QUEUE_NOT_EMPTY"
        assert (await consumer.request(PING))["t"] == PONG
        assert not [m for m in consumer.pushes if m["t"] == SUBEND]
        assert await consumer.ok(CREDIT, {"sid": kept_sid, "credits": 1}) == {}

    asyncio.run(scenario())


# -- retention -----------------------------------------------------------------------------


def test_retention_by_count_and_set_later(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--heartbeat.interval_ms", "100", *LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)

        # A queue without retention keeps everything, while ticks run for another.
        await admin.ok(ADDQUEUE, {"name": "later", "config": {"max_attempts": 1}})
        later = await enqueue_many(admin, "later", 6)
        await consumer.ok(SUBSCRIBE, {"q": "later", "credits": 6})
        quests = await take_quests(consumer, 6)
        for jid in later:
            await finish(consumer, quests[jid], COMPLETE if jid in later[:4] else FAIL)

        await admin.ok(ADDQUEUE, {"name": "kept", "config": {"completed_max_count": 3}})
        kept = await enqueue_many(admin, "kept", 10)
        await consumer.ok(SUBSCRIBE, {"q": "kept", "credits": 10})
        quests = await take_quests(consumer, 10)
        for jid in kept:  # finished in creation order
            await finish(consumer, quests[jid])
        await poll(lambda: stats(admin, "kept"), lambda s: s["completed"] <= 3,
                   "completed jobs of 'kept'")
        assert await stats(admin, "kept") == counts(completed=3)
        assert await listed(admin, "kept", "completed") == kept[-3:]
        assert [await job(admin, jid) for jid in kept[:7]] == [{}] * 7

        # Retention ran on its ticks, yet the queue without it lost nothing.
        assert await stats(admin, "later") == counts(completed=4, failed=2)
        await admin.ok(SETQUEUE, {"q": "later", "config": {"completed_max_count": 1,
                                                           "failed_max_count": 0}})
        await poll(lambda: stats(admin, "later"),
                   lambda s: s["completed"] <= 1 and s["failed"] == 0,
                   "finished jobs of 'later'")
        assert await stats(admin, "later") == counts(completed=1)
        assert await listed(admin, "later", "completed") == [later[3]]
        assert await stats(admin, "kept") == counts(completed=3)

    asyncio.run(scenario())


def test_retention_by_age(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--heartbeat.interval_ms", "100", *LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "aged", "config": {"max_attempts": 1,
                                                             "failed_max_age_ms": 200}})
        failing, succeeding = await enqueue_many(admin, "aged", 2)
        await consumer.ok(SUBSCRIBE, {"q": "aged", "credits": 2})
        quests = await take_quests(consumer, 2)
        await finish(consumer, quests[succeeding])
        before_failure = await server_now(admin)
        assert (await finish(consumer, quests[failing], FAIL))["status"] == "failed"

        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while True:
            record = await job(admin, failing)
            checked_at = await server_now(admin)
            if record == {}:
                break
            assert record["status"] == "failed"
            assert time.monotonic() < deadline, "the failed job outlived its maximum age"
        # Gone, but not before it was 200 ms old (by the server's clock).
        assert checked_at >= before_failure + 200
        assert await stats(admin, "aged") == counts(completed=1)
        assert (await job(admin, succeeding))["status"] == "completed"

    asyncio.run(scenario())


# -- JOBLOG --------------------------------------------------------------------------------


def test_joblog(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jobs.max_log_lines", "3", "--jobs.max_log_line_bytes", "32",
                          *LONG_ACK)

    async def logs_of(client: RawClient, jid: str) -> tuple[list[str], int]:
        record = await job(client, jid)
        return [entry["line"] for entry in record["logs"]], record["logs_dropped"]

    async def scenario() -> None:
        admin = await worker(server.port)
        holder = await worker(server.port)
        other = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "logged"})
        jid, neighbour = await enqueue_many(admin, "logged", 2)
        await holder.ok(SUBSCRIBE, {"q": "logged", "credits": 1})
        quest = (await holder.next_push(QUEST))["p"]
        assert quest["jid"] == jid
        held = delivery(quest)
        await holder.ok(ACK, held)
        assert await logs_of(admin, jid) == ([], 0)

        before = await server_now(holder)
        reply = await holder.ok(JOBLOG, {**held, "lines": ["starting", "step 1"]})
        assert reply == {"logs": 2, "logs_dropped": 0}
        after = await server_now(holder)
        record = await job(admin, jid)
        assert [entry["line"] for entry in record["logs"]] == ["starting", "step 1"]
        times = [ms(entry["at"]) for entry in record["logs"]]
        assert all(before <= at <= after for at in times), (before, times, after)

        # Only the last max_log_lines are kept; the rest are counted.
        reply = await holder.ok(JOBLOG, {**held, "lines": ["step 2", "step 3", "done"]})
        assert reply == {"logs": 3, "logs_dropped": 2}
        record = await job(admin, jid)
        assert [entry["line"] for entry in record["logs"]] == ["step 2", "step 3", "done"]
        assert record["logs_dropped"] == 2
        assert all(ms(entry["at"]) >= after for entry in record["logs"])

        # Lines up to max_log_line_bytes, counted in UTF-8 bytes.
        assert await holder.ok(JOBLOG, {**held, "lines": ["x" * 32, "\u00e9" * 16]}) == {
            "logs": 3, "logs_dropped": 4}
        bad_lines: list[Any] = [
            ["x" * 33], ["\u00e9" * 17], ["fine", "y" * 40], [], [1], ["ok", None],
            [["nested"]], [b"bytes"], "a line", None, {"0": "a"}, ["z"] * 101,
        ]
        for lines in bad_lines:
            assert await holder.err(JOBLOG, {**held, "lines": lines}
                                    ) == "INVALID_PAYLOAD", lines
        assert await holder.err(JOBLOG, held) == "INVALID_PAYLOAD"
        assert await logs_of(admin, jid) == (["done", "x" * 32, "\u00e9" * 16], 4)
        reply = await holder.ok(JOBLOG, {**held, "lines": [f"line {n}" for n in range(100)]})
        assert reply == {"logs": 3, "logs_dropped": 104}
        assert await logs_of(admin, jid) == (["line 97", "line 98", "line 99"], 104)

        # Only the holder of the current delivery may write.
        assert await other.err(JOBLOG, {**held, "lines": ["intruder"]}) == "DELIVERY_NOT_FOUND"
        assert await holder.err(JOBLOG, {"did": held["did"], "jid": neighbour,
                                         "lines": ["wrong job"]}) == "INVALID_PAYLOAD"
        assert await logs_of(admin, jid) == (["line 97", "line 98", "line 99"], 104)

        await holder.ok(COMPLETE, held)
        assert await holder.err(JOBLOG, {**held, "lines": ["too late"]}) == "DELIVERY_STALE"
        record = await job(admin, jid)
        assert record["status"] == "completed"
        assert [entry["line"] for entry in record["logs"]] == ["line 97", "line 98", "line 99"]
        assert record["logs_dropped"] == 104
        assert await logs_of(admin, neighbour) == ([], 0)

    asyncio.run(scenario())


# -- why a job is not running --------------------------------------------------------------


def test_blocked_by(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def blocked_by(client: RawClient, jid: str) -> Any:
        return (await job(client, jid))["blocked_by"]

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "why", "config": {"retry_interval_ms": HOUR_MS}})

        first = await enqueue(admin, "why")
        assert await blocked_by(admin, first) == {"reason": "no_worker_credit",
                                                  "subscriptions": 0}
        scheduled = await enqueue(admin, "why", delay_ms=HOUR_MS)
        record = await job(admin, scheduled)
        assert record["status"] == "delayed"
        assert record["blocked_by"] == {"reason": "scheduled",
                                        "until": record["execution_start_at"]}
        sid = (await consumer.ok(SUBSCRIBE, {"q": "why", "credits": 0}))["sid"]
        assert await blocked_by(admin, first) == {"reason": "no_worker_credit",
                                                  "subscriptions": 1}

        await admin.ok(PAUSE, {"q": "why"})
        second = await enqueue(admin, "why")
        assert (await job(admin, second))["status"] == "new"
        for jid in (first, scheduled, second):
            assert await blocked_by(admin, jid) == {"reason": "queue_paused"}, jid
        await admin.ok(RESUME, {"q": "why"})
        await poll(lambda: job(admin, second), lambda r: r["status"] == "waiting",
                   "the job enqueued while paused")

        await admin.ok(SETQUEUE, {"q": "why", "config": {"concurrency_limit": 1}})
        await consumer.ok(CREDIT, {"sid": sid, "credits": 5})
        quest = (await consumer.next_push(QUEST))["p"]
        assert quest["jid"] == first
        assert await blocked_by(admin, first) is None
        assert await blocked_by(admin, second) == {"reason": "concurrency_limit", "active": 1,
                                                   "limit": 1}

        reply = await finish(consumer, quest, FAIL)
        assert reply["status"] == "delayed"
        assert await blocked_by(admin, first) == {"reason": "backing_off",
                                                  "until": reply["retry_at"]}
        quest = (await consumer.next_push(QUEST))["p"]
        assert quest["jid"] == second
        assert await blocked_by(admin, second) is None
        await finish(consumer, quest)
        record = await job(admin, second)
        assert (record["status"], record["blocked_by"]) == ("completed", None)

        doomed = await enqueue(admin, "why", max_attempts=1)
        quest = (await consumer.next_push(QUEST))["p"]
        assert quest["jid"] == doomed
        assert (await finish(consumer, quest, FAIL))["status"] == "failed"
        record = await job(admin, doomed)
        assert (record["status"], record["blocked_by"]) == ("failed", None)

    asyncio.run(scenario())


# -- QSTATS --------------------------------------------------------------------------------


def test_qstats_dispatch_picture(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def picture(client: RawClient) -> dict[str, Any]:
        reply = await client.ok(QSTATS, {"q": "counted"})
        assert reply["q"] == "counted"
        return reply

    async def scenario() -> None:
        admin = await worker(server.port)
        first_worker = await worker(server.port)
        second_worker = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "counted", "config": {"concurrency_limit": 4}})

        empty = await picture(admin)
        assert empty["oldest_waiting_age_ms"] is None
        assert (empty["credits"], empty["subscriptions"], empty["state"]) == (0, 0, "active")
        assert empty["concurrency"] == {"active": 0, "limit": 4}
        assert empty["rate"] is None

        oldest, newer = await enqueue_many(admin, "counted", 2)
        created = ms((await job(admin, oldest))["created_at"])
        before = await server_now(admin)
        age = (await picture(admin))["oldest_waiting_age_ms"]
        after = await server_now(admin)
        assert type(age) is int and age >= 0
        assert before - created <= age <= after - created

        first_sid = (await first_worker.ok(SUBSCRIBE, {"q": "counted", "credits": 1}))["sid"]
        assert list(await take_quests(first_worker, 1)) == [oldest]
        created = ms((await job(admin, newer))["created_at"])
        before = await server_now(admin)
        now = await picture(admin)
        after = await server_now(admin)
        assert before - created <= now["oldest_waiting_age_ms"] <= after - created
        assert (now["credits"], now["subscriptions"]) == (0, 1)
        assert now["concurrency"] == {"active": 1, "limit": 4}

        await first_worker.ok(CREDIT, {"sid": first_sid, "credits": 5})
        assert list(await take_quests(first_worker, 1)) == [newer]
        now = await picture(admin)
        assert now["oldest_waiting_age_ms"] is None
        assert (now["credits"], now["subscriptions"]) == (4, 1)
        assert now["concurrency"] == {"active": 2, "limit": 4}

        await admin.ok(PAUSE, {"q": "counted"})
        second_sid = (await second_worker.ok(SUBSCRIBE, {"q": "counted", "credits": 3}))["sid"]
        held = await enqueue(admin, "counted")
        assert (await job(admin, held))["status"] == "new"
        now = await picture(admin)
        assert (now["credits"], now["subscriptions"], now["state"]) == (7, 2, "paused")
        assert now["oldest_waiting_age_ms"] is None  # new jobs are not waiting
        assert now["stats"] == counts(new=1, active=2)

        await first_worker.ok(UNSUBSCRIBE, {"sid": first_sid})
        now = await picture(admin)
        assert (now["credits"], now["subscriptions"]) == (3, 1)
        await admin.ok(RESUME, {"q": "counted"})
        assert list(await take_quests(second_worker, 1)) == [held]
        now = await picture(admin)
        assert (now["credits"], now["subscriptions"], now["state"]) == (2, 1, "active")
        assert now["concurrency"] == {"active": 3, "limit": 4}
        await second_worker.ok(UNSUBSCRIBE, {"sid": second_sid})

    asyncio.run(scenario())


# -- ENQUEUE delay_ms and REGISTER limits ---------------------------------------------------


def test_enqueue_delay_ms(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "later"})
        sid = (await consumer.ok(SUBSCRIBE, {"q": "later", "credits": 1}))["sid"]

        delayed = await enqueue(admin, "later", delay_ms=800, job_payload="soon")
        record = await job(admin, delayed)
        assert record["status"] == "delayed"
        start = ms(record["execution_start_at"])
        # now + delay_ms, the clock read a moment before the job's creation time
        assert 750 <= start - ms(record["created_at"]) <= 800
        assert record["blocked_by"] == {"reason": "scheduled",
                                        "until": record["execution_start_at"]}

        quest = (await consumer.next_push(QUEST))["p"]
        assert quest["jid"] == delayed
        started = ms((await job(admin, delayed))["runtime"]["started_at"])
        assert started >= start

        immediate = await enqueue(admin, "later", delay_ms=0)
        assert (await job(admin, immediate))["status"] == "waiting"
        await consumer.ok(CREDIT, {"sid": sid, "credits": 1})
        assert list(await take_quests(consumer, 1)) == [immediate]

        before = await stats(admin, "later")
        for fields in ({"delay_ms": 1000, "scheduled_at": "2030-01-01T00:00:00Z"},
                       {"delay_ms": 0, "scheduled_at": "2020-01-01T00:00:00Z"},
                       {"delay_ms": -1}, {"delay_ms": "100"}, {"delay_ms": [100]},
                       {"delay_ms": True}, {"delay_ms": 2**62}):
            assert await admin.err(ENQUEUE, {"q": "later", **fields}
                                   ) == "INVALID_PAYLOAD", fields
        assert await stats(admin, "later") == before

    asyncio.run(scenario())


def test_register_reports_the_configured_limits(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(
        "--worker.stale_after_ms", "5000", "--heartbeat.interval_ms", "200",
        "--dispatch.ack_timeout_ms", "7000", "--jobs.max_result_bytes", "1000",
        "--jobs.max_log_line_bytes", "64", "--wire.max_envelope_size_bytes", "131072",
        "--jobs.max_enqueue_batch", "50", "--server.max_requests_in_flight", "300")

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        assert (await client.request(HELLO))["t"] == 103
        reply = await client.ok(REGISTER, {"name": "limits"})
        assert str(uuid.UUID(reply["wid"])) == reply["wid"]
        assert reply["limits"] == {
            "heartbeat_interval_ms": 200,
            "stale_after_ms": 5000,
            "ack_timeout_ms": 7000,
            "max_envelope_size_bytes": 131072,
            "max_job_payload_bytes": 131072 - 4096,
            "max_result_bytes": 1000,
            "max_log_line_bytes": 64,
            "max_enqueue_batch": 50,
            "max_requests_in_flight": 300,
        }

    asyncio.run(scenario())


# -- ordering and timers (regression tests for bugs found while building issue 4) -----------

# PROTOCOL.md section 1, "Order": a change is visible to every request handled after it,
# and the outcome is the one a client waiting for each reply would see.


def test_pipelined_setqueue_is_seen_by_the_requests_behind_it(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "strict-now"})
        changed, enqueued, queue = await pipelined(
            client,
            (SETQUEUE, {"q": "strict-now", "config": {"allow_job_overrides": False}}),
            (ENQUEUE, {"q": "strict-now", "max_attempts": 2}),
            (QUEUE, {"q": "strict-now"}),
        )
        assert changed["t"] == OK, changed
        assert queue["t"] == OK and queue["p"]["config"]["allow_job_overrides"] is False, queue
        assert enqueued["t"] == ERR and enqueued["p"]["code"] == "OVERRIDE_NOT_ALLOWED", enqueued
        assert await stats(client, "strict-now") == counts()

    asyncio.run(scenario())


def test_pipelined_clearqueue_keeps_a_job_enqueued_after_it(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "cleared"})
        old = await enqueue_many(client, "cleared", 3)
        cleared, enqueued = await pipelined(client, (CLEARQUEUE, {"q": "cleared"}),
                                            (ENQUEUE, {"q": "cleared"}))
        assert enqueued["t"] == OK, enqueued
        assert [await job(client, jid) for jid in old] == [{}, {}, {}]
        assert (await job(client, enqueued["p"]["jid"])).get("status") == "waiting"
        assert cleared["p"] == {"removed": {"new": 0, "waiting": 3, "delayed": 0}}
        assert await stats(client, "cleared") == counts(waiting=1)

    asyncio.run(scenario())


def test_pipelined_obliterate_refuses_an_enqueue_behind_it(
        server: ServerProcess, storage_engine: str) -> None:  # noqa: F811
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "doomed"})
        await enqueue(client, "doomed")
        obliterated, enqueued = await pipelined(client, (OBLITERATE, {"q": "doomed"}),
                                                (ENQUEUE, {"q": "doomed"}))
        assert obliterated["p"] == {"removed": 1}, obliterated
        # Not an OK for a job that the request before it then deletes.
        assert enqueued["t"] == ERR and enqueued["p"]["code"] == "QUEUE_NOT_FOUND", enqueued

    asyncio.run(scenario())


def test_addqueue_of_a_name_being_obliterated_waits_for_the_obliterate(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "phoenix"})
        obliterated, added = await pipelined(client, (OBLITERATE, {"q": "phoenix"}),
                                             (ADDQUEUE, {"name": "phoenix"}))
        assert obliterated["p"] == {"removed": 0}, obliterated
        # Documented exception: the name is free again once OBLITERATE has answered.
        assert added["t"] == ERR and added["p"]["code"] == "QUEUE_EXISTS", added
        qid = (await client.ok(ADDQUEUE, {"name": "phoenix"}))["qid"]
        assert (await client.ok(QUEUE, {"q": "phoenix"}))["id"] == qid

    asyncio.run(scenario())


def test_obliterate_force_nil_means_absent(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "held"})
        await consumer.ok(SUBSCRIBE, {"q": "held", "credits": 1})
        await enqueue(admin, "held")
        await consumer.next_push(QUEST)
        assert await admin.err(OBLITERATE, {"q": "held", "force": None}
                               ) == "QUEUE_HAS_ACTIVE_JOBS"
        await admin.ok(ADDQUEUE, {"name": "idle"})
        assert await admin.ok(OBLITERATE, {"q": "idle", "force": None}) == {"removed": 0}

    asyncio.run(scenario())


# Time to wait for a QUEST the rate timer owes (due 0.5..1.5 s after the window's start).
RATE_TIMER_TIMEOUT_S = 6.0


def test_shortened_rate_window_releases_held_jobs(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "narrow",
                                  "config": {"rate_limit": 2, "rate_window_ms": HOUR_MS}})
        jids = await enqueue_many(admin, "narrow", 4)
        await consumer.ok(SUBSCRIBE, {"q": "narrow", "credits": 10})
        assert list(await take_quests(consumer, 2)) == jids[:2]
        window_start = ms((await job(admin, jids[0]))["runtime"]["started_at"])

        await admin.ok(SETQUEUE, {"q": "narrow", "config": {"rate_window_ms": 1500}})
        # The change came while the new window was still closed (so it cannot have
        # dispatched anything itself): the jobs are owed to the server's timer.
        assert await server_now(admin) < window_start + 1500
        blocked = (await job(admin, jids[2]))["blocked_by"]
        assert blocked["reason"] == "rate_limited"
        assert ms(blocked["until"]) == window_start + 1500
        for jid in jids[2:]:
            quest = (await consumer.next_push(QUEST, RATE_TIMER_TIMEOUT_S))["p"]
            assert quest["jid"] == jid
        later = [ms((await job(admin, jid))["runtime"]["started_at"]) for jid in jids[2:]]
        assert min(later) >= window_start + 1500

    asyncio.run(scenario())


def test_rate_timer_of_a_removed_queue_does_not_hold_back_its_successor(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def scenario() -> None:
        admin = await worker(server.port)
        consumer = await worker(server.port)
        await admin.ok(ADDQUEUE, {"name": "reused",
                                  "config": {"rate_limit": 1, "rate_window_ms": HOUR_MS}})
        await enqueue_many(admin, "reused", 2)
        await consumer.ok(SUBSCRIBE, {"q": "reused", "credits": 10})
        quest = (await consumer.next_push(QUEST))["p"]
        await finish(consumer, quest)
        assert (await admin.ok(CLEARQUEUE, {"q": "reused"}))["removed"]["waiting"] == 1
        await admin.ok(RMJOB, {"jid": quest["jid"]})
        assert await admin.ok(RMQUEUE, {"q": "reused"}) == {}

        await admin.ok(ADDQUEUE, {"name": "reused",
                                  "config": {"rate_limit": 1, "rate_window_ms": 500}})
        jids = await enqueue_many(admin, "reused", 2)
        await consumer.ok(SUBSCRIBE, {"q": "reused", "credits": 10})
        assert (await consumer.next_push(QUEST))["p"]["jid"] == jids[0]
        quest = (await consumer.next_push(QUEST, RATE_TIMER_TIMEOUT_S))["p"]
        assert quest["jid"] == jids[1]

    asyncio.run(scenario())
