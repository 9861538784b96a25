"""Jobs over the wire: ENQUEUE, JOB, RMJOB, LSJOB, QSTATS and the STATUS report."""

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

HELLO, SUBSCRIBE, ADDQUEUE, STATUS, PAUSE, RESUME = 1, 6, 9, 10, 12, 13
ENQUEUE, JOB, RMJOB, LSJOB, QSTATS = 14, 15, 16, 17, 18
ENQUEUEMANY = 30
ACK, COMPLETE, FAIL = 19, 20, 21
QUEST = 106

STATUSES = ("new", "waiting", "delayed", "completed", "failed", "active", "cancelled")
JOB_FIELDS = {"uuid", "jid", "queue_name", "payload", "status", "execution_start_at",
              "max_attempts", "retry_interval_ms", "created_at", "runtime"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# Bound for a server-driven change (promotion, resume) to show; never waited out on success.
CHANGE_TIMEOUT_S = 5.0
# Keep deliveries out long enough that no acknowledgement timeout interferes with a test.
LONG_ACK = ("--dispatch.ack_timeout_ms", "600000")


def parse_time(text: Any) -> datetime:
    assert type(text) is str and RFC3339.fullmatch(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


async def worker(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="jobs-test")
    return client


async def enqueue(client: RawClient, queue: str, **fields: Any) -> str:
    return (await client.ok(ENQUEUE, {"q": queue, **fields}))["jid"]


async def status_of(client: RawClient, jid: str) -> str:
    return (await client.ok(JOB, {"jid": jid}))["status"]


async def wait_for_status(client: RawClient, jid: str, status: str) -> dict[str, Any]:
    """Poll JOB (each reply awaited) until the job has `status`, within CHANGE_TIMEOUT_S."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        job = await client.ok(JOB, {"jid": jid})
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, f"{jid} still {job['status']}, wanted {status}"


async def listed(client: RawClient, queue: str, status: str) -> list[str]:
    reply = await client.ok(LSJOB, {"q": queue, "status": status, "page_size": 1000})
    return [job["jid"] for job in reply["jobs"]]


async def page_of(client: RawClient, queue: str, **fields: Any) -> dict[str, Any]:
    """One LSJOB page of the queue's waiting jobs (fields override)."""
    return await client.ok(LSJOB, {"q": queue, "status": "waiting", **fields})


async def stats(client: RawClient, queue: str) -> dict[str, int]:
    reply = await client.ok(QSTATS, {"q": queue})
    assert reply["q"] == queue
    return reply["stats"]


async def take_quests(client: RawClient, count: int) -> dict[str, dict[str, Any]]:
    """The next `count` QUEST pushes, by job id."""
    quests = {}
    for _ in range(count):
        quest = (await client.next_push(QUEST))["p"]
        quests[quest["jid"]] = quest
    return quests


def test_enqueue_and_the_whole_job_record(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "emails"})
        before = datetime.now(UTC)
        jid = await enqueue(client, "emails", job_payload={"to": "ada@example.com"})
        after = datetime.now(UTC)

        queue, _, job_uuid = jid.partition(":")
        assert queue == "emails"
        parsed = uuid.UUID(job_uuid)
        assert parsed.version == 7 and str(parsed) == job_uuid

        job = await client.ok(JOB, {"jid": jid})
        assert set(job) >= JOB_FIELDS
        assert job["uuid"] == job_uuid
        assert job["jid"] == jid
        assert job["queue_name"] == "emails"
        assert job["payload"] == {"to": "ada@example.com"}
        assert job["status"] == "waiting"
        assert job["max_attempts"] == 3
        assert job["retry_interval_ms"] == 1000
        assert job["runtime"]["attempts_so_far"] == 0
        created = parse_time(job["created_at"])
        assert to_ms(before) - 1 <= to_ms(created) <= to_ms(after) + 1
        # Without scheduled_at, execution starts at creation.
        assert parse_time(job["execution_start_at"]) == created
        # The uuid7's timestamp is the creation time, give or take its monotonic bump.
        assert abs((parsed.int >> 80) - to_ms(created)) < 1000

        # Jobs get distinct ids, in creation order.
        later = await enqueue(client, "emails")
        assert later != jid and uuid.UUID(later.partition(":")[2]).int > parsed.int

    asyncio.run(scenario())


def test_job_payload_comes_back_equal(server: ServerProcess) -> None:
    payloads: list[Any] = [
        {"nested": {"a": [1, {"b": [True, False, None, "x"]}], "m": {}}, "list": []},
        [1, [2, [3, [4, {"five": 5}]]]],
        b"\x00\xff\x10 binary",
        {"bin": b"\x01\x02", "text": "Grüße ✓ 日本"},
        3.25,
        {"floats": [0.1, -2.5, 1e300, -0.0]},
        2**63 - 1,
        -(2**63),
        {"big": [2**63 - 1, -(2**63), 2**32, -1]},
        "",
        0,
        True,
        {},
        [],
        {"deep": [[[[[[[[[[{"end": 1}]]]]]]]]]]},
    ]

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "data"})
        for payload in payloads:
            jid = await enqueue(client, "data", job_payload=payload)
            job = await client.ok(JOB, {"jid": jid})
            assert job["payload"] == payload
            assert type(job["payload"]) is type(payload)
        nil = await enqueue(client, "data", job_payload=None)
        absent = await enqueue(client, "data")
        for jid in (nil, absent):
            job = await client.ok(JOB, {"jid": jid})
            assert "payload" in job and job["payload"] is None
        listed_payloads = [job["payload"] for job in (await client.ok(
            LSJOB, {"q": "data", "status": "waiting", "page_size": 100}))["jobs"]]
        assert listed_payloads == [*payloads, None, None]

    asyncio.run(scenario())


