"""Schedules over the wire: ADDSCHEDULE, LSSCHEDULE, RMSCHEDULE, PAUSESCHEDULE,
RESUMESCHEDULE against a real server; fires of a schedule with seconds; a restart, where
the last fire survives and the missed policy (`skip`, `once`) applies.

Times are read from the server (job records, PONG, LSSCHEDULE), never from the test's
clock; waits are bounded and end as soon as the server has done what is expected.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient, ms, server_now
from tests.support.server_process import ServerProcess

ADDQUEUE, PAUSE, LSJOB, QSTATS, OBLITERATE = 9, 12, 17, 18, 29
ADDSCHEDULE, LSSCHEDULE, RMSCHEDULE, PAUSESCHEDULE, RESUMESCHEDULE = 45, 46, 47, 48, 49
EVERY_SECOND = "* * * * * *"
# Bound for the server to fire; never waited out when it behaves.
FIRE_TIMEOUT_S = 15.0


async def admin(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="schedules-test")
    return client


async def waiting_jobs(client: RawClient, queue: str) -> list[dict[str, Any]]:
    reply = await client.ok(LSJOB, {"q": queue, "status": "waiting", "page_size": 1000})
    return list(reply["jobs"])


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + FIRE_TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def schedule(client: RawClient, name: str) -> dict[str, Any]:
    listed = (await client.ok(LSSCHEDULE, {}))["schedules"]
    (found,) = [row for row in listed if row["name"] == name]
    return dict(found)


def test_a_schedule_with_seconds_fires_jobs_once_per_occurrence(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await admin(server.port)
        await client.ok(ADDQUEUE, {"name": "ticks"})
        added = await client.ok(ADDSCHEDULE, {
            "name": "tick", "q": "ticks", "cron": EVERY_SECOND, "job_payload": {"n": 1},
            "max_attempts": 2, "headers": {"k": "v"}, "task": "reports.tick", "priority": 8})
        assert added["name"] == "tick" and added["q"] == "ticks"
        assert added["task"] == "reports.tick" and added["priority"] == 8
        assert added["paused"] is False and added["last_run_at"] is None
        assert ms(added["next_run_at"]) % 1000 == 0
        assert ms(added["next_run_at"]) > await server_now(client) - 1000

        async def three() -> bool:
            return len(await waiting_jobs(client, "ticks")) >= 3
        await until(three, "three fires")
        jobs = await waiting_jobs(client, "ticks")
        starts = [ms(job["execution_start_at"]) for job in jobs]
        assert all(job["payload"] == {"n": 1} for job in jobs)
        assert all(job["overrides"] == {"max_attempts": 2} for job in jobs)
        assert all(job["headers"] == {"k": "v"} for job in jobs)
        assert all(job["task"] == "reports.tick" and job["priority"] == 8 for job in jobs)
        assert starts == sorted(starts)
        row = await schedule(client, "tick")
        last = ms(row["last_run_at"])
        assert last % 1000 == 0 and ms(row["next_run_at"]) > last
        # One job per occurrence: never two jobs for the same second.
        seconds = [start // 1000 for start in starts]
        assert len(seconds) == len(set(seconds))

    asyncio.run(scenario())


def test_pause_resume_and_remove(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await admin(server.port)
        await client.ok(ADDQUEUE, {"name": "work"})
        await client.ok(ADDSCHEDULE, {"name": "tick", "q": "work", "cron": EVERY_SECOND})
        paused = await client.ok(PAUSESCHEDULE, {"name": "tick"})
        assert paused["paused"] is True and paused["next_run_at"] is None
        count = len(await waiting_jobs(client, "work"))
        # Two whole seconds on the server's clock pass without a fire while paused.
        start = await server_now(client)

        async def two_seconds_later() -> bool:
            return await server_now(client) >= start + 2000
        await until(two_seconds_later, "two seconds")
        assert len(await waiting_jobs(client, "work")) == count
        resumed = await client.ok(RESUMESCHEDULE, {"name": "tick"})
        assert resumed["paused"] is False
        # No back-fill: the next run is after the resume.
        assert ms(resumed["next_run_at"]) > start + 2000

        async def fired() -> bool:
            return len(await waiting_jobs(client, "work")) > count
        await until(fired, "a fire after the resume")
        assert (await schedule(client, "tick"))["last_run_at"] is not None

        assert await client.ok(RMSCHEDULE, {"name": "tick"}) == {}
        assert (await client.ok(LSSCHEDULE, {}))["schedules"] == []
        for message in (RMSCHEDULE, PAUSESCHEDULE, RESUMESCHEDULE):
            assert await client.err(message, {"name": "tick"}) == "SCHEDULE_NOT_FOUND"

    asyncio.run(scenario())


def test_bad_requests_get_stable_codes(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--schedules.max_schedules", "2")

    async def scenario() -> None:
        client = await admin(server.port)
        await client.ok(ADDQUEUE, {"name": "work"})
        await client.ok(ADDQUEUE, {"name": "strict", "config": {"allow_job_overrides": False}})
        base = {"name": "s", "q": "work", "cron": "0 3 * * *"}
        cases = [
            ({**base, "cron": "61 * * * *"}, "BAD_CRON"),
            ({**base, "cron": "* * *"}, "BAD_CRON"),
            ({**base, "cron": "0 0 30 2 *"}, "BAD_CRON"),
            ({**base, "cron": 5}, "INVALID_PAYLOAD"),
            ({**base, "tz": "Mars/Olympus"}, "BAD_TIMEZONE"),
            ({**base, "tz": "../../etc/passwd"}, "BAD_TIMEZONE"),
            ({**base, "missed": "twice"}, "INVALID_PAYLOAD"),
            ({**base, "task": "a/b"}, "TASK_NAME_INVALID"),
            ({**base, "priority": 10}, "INVALID_PAYLOAD"),
            ({**base, "name": "no spaces"}, "INVALID_PAYLOAD"),
            ({**base, "q": "missing"}, "QUEUE_NOT_FOUND"),
            ({**base, "q": "_system"}, "QUEUE_SYSTEM"),
            ({**base, "q": "bad name"}, "QUEUE_NAME_INVALID"),
            ({**base, "delay_ms": 5}, "INVALID_PAYLOAD"),
            ({**base, "unique_key": "k"}, "INVALID_PAYLOAD"),
            ({**base, "group": "acme"}, "INVALID_PAYLOAD"),
            ({**base, "max_attempts": 0}, "INVALID_PAYLOAD"),
            ({**base, "q": "strict", "max_attempts": 2}, "OVERRIDE_NOT_ALLOWED"),
        ]
        for payload, code in cases:
            assert await client.err(ADDSCHEDULE, payload) == code, payload
        assert (await client.ok(LSSCHEDULE, {}))["schedules"] == []

        await client.ok(ADDSCHEDULE, {**base, "name": "a"})
        await client.ok(ADDSCHEDULE, {**base, "name": "b", "tz": "Europe/Berlin"})
        assert await client.err(ADDSCHEDULE, {**base, "name": "c"}) == "TOO_MANY_SCHEDULES"
        # Replacing one is not a new one.
        replaced = await client.ok(ADDSCHEDULE, {**base, "name": "b", "cron": "0 4 * * *"})
        assert replaced["cron"] == "0 4 * * *" and replaced["tz"] == "UTC"
        page = await client.ok(LSSCHEDULE, {"limit": 1})
        assert [row["name"] for row in page["schedules"]] == ["a"]
        assert page["next_after"] == "a"
        page = await client.ok(LSSCHEDULE, {"after": "a"})
        assert [row["name"] for row in page["schedules"]] == ["b"]
        assert page["next_after"] is None
        assert await client.err(RMSCHEDULE, {"name": 7}) == "INVALID_PAYLOAD"

    asyncio.run(scenario())


def test_a_removed_queue_pauses_its_schedule(start_server: Callable[..., ServerProcess]
                                             ) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await admin(server.port)
        await client.ok(ADDQUEUE, {"name": "gone"})
        await client.ok(PAUSE, {"q": "gone"})
        await client.ok(ADDSCHEDULE, {"name": "orphan", "q": "gone", "cron": EVERY_SECOND})

        async def new_job() -> bool:  # a paused queue takes the job as `new`
            stats = (await client.ok(QSTATS, {"q": "gone"}))["stats"]
            return bool(stats["new"] >= 1)
        await until(new_job, "a job enqueued as new into the paused queue")
        await client.ok(RMSCHEDULE, {"name": "orphan"})
        await client.ok(OBLITERATE, {"q": "gone", "force": True})

        await client.ok(ADDQUEUE, {"name": "gone2"})
        await client.ok(ADDSCHEDULE, {"name": "orphan2", "q": "gone2", "cron": EVERY_SECOND})
        await client.ok(PAUSE, {"q": "gone2"})
        await client.ok(OBLITERATE, {"q": "gone2", "force": True})

        async def paused() -> bool:
            return bool((await schedule(client, "orphan2"))["paused"])
        await until(paused, "the schedule of a removed queue to pause")

        async def logged() -> bool:  # the server's log is read by a thread of the test
            return any(event["schedule"] == "orphan2"
                       for event in server.events("schedule_paused_queue_missing"))
        await until(logged, "the log line of the pause")

    asyncio.run(scenario())


def test_restart_keeps_the_last_fire_and_applies_the_missed_policy(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def before() -> str:
        client = await admin(server.port)
        for queue in ("skipper", "oncer", "keeper"):
            await client.ok(ADDQUEUE, {"name": queue})
        await client.ok(ADDSCHEDULE, {"name": "skip", "q": "skipper", "cron": EVERY_SECOND})
        await client.ok(ADDSCHEDULE, {"name": "once", "q": "oncer", "cron": EVERY_SECOND,
                                      "missed": "once"})
        await client.ok(ADDSCHEDULE, {"name": "kept", "q": "keeper", "cron": EVERY_SECOND,
                                      "missed": "once"})

        async def all_fired() -> bool:
            rows = (await client.ok(LSSCHEDULE, {}))["schedules"]
            return all(row["last_run_at"] is not None for row in rows)
        await until(all_fired, "every schedule to fire")
        kept = await client.ok(PAUSESCHEDULE, {"name": "kept"})
        await client.close()
        return str(kept["last_run_at"])

    kept_last_run = asyncio.run(before())
    server.kill()  # a crash: nothing is flushed on the way out
    fired_before = occurrences(server)
    time.sleep(2.5)  # occurrences pass while the server is down
    restarted = start_server()

    async def after() -> None:
        client = await admin(restarted.port)
        # The last fire survived the crash, and a paused schedule stays paused.
        kept = await schedule(client, "kept")
        assert kept["paused"] is True and kept["last_run_at"] == kept_last_run
        boot = {event["schedule"]: event
                for event in restarted.events("schedule_missed_occurrences")}
        assert set(boot) == {"skip", "once"}

        async def fired_again() -> bool:  # `once`: its boot fire and a later one
            fired = occurrences(restarted)
            return len(fired.get("skip", ())) >= 1 and len(fired.get("once", ())) >= 2
        await until(fired_again, "fires after the restart")
        await client.ok(PAUSESCHEDULE, {"name": "skip"})
        await client.ok(PAUSESCHEDULE, {"name": "once"})
        fired_after = occurrences(restarted)
        assert "kept" not in fired_after
        for name in ("skip", "once"):
            assert len(fired_after[name]) == len(set(fired_after[name]))  # once each
            assert min(fired_after[name]) > max(fired_before[name])
        # `skip`: nothing for the time it was down; its first fire is its next run.
        skip = boot["skip"]
        assert skip["fired"] is False and skip["fire_ms"] is None
        assert min(fired_after["skip"]) >= int(skip["next_run_ms"])  # type: ignore[call-overload]
        assert int(skip["next_run_ms"]) >= max(fired_before["skip"]) + 2000  # type: ignore[call-overload]
        # `once`: a single job for the two or more missed occurrences, stamped with the
        # latest of them; every other fire is a later occurrence.
        once = boot["once"]
        stamp = int(once["fire_ms"])  # type: ignore[call-overload]
        assert once["fired"] is True and stamp >= max(fired_before["once"]) + 2000
        assert sorted(fired_after["once"])[0] == stamp
        assert sorted(fired_after["once"])[1] >= int(once["next_run_ms"])  # type: ignore[call-overload]
        # Every job is a fire: the restarted server's fires are all in the queue.
        jids = {job["jid"] for job in await waiting_jobs(client, "oncer")}
        assert fire_jids(restarted, "once") <= jids

    asyncio.run(after())


def occurrences(server: ServerProcess) -> dict[str, list[int]]:
    """The occurrences each schedule fired, from the server's `schedule_fired` lines."""
    fired: dict[str, list[int]] = {}
    for event in server.events("schedule_fired"):
        fired.setdefault(str(event["schedule"]), []).append(
            int(event["occurrence_ms"]))  # type: ignore[call-overload]
    return fired


