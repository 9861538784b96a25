"""Queue management over the wire: ADDQUEUE, QUEUE, LSQUEUE, PAUSE, RESUME, RMQUEUE."""

import asyncio
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.raw_client import RawClient, frame
from tests.support.server_process import ServerProcess

QUEUE, LSQUEUE, ADDQUEUE, RMQUEUE, PAUSE, RESUME = 4, 5, 9, 11, 12, 13
ENQUEUE, JOB, RMJOB, QSTATS = 14, 15, 16, 18
OK, ERR = 101, 102

DEFAULT_CONFIG = {"allow_job_overrides": True, "backoff": "fixed", "backoff_jitter": False,
                  "rate_window_ms": 1000}


def assert_uuid(value: Any) -> None:
    assert type(value) is str and str(uuid.UUID(value)) == value, value


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")


async def worker(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="queues-test")
    return client


async def queue_names(client: RawClient) -> list[str]:
    return sorted(q["name"] for q in (await client.ok(LSQUEUE))["queues"])


def test_addqueue_queue_and_lsqueue(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        plain = (await client.ok(ADDQUEUE, {"name": "emails"}))["qid"]
        assert_uuid(plain)
        configured = (await client.ok(ADDQUEUE, {
            "name": "Resize-2_x",
            "config": {"concurrency_limit": 5, "allow_job_overrides": False},
        }))["qid"]
        assert_uuid(configured)
        assert configured != plain
        empty_config = (await client.ok(ADDQUEUE, {"name": "empty-config", "config": {}}))
        assert_uuid(empty_config["qid"])

        emails = await client.ok(QUEUE, {"q": "emails"})
        assert {k: emails[k] for k in ("id", "name", "config", "state")} == {
            "id": plain, "name": "emails", "config": DEFAULT_CONFIG, "state": "active"}
        resize = await client.ok(QUEUE, {"q": "Resize-2_x"})
        assert resize["id"] == configured
        assert resize["config"] == {**DEFAULT_CONFIG, "concurrency_limit": 5,
                                    "allow_job_overrides": False}
        assert resize["state"] == "active"
        assert (await client.ok(QUEUE, {"q": "empty-config"}))["config"] == DEFAULT_CONFIG

        # Missing queues answer an empty map, not an error.
        assert await client.ok(QUEUE, {"q": "nope"}) == {}
        system = await client.ok(QUEUE, {"q": "_system"})
        assert system["name"] == "_system" and system["state"] == "active"
        assert_uuid(system["id"])

        listed = (await client.ok(LSQUEUE))["queues"]
        by_name = {q["name"]: q for q in listed}
        assert sorted(by_name) == ["Resize-2_x", "_system", "emails", "empty-config"]
        assert by_name["emails"] == emails
        assert by_name["Resize-2_x"] == resize
        assert by_name["_system"] == system

        # QUEUE validates its argument like every other queue operation.
        assert await client.err(QUEUE, {"q": "a b"}) == "QUEUE_NAME_INVALID"
        assert await client.err(QUEUE, {}) == "INVALID_PAYLOAD"
        assert await client.err(QUEUE, {"q": 5}) == "INVALID_PAYLOAD"

    asyncio.run(scenario())


def test_addqueue_errors_change_nothing(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        qid = (await client.ok(ADDQUEUE, {"name": "jobs", "config": {"concurrency_limit": 2}}))
        assert await client.err(ADDQUEUE, {"name": "jobs"}) == "QUEUE_EXISTS"
        assert await client.err(ADDQUEUE, {"name": "jobs", "config": {"concurrency_limit": 9}}
                                ) == "QUEUE_EXISTS"
        jobs = await client.ok(QUEUE, {"q": "jobs"})
        assert jobs["id"] == qid["qid"] and jobs["config"]["concurrency_limit"] == 2

        names: list[tuple[Any, str]] = [
            ("-x", "QUEUE_NAME_INVALID"),
            ("a b", "QUEUE_NAME_INVALID"),
            ("a.b", "QUEUE_NAME_INVALID"),
            ("a:b", "QUEUE_NAME_INVALID"),
            ("é", "QUEUE_NAME_INVALID"),
            ("_", "QUEUE_NAME_INVALID"),
            ("q" * 129, "QUEUE_NAME_INVALID"),
            ("", "INVALID_PAYLOAD"),
            (None, "INVALID_PAYLOAD"),
            (12, "INVALID_PAYLOAD"),
            (["q"], "INVALID_PAYLOAD"),
            (b"q", "INVALID_PAYLOAD"),
            ("_x", "QUEUE_SYSTEM"),
            ("_system", "QUEUE_SYSTEM"),
        ]
        for name, code in names:
            assert await client.err(ADDQUEUE, {"name": name}) == code, name
        assert await client.err(ADDQUEUE, {}) == "INVALID_PAYLOAD"

        configs: list[Any] = [
            {"concurrency_limit": 0},
            {"concurrency_limit": -1},
            {"concurrency_limit": "5"},
            {"concurrency_limit": True},
            {"concurrency_limit": 1_000_001},
            {"allow_job_overrides": "yes"},
            {"allow_job_overrides": 1},
            {"max_attempts": 0},
            {"retry_interval_ms": 0},
            {"backoff": "linear"},
            {"no_such_setting": 1},
            ["concurrency_limit", 1],
            "fast",
        ]
        for config in configs:
            assert await client.err(ADDQUEUE, {"name": "valid-name", "config": config}
                                    ) == "INVALID_PAYLOAD", config
        assert await client.ok(QUEUE, {"q": "valid-name"}) == {}

        # The longest valid name and the limits of each setting are accepted.
        longest = "q" * 128
        assert_uuid((await client.ok(ADDQUEUE, {"name": longest}))["qid"])
        assert_uuid((await client.ok(ADDQUEUE, {"name": "9-limits", "config": {
            "concurrency_limit": 1_000_000, "allow_job_overrides": False}}))["qid"])
        assert await queue_names(client) == sorted(["9-limits", "_system", "jobs", longest])

    asyncio.run(scenario())


def test_pause_and_resume(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "work"})

        assert await client.ok(PAUSE, {"q": "work"}) == {}
        assert (await client.ok(QUEUE, {"q": "work"}))["state"] == "paused"
        assert await client.err(PAUSE, {"q": "work"}) == "QUEUE_ALREADY_PAUSED"
        assert (await client.ok(QUEUE, {"q": "work"}))["state"] == "paused"

        assert await client.ok(RESUME, {"q": "work"}) == {}
        assert (await client.ok(QUEUE, {"q": "work"}))["state"] == "active"
        assert await client.err(RESUME, {"q": "work"}) == "QUEUE_NOT_PAUSED"
        assert (await client.ok(QUEUE, {"q": "work"}))["state"] == "active"

        for message_type in (PAUSE, RESUME):
            assert await client.err(message_type, {"q": "missing"}) == "QUEUE_NOT_FOUND"
            assert await client.err(message_type, {"q": "_system"}) == "QUEUE_SYSTEM"
            assert await client.err(message_type, {"q": "bad name"}) == "QUEUE_NAME_INVALID"
            assert await client.err(message_type, {}) == "INVALID_PAYLOAD"
        assert (await client.ok(QUEUE, {"q": "_system"}))["state"] == "active"

    asyncio.run(scenario())


def test_rmqueue(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        first_qid = (await client.ok(ADDQUEUE, {"name": "temp"}))["qid"]
        await client.ok(ADDQUEUE, {"name": "busy"})
        await client.ok(ADDQUEUE, {"name": "later"})

        assert await client.ok(RMQUEUE, {"q": "temp"}) == {}
        assert await client.ok(QUEUE, {"q": "temp"}) == {}
        assert await queue_names(client) == ["_system", "busy", "later"]
        assert await client.err(RMQUEUE, {"q": "temp"}) == "QUEUE_NOT_FOUND"
        assert await client.err(RMQUEUE, {"q": "never"}) == "QUEUE_NOT_FOUND"
        assert await client.err(RMQUEUE, {"q": "_system"}) == "QUEUE_SYSTEM"
        assert await client.err(RMQUEUE, {"q": "-bad"}) == "QUEUE_NAME_INVALID"
        assert await client.err(RMQUEUE, {}) == "INVALID_PAYLOAD"
        assert "_system" in await queue_names(client)

        # A queue holding a job (waiting here) cannot be removed.
        await client.ok(ENQUEUE, {"q": "busy"})
        assert await client.err(RMQUEUE, {"q": "busy"}) == "QUEUE_NOT_EMPTY"
        assert (await client.ok(QUEUE, {"q": "busy"}))["name"] == "busy"

        # Any job counts, a delayed one too; once it is removed the queue can go.
        jid = (await client.ok(ENQUEUE, {"q": "later", "scheduled_at": in_an_hour()}))["jid"]
        assert (await client.ok(JOB, {"jid": jid}))["status"] == "delayed"
        assert await client.err(RMQUEUE, {"q": "later"}) == "QUEUE_NOT_EMPTY"
        assert await client.ok(RMJOB, {"jid": jid}) == {}
        assert await client.ok(RMQUEUE, {"q": "later"}) == {}
        assert await queue_names(client) == ["_system", "busy"]

        # The name is free again: a new queue, with no trace of the old one's jobs.
        second_qid = (await client.ok(ADDQUEUE, {"name": "temp"}))["qid"]
        assert second_qid != first_qid
        await client.ok(ADDQUEUE, {"name": "later"})
        stats = (await client.ok(QSTATS, {"q": "later"}))["stats"]
        assert stats == {"new": 0, "waiting": 0, "delayed": 0, "completed": 0, "failed": 0,
                         "active": 0, "cancelled": 0}

    asyncio.run(scenario())


def test_queue_state_and_config_survive_a_restart(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    config = {"concurrency_limit": 3, "allow_job_overrides": False, "max_attempts": 7}

    async def before() -> dict[str, dict[str, Any]]:
        client = await worker(first.port)
        await client.ok(ADDQUEUE, {"name": "held", "config": config})
        await client.ok(ADDQUEUE, {"name": "open"})
        await client.ok(ADDQUEUE, {"name": "gone"})
        await client.ok(PAUSE, {"q": "held"})
        await client.ok(PAUSE, {"q": "open"})
        await client.ok(RESUME, {"q": "open"})
        await client.ok(RMQUEUE, {"q": "gone"})
        jid = (await client.ok(ENQUEUE, {"q": "held"}))["jid"]
        queues = {q["name"]: q for q in (await client.ok(LSQUEUE))["queues"]}
        queues["job"] = {"jid": jid}
        await client.close()
        return queues

    saved = asyncio.run(before())
    assert first.stop(signal.SIGTERM) == 0
    second = start_server(storage="data")

    async def after() -> None:
        client = await worker(second.port)
        queues = {q["name"]: q for q in (await client.ok(LSQUEUE))["queues"]}
        assert sorted(queues) == ["_system", "held", "open"]
        for name in ("_system", "held", "open"):
            assert queues[name] == saved[name]
        assert queues["held"]["state"] == "paused"
        assert queues["held"]["config"] == {**DEFAULT_CONFIG, **config}
        assert queues["open"]["state"] == "active"
        # The restarted broker acts on the stored state, not just reports it.
        assert await client.err(PAUSE, {"q": "held"}) == "QUEUE_ALREADY_PAUSED"
        assert await client.err(RESUME, {"q": "open"}) == "QUEUE_NOT_PAUSED"
        assert await client.err(ADDQUEUE, {"name": "held"}) == "QUEUE_EXISTS"
        assert await client.err(ENQUEUE, {"q": "held", "max_attempts": 2}
                                ) == "OVERRIDE_NOT_ALLOWED"
        job = await client.ok(JOB, {"jid": saved["job"]["jid"]})
        assert job["status"] == "new" and job["max_attempts"] == 7

    asyncio.run(after())


def test_pipelined_addqueue_then_enqueue(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.send_raw(
            frame({"v": 2, "t": ADDQUEUE, "rid": "add", "p": {"name": "fresh"}})
            + frame({"v": 2, "t": ENQUEUE, "rid": "enq", "p": {"q": "fresh"}}))
        added = await client.reply_to("add")
        enqueued = await client.reply_to("enq")
        assert added["t"] == OK, added
        assert enqueued["t"] == OK, enqueued

    asyncio.run(scenario())


def test_pipelined_pause_then_enqueue(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "held"})
        await client.send_raw(
            frame({"v": 2, "t": PAUSE, "rid": "pause", "p": {"q": "held"}})
            + frame({"v": 2, "t": ENQUEUE, "rid": "enq", "p": {"q": "held"}}))
        assert (await client.reply_to("pause"))["t"] == OK
        enqueued = await client.reply_to("enq")
        assert enqueued["t"] == OK, enqueued
        job = await client.ok(JOB, {"jid": enqueued["p"]["jid"]})
        assert (await client.ok(QUEUE, {"q": "held"}))["state"] == "paused"
        assert job["status"] == "new", job

    asyncio.run(scenario())


def test_pipelined_rmqueue_then_addqueue(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        old_qid = (await client.ok(ADDQUEUE, {"name": "cycle"}))["qid"]
        await client.send_raw(
            frame({"v": 2, "t": RMQUEUE, "rid": "rm", "p": {"q": "cycle"}})
            + frame({"v": 2, "t": ADDQUEUE, "rid": "add", "p": {"name": "cycle"}}))
        assert (await client.reply_to("rm"))["t"] == OK
        added = await client.reply_to("add")
        assert added["t"] == OK, added
        assert (await client.ok(QUEUE, {"q": "cycle"}))["id"] == added["p"]["qid"] != old_qid

    asyncio.run(scenario())