def test_scheduled_jobs_wait_for_their_time(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        for name in ("timed", "held", "scratch"):
            await client.ok(ADDQUEUE, {"name": name})

        # A start time in the past, in any offset, means waiting now.
        past = datetime(2020, 5, 17, 10, 30, 15, 250000, tzinfo=UTC)
        past_jobs = []
        for text in ("2020-05-17T10:30:15.250Z", "2020-05-17T12:30:15.250+02:00",
                     "2020-05-17T10:30:15.25+00:00"):
            past_jobs.append(await enqueue(client, "timed", scheduled_at=text))
            job = await client.ok(JOB, {"jid": past_jobs[-1]})
            assert job["status"] == "waiting"
            assert parse_time(job["execution_start_at"]) == past

        # Invalid start times are refused and create nothing.
        for bad in ("tomorrow", "2030-01-01T00:00:00", "2030-01-01", "2030-02-30T00:00:00Z",
                    "", 1893456000, True, ["2030-01-01T00:00:00Z"]):
            assert await client.err(ENQUEUE, {"q": "timed", "scheduled_at": bad}
                                    ) == "INVALID_PAYLOAD", bad
        assert await stats(client, "timed") == {**dict.fromkeys(STATUSES, 0), "waiting": 3}

        # A start time ~1 s ahead: delayed until then, then waiting.
        start_text = rfc3339(datetime.now(UTC) + timedelta(seconds=1))
        start = parse_time(start_text)
        target = await enqueue(client, "timed", scheduled_at=start_text)
        sentinel = await enqueue(client, "timed", scheduled_at=start_text)
        unmoved = await enqueue(client, "held", scheduled_at=start_text)
        job = await client.ok(JOB, {"jid": sentinel})
        assert job["status"] == "delayed"
        assert parse_time(job["execution_start_at"]) == start
        assert await listed(client, "timed", "delayed") == [target, sentinel]
        await client.ok(PAUSE, {"q": "held"})
        # A removed delayed job leaves no time-index entry behind to be promoted.
        assert await client.ok(RMJOB, {"jid": target}) == {}

        await wait_for_status(client, sentinel, "waiting")
        assert time.time() >= start.timestamp()
        assert await client.ok(JOB, {"jid": target}) == {}
        assert await listed(client, "timed", "waiting") == [*past_jobs, sentinel]
        assert await listed(client, "timed", "delayed") == []
        assert await stats(client, "timed") == {**dict.fromkeys(STATUSES, 0), "waiting": 4}

        # Jobs of a paused queue are not advanced: once a later write has committed (the
        # writer is first in, first out), the held job is still delayed.
        await enqueue(client, "scratch")
        assert await status_of(client, unmoved) == "delayed"
        await client.ok(RESUME, {"q": "held"})
        await wait_for_status(client, unmoved, "waiting")

    asyncio.run(scenario())


def test_attempt_overrides(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "free"})
        await client.ok(ADDQUEUE, {"name": "strict", "config": {
            "allow_job_overrides": False, "max_attempts": 4, "retry_interval_ms": 500}})

        job = await client.ok(JOB, {"jid": await enqueue(
            client, "free", max_attempts=5, retry_interval_ms=250)})
        assert (job["max_attempts"], job["retry_interval_ms"]) == (5, 250)
        job = await client.ok(JOB, {"jid": await enqueue(client, "free", max_attempts=1)})
        assert (job["max_attempts"], job["retry_interval_ms"]) == (1, 1000)
        job = await client.ok(JOB, {"jid": await enqueue(client, "free",
                                                         retry_interval_ms=86_400_000)})
        assert (job["max_attempts"], job["retry_interval_ms"]) == (3, 86_400_000)

        for field, value in (("max_attempts", 0), ("max_attempts", -1), ("max_attempts", "5"),
                             ("max_attempts", 1001), ("retry_interval_ms", 0),
                             ("retry_interval_ms", -5), ("retry_interval_ms", 86_400_001)):
            assert await client.err(ENQUEUE, {"q": "free", field: value}
                                    ) == "INVALID_PAYLOAD", (field, value)

        for fields in ({"max_attempts": 2}, {"retry_interval_ms": 100},
                       {"max_attempts": 4, "retry_interval_ms": 500}):
            assert await client.err(ENQUEUE, {"q": "strict", **fields}
                                    ) == "OVERRIDE_NOT_ALLOWED", fields
        job = await client.ok(JOB, {"jid": await enqueue(client, "strict")})
        assert (job["max_attempts"], job["retry_interval_ms"]) == (4, 500)

        assert await stats(client, "free") == {**dict.fromkeys(STATUSES, 0), "waiting": 3}
        assert await stats(client, "strict") == {**dict.fromkeys(STATUSES, 0), "waiting": 1}

    asyncio.run(scenario())