def fire_jids(server: ServerProcess, name: str) -> set[str]:
    return {str(event["jid"]) for event in server.events("schedule_fired")
            if event["schedule"] == name}


def test_pipelined_changes_see_the_ones_before_them(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await admin(server.port)
        yearly = {"q": "work", "cron": "0 0 1 1 *"}
        rids = [
            await client.send(ADDQUEUE, {"name": "work"}),
            await client.send(ADDSCHEDULE, {"name": "a", **yearly}),
            await client.send(PAUSESCHEDULE, {"name": "a"}),
            await client.send(LSSCHEDULE, {}),
            await client.send(RMSCHEDULE, {"name": "a"}),
            await client.send(ADDSCHEDULE, {"name": "a", **yearly, "missed": "once"}),
            await client.send(RESUMESCHEDULE, {"name": "b"}),
        ]
        replies = [await client.reply_to(rid) for rid in rids]
        assert [reply["t"] for reply in replies] == [101] * 6 + [102]
        added, paused, listed, removed, again, missing = (r["p"] for r in replies[1:])
        assert added["paused"] is False and added["next_run_at"] is not None
        assert paused["paused"] is True and paused["next_run_at"] is None
        assert [(row["name"], row["paused"]) for row in listed["schedules"]] == [("a", True)]
        assert removed == {}
        assert again["missed"] == "once" and again["paused"] is False
        assert missing["code"] == "SCHEDULE_NOT_FOUND"
        (row,) = (await client.ok(LSSCHEDULE, {}))["schedules"]
        assert (row["name"], row["missed"], row["paused"]) == ("a", "once", False)

    asyncio.run(scenario())