def test_paused_queue_takes_jobs_as_new_until_resumed(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "held"})
        await client.ok(PAUSE, {"q": "held"})
        now_job = await enqueue(client, "held")
        past_job = await enqueue(client, "held", scheduled_at="2020-01-01T00:00:00Z")
        future_job = await enqueue(client, "held", scheduled_at=rfc3339(
            datetime.now(UTC) + timedelta(hours=1)))
        for jid in (now_job, past_job, future_job):
            assert await status_of(client, jid) == "new"
        assert await listed(client, "held", "new") == [now_job, past_job, future_job]
        assert await stats(client, "held") == {**dict.fromkeys(STATUSES, 0), "new": 3}

        await client.ok(RESUME, {"q": "held"})
        await wait_for_status(client, now_job, "waiting")
        await wait_for_status(client, past_job, "waiting")
        await wait_for_status(client, future_job, "delayed")
        assert await stats(client, "held") == {**dict.fromkeys(STATUSES, 0), "waiting": 2,
                                               "delayed": 1}
        assert await listed(client, "held", "new") == []

    asyncio.run(scenario())


def test_enqueue_and_job_errors(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "real"})
        assert await client.err(ENQUEUE, {"q": "missing"}) == "QUEUE_NOT_FOUND"
        assert await client.err(ENQUEUE, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await client.err(ENQUEUE, {"q": "no way"}) == "QUEUE_NAME_INVALID"
        assert await client.err(ENQUEUE, {}) == "INVALID_PAYLOAD"
        assert await client.err(ENQUEUE, {"q": 3}) == "INVALID_PAYLOAD"

        jid = await enqueue(client, "real")
        assert await client.ok(JOB, {"jid": f"real:{uuid.uuid4()}"}) == {}
        assert await client.ok(JOB, {"jid": f"missing:{uuid.uuid4()}"}) == {}
        assert await client.ok(JOB, {"jid": "not-a-job-id"}) == {}
        assert await client.err(JOB, {"jid": f"_system:{uuid.uuid4()}"}) == "QUEUE_SYSTEM"
        assert await client.err(JOB, {}) == "INVALID_PAYLOAD"
        assert await client.err(JOB, {"jid": 7}) == "INVALID_PAYLOAD"
        assert await client.err(JOB, {"jid": ""}) == "INVALID_PAYLOAD"
        # None of that disturbed the real job or its queue.
        assert (await client.ok(JOB, {"jid": jid}))["status"] == "waiting"
        assert await stats(client, "real") == {**dict.fromkeys(STATUSES, 0), "waiting": 1}

    asyncio.run(scenario())


def test_enqueuemany_adds_all_jobs_in_order_or_none(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--jobs.max_enqueue_batch", "5", *LONG_ACK)

    async def many(client: RawClient, queue: str, jobs: Any) -> dict[str, Any]:
        return await client.request(ENQUEUEMANY, {"q": queue, "jobs": jobs})

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "bulk"})
        await client.ok(ADDQUEUE, {"name": "strict", "config": {"allow_job_overrides": False}})
        await client.ok(ADDQUEUE, {"name": "held"})
        await client.ok(PAUSE, {"q": "held"})
        later = rfc3339(datetime.now(UTC) + timedelta(hours=1))
        jobs = [{"job_payload": {"n": 1, "x": 0.5}}, {}, {"scheduled_at": later},
                {"job_payload": "four", "max_attempts": 7, "lease_ms": 5000},
                {"delay_ms": 3_600_000}]
        jids = (await client.ok(ENQUEUEMANY, {"q": "bulk", "jobs": jobs}))["jids"]
        assert len(jids) == 5 and all(jid.startswith("bulk:") for jid in jids)
        assert jids == sorted(jids, key=lambda jid: uuid.UUID(jid.split(":")[1]).bytes)
        records = [await client.ok(JOB, {"jid": jid}) for jid in jids]
        assert [r["status"] for r in records] == [
            "waiting", "waiting", "delayed", "waiting", "delayed"]
        assert records[0]["payload"] == {"n": 1, "x": 0.5} and records[1]["payload"] is None
        assert records[2]["execution_start_at"] == later
        assert records[3]["overrides"]["max_attempts"] == 7 and records[3]["max_attempts"] == 7
        assert await stats(client, "bulk") == {**dict.fromkeys(STATUSES, 0), "waiting": 3,
                                               "delayed": 2}
        held = (await client.ok(ENQUEUEMANY, {"q": "held", "jobs": [{}, {}]}))["jids"]
        assert [await status_of(client, jid) for jid in held] == ["new", "new"]

        # A subscriber receives the waiting ones, oldest first.
        await client.ok(SUBSCRIBE, {"q": "bulk", "credits": 10})
        quests = [(await client.next_push(QUEST))["p"]["jid"] for _ in range(3)]
        assert quests == [jids[0], jids[1], jids[3]]

        # Any refusal adds nothing; an error about one job names its index.
        before = await stats(client, "bulk")
        refusals: list[tuple[str, Any, str, int | None]] = [
            ("bulk", None, "INVALID_PAYLOAD", None),
            ("bulk", [], "INVALID_PAYLOAD", None),
            ("bulk", {"job_payload": 1}, "INVALID_PAYLOAD", None),
            ("bulk", [{}] * 6, "INVALID_PAYLOAD", None),
            ("bulk", [{}, 3], "INVALID_PAYLOAD", 1),
            ("bulk", [{}, {}, {"q": "bulk"}], "INVALID_PAYLOAD", 2),
            ("bulk", [{}, {"max_attempts": 2.0}], "INVALID_PAYLOAD", 1),
            ("bulk", [{"scheduled_at": later, "delay_ms": 5}], "INVALID_PAYLOAD", 0),
            ("bulk", [{}, {"job_payload": b"x" * 8_386_000}], "PAYLOAD_TOO_LARGE", 1),
            ("strict", [{}, {}, {"lease_ms": 1000}], "OVERRIDE_NOT_ALLOWED", 2),
            ("nope", [{}], "QUEUE_NOT_FOUND", None),
            ("_system", [{}], "QUEUE_SYSTEM", None),
            ("Bad Name", [{}], "QUEUE_NAME_INVALID", None),
        ]
        for queue, batch, code, index in refusals:
            payload: dict[str, Any] = {"q": queue}
            if batch is not None:
                payload["jobs"] = batch
            reply = await client.request(ENQUEUEMANY, payload)
            assert reply["t"] == 102 and reply["p"]["code"] == code, (queue, reply)
            if index is None:
                assert "details" not in reply["p"], reply
            else:
                assert reply["p"]["details"] == {"index": index}, reply
                assert reply["p"]["msg"].startswith(f"job {index}: "), reply
        assert await stats(client, "bulk") == before
        assert await stats(client, "strict") == dict.fromkeys(STATUSES, 0)

    asyncio.run(scenario())


def test_rmjob(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def removed_everywhere(client: RawClient, queue: str, jid: str, status: str) -> None:
        before = await stats(client, queue)
        assert jid in await listed(client, queue, status)
        assert await client.ok(RMJOB, {"jid": jid}) == {}
        assert await client.ok(JOB, {"jid": jid}) == {}
        assert jid not in await listed(client, queue, status)
        assert await stats(client, queue) == {**before, status: before[status] - 1}
        assert await client.err(RMJOB, {"jid": jid}) == "JOB_NOT_FOUND"

    async def scenario() -> None:
        producer = await worker(server.port)
        consumer = await worker(server.port)
        await producer.ok(ADDQUEUE, {"name": "rm"})
        await producer.ok(ADDQUEUE, {"name": "rm-held"})
        await producer.ok(PAUSE, {"q": "rm-held"})

        to_complete = await enqueue(producer, "rm", max_attempts=1)
        to_fail = await enqueue(producer, "rm", max_attempts=1)
        stays_active = await enqueue(producer, "rm")
        await consumer.ok(SUBSCRIBE, {"q": "rm", "credits": 3})
        quests = await take_quests(consumer, 3)
        assert set(quests) == {to_complete, to_fail, stays_active}
        for jid, outcome in ((to_complete, COMPLETE), (to_fail, FAIL)):
            delivery = {"did": quests[jid]["did"], "jid": jid}
            await consumer.ok(ACK, delivery)
            extra = {"result": "done"} if outcome == COMPLETE else {"error": {"message": "no"}}
            await consumer.ok(outcome, {**delivery, **extra})
        waiting = await enqueue(producer, "rm")
        delayed = await enqueue(producer, "rm", scheduled_at=rfc3339(
            datetime.now(UTC) + timedelta(hours=1)))
        new = await enqueue(producer, "rm-held")
        expected = {to_complete: "completed", to_fail: "failed", stays_active: "active",
                    waiting: "waiting", delayed: "delayed", new: "new"}
        for jid, status in expected.items():
            assert await status_of(producer, jid) == status

        # Jobs not held by anyone can be removed, with every trace of them.
        await removed_everywhere(producer, "rm-held", new, "new")
        await removed_everywhere(producer, "rm", delayed, "delayed")
        await removed_everywhere(producer, "rm", to_fail, "failed")
        await removed_everywhere(producer, "rm", to_complete, "completed")
        await removed_everywhere(producer, "rm", waiting, "waiting")

        # An active job stays: its worker holds it.
        assert await producer.err(RMJOB, {"jid": stays_active}) == "JOB_STATUS_CONFLICT"
        assert await status_of(producer, stays_active) == "active"
        assert stays_active in await listed(producer, "rm", "active")
        assert await stats(producer, "rm") == {**dict.fromkeys(STATUSES, 0), "active": 1}

        assert await producer.err(RMJOB, {"jid": f"rm:{uuid.uuid4()}"}) == "JOB_NOT_FOUND"
        assert await producer.err(RMJOB, {"jid": "garbage"}) == "JOB_NOT_FOUND"
        assert await producer.err(RMJOB, {"jid": f"_system:{uuid.uuid4()}"}) == "QUEUE_SYSTEM"
        assert await producer.err(RMJOB, {}) == "INVALID_PAYLOAD"

    asyncio.run(scenario())


def test_lsjob_order_and_paging(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--pagination.page_size", "3", "--pagination.max_page_size", "10")

    async def page(client: RawClient, **fields: Any) -> dict[str, Any]:
        return await page_of(client, "pages", **fields)

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "pages"})
        await client.ok(ADDQUEUE, {"name": "other"})
        future = rfc3339(datetime.now(UTC) + timedelta(hours=1))
        waiting: list[str] = []
        delayed: list[str] = []
        for index in range(7):
            waiting.append(await enqueue(client, "pages", job_payload=index))
            await enqueue(client, "other")
            if index % 3 == 0:
                delayed.append(await enqueue(client, "pages", scheduled_at=future))

        first = await page(client)
        assert {k: first[k] for k in ("q", "status", "page", "page_size")} == {
            "q": "pages", "status": "waiting", "page": 1, "page_size": 3}
        assert [job["jid"] for job in first["jobs"]] == waiting[:3]
        second = await page(client, page=2)
        assert second["page"] == 2
        assert [job["jid"] for job in second["jobs"]] == waiting[3:6]
        last = await page(client, page=3)
        assert [job["jid"] for job in last["jobs"]] == waiting[6:]
        assert (await page(client, page=4))["jobs"] == []
        assert (await page(client, page=1000))["jobs"] == []
        assert [job["jid"] for job in (await page(client, page_size=5, page=2))["jobs"]
                ] == waiting[5:]

        everything = (await page(client, page_size=10))["jobs"]
        assert [job["jid"] for job in everything] == waiting
        created = [parse_time(job["created_at"]) for job in everything]
        assert created == sorted(created)
        assert [job["payload"] for job in everything] == list(range(7))
        for job in everything:
            assert job == await client.ok(JOB, {"jid": job["jid"]})
        delayed_page = await client.ok(LSJOB, {"q": "pages", "status": "delayed"})
        assert [job["jid"] for job in delayed_page["jobs"]] == delayed
        for status in ("new", "completed", "failed", "active"):
            assert (await client.ok(LSJOB, {"q": "pages", "status": status}))["jobs"] == []

        invalid: list[dict[str, Any]] = [
            {"status": "bogus"}, {"status": "WAITING"}, {"status": 2}, {"status": None},
            {"page_size": 11}, {"page_size": 0}, {"page_size": -1}, {"page_size": "3"},
            {"page": 0}, {"page": -2}, {"page": "1"},
        ]
        for fields in invalid:
            assert await client.err(LSJOB, {"q": "pages", "status": "waiting", **fields}
                                    ) == "INVALID_PAYLOAD", fields
        assert len((await page(client, page_size=10))["jobs"]) == 7
        assert await client.err(LSJOB, {"q": "nope", "status": "waiting"}) == "QUEUE_NOT_FOUND"
        assert await client.err(LSJOB, {"q": "_system", "status": "waiting"}
                                ) == "QUEUE_SYSTEM"

    asyncio.run(scenario())


def test_lsjob_pages_on_with_after_and_bounds_skipping(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--pagination.page_size", "3", "--pagination.max_skip", "6")

    async def page(client: RawClient, **fields: Any) -> dict[str, Any]:
        return await page_of(client, "keyset", **fields)

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "keyset"})
        await client.ok(ADDQUEUE, {"name": "other"})
        waiting: list[str] = []
        for index in range(8):
            waiting.append(await enqueue(client, "keyset", job_payload=index))
            if index == 3:
                delayed = await enqueue(client, "keyset", delay_ms=3_600_000)

        # Walking with `next_after` visits every job once, in order, whatever the depth.
        seen: list[str] = []
        listing = await page(client)
        while True:
            seen += [job["jid"] for job in listing["jobs"]]
            if listing["next_after"] is None:
                break
            assert listing["next_after"] == listing["jobs"][-1]["jid"]
            listing = await page(client, after=listing["next_after"])
        assert seen == waiting
        assert (await page(client, page_size=8))["next_after"] is None
        assert (await page(client, page_size=7))["next_after"] == waiting[6]
        # `after` is a position: the job it names need not have the status listed.
        after_delayed = await page(client, after=delayed)
        assert [job["jid"] for job in after_delayed["jobs"]] == waiting[4:7]
        assert [job["jid"] for job in (await page(client, after=waiting[-1]))["jobs"]] == []
        # The page and the after-id both say where to start: only one may be given.
        assert await client.err(LSJOB, {"q": "keyset", "status": "waiting", "page": 2,
                                        "after": waiting[0]}) == "INVALID_PAYLOAD"
        other_job = await enqueue(client, "other")
        for bad in (other_job, "keyset:not-a-uuid", "keyset", "", 7):
            assert await client.err(LSJOB, {"q": "keyset", "status": "waiting",
                                            "after": bad}) == "INVALID_PAYLOAD", bad

        # Page 3 skips 6 jobs, the bound; page 4 would skip 9 and is refused, naming `after`.
        assert [job["jid"] for job in (await page(client, page=3))["jobs"]] == waiting[6:]
        reply = await client.request(LSJOB, {"q": "keyset", "status": "waiting", "page": 4})
        assert reply["p"]["code"] == "INVALID_PAYLOAD" and "'after'" in reply["p"]["msg"]

    asyncio.run(scenario())


def test_qstats_agree_with_lsjob(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(*LONG_ACK)

    async def agree(client: RawClient, queue: str, expected: dict[str, int]) -> None:
        counts = await stats(client, queue)
        assert counts == {**dict.fromkeys(STATUSES, 0), **expected}
        for status in STATUSES:
            assert len(await listed(client, queue, status)) == counts[status], status

    async def scenario() -> None:
        producer = await worker(server.port)
        consumer = await worker(server.port)
        await producer.ok(ADDQUEUE, {"name": "mix"})
        await producer.ok(ADDQUEUE, {"name": "mix-held"})
        await agree(producer, "mix", {})

        first = [await enqueue(producer, "mix", max_attempts=1) for _ in range(5)]
        await agree(producer, "mix", {"waiting": 5})
        await consumer.ok(SUBSCRIBE, {"q": "mix", "credits": 4})
        quests = await take_quests(consumer, 4)
        assert set(quests) == set(first[:4])
        await agree(producer, "mix", {"waiting": 1, "active": 4})
        for index, jid in enumerate(first[:3]):
            delivery = {"did": quests[jid]["did"], "jid": jid}
            await consumer.ok(ACK, delivery)
            if index < 2:
                await consumer.ok(COMPLETE, delivery)
            else:
                reply = await consumer.ok(FAIL, {**delivery, "error": {"message": "boom"}})
                assert reply["status"] == "failed"
        future = rfc3339(datetime.now(UTC) + timedelta(hours=1))
        delayed = [await enqueue(producer, "mix", scheduled_at=future) for _ in range(3)]
        await agree(producer, "mix", {"waiting": 1, "active": 1, "completed": 2, "failed": 1,
                                      "delayed": 3})

        await producer.ok(RMJOB, {"jid": delayed[0]})
        await producer.ok(RMJOB, {"jid": first[0]})
        assert await producer.err(RMJOB, {"jid": first[3]}) == "JOB_STATUS_CONFLICT"  # active
        await producer.ok(RMJOB, {"jid": first[4]})  # waiting
        await agree(producer, "mix", {"active": 1, "completed": 1, "failed": 1, "delayed": 2})

        await producer.ok(PAUSE, {"q": "mix-held"})
        held = [await enqueue(producer, "mix-held") for _ in range(2)]
        await agree(producer, "mix-held", {"new": 2})
        await producer.ok(RMJOB, {"jid": held[0]})
        await agree(producer, "mix-held", {"new": 1})
        # The other queue is untouched by all of it.
        await agree(producer, "mix", {"active": 1, "completed": 1, "failed": 1, "delayed": 2})

        assert await producer.err(QSTATS, {"q": "nope"}) == "QUEUE_NOT_FOUND"
        assert await producer.err(QSTATS, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await producer.err(QSTATS, {}) == "INVALID_PAYLOAD"

    asyncio.run(scenario())


def test_status_report(server: ServerProcess, storage_engine: str) -> None:  # noqa: F811
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "reported"})
        await enqueue(client, "reported")
        await client.ok(SUBSCRIBE, {"q": "reported", "credits": 0})
        anonymous = await RawClient.connect(server.port)
        assert (await anonymous.request(HELLO))["t"] == 103

        status = await client.ok(STATUS)
        assert {"application", "memory", "pools", "storage", "queues"} <= set(status)

        application = status["application"]
        assert type(application["version"]) is str and application["version"]
        assert server.process is not None and application["pid"] == server.process.pid
        started = parse_time(application["started_at"])
        assert started <= datetime.now(UTC)
        assert type(application["uptime_seconds"]) is int
        assert 0 <= application["uptime_seconds"] <= 60

        rss = status["memory"]["rss_bytes"]
        assert type(rss) is int and rss > 1024 * 1024

        pools = status["pools"]
        assert (pools["anonymous"], pools["workers"], pools["subscriptions"]) == (1, 1, 1)

        storage = status["storage"]
        assert storage["engine"] == storage_engine
        assert type(storage["file_bytes"]) is int and storage["file_bytes"] > 0
        assert type(storage["map_size_bytes"]) is int
        if storage_engine == "lmdb":
            assert storage["path"] == str(server.storage_path)
            assert storage["map_size_bytes"] >= storage["file_bytes"]
        else:  # the DSN (without a password); the database's size; no map
            assert "host=127.0.0.1" in storage["path"]
            assert storage["map_size_bytes"] == 0

        queues = {q["name"]: q for q in status["queues"]}
        assert sorted(queues) == ["_system", "reported"]
        assert queues["reported"]["stats"] == {**dict.fromkeys(STATUSES, 0), "waiting": 1}
        assert queues["reported"]["state"] == "active"

        await anonymous.close()

    asyncio.run(scenario())


def test_scheduled_at_beyond_year_9999_is_refused_or_readable(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "far"})
        for text in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
            reply = await client.request(ENQUEUE, {"q": "far", "scheduled_at": text})
            if reply["t"] == 102:
                assert reply["p"]["code"] == "INVALID_PAYLOAD", reply
                continue
            job = await client.request(JOB, {"jid": reply["p"]["jid"]})
            assert job["t"] == 101, job
        # Whatever was accepted, the queue's listings stay readable.
        for status in ("waiting", "delayed"):
            listing = await client.request(LSJOB, {"q": "far", "status": status})
            assert listing["t"] == 101, listing

    asyncio.run(scenario())
