"""Task names over the wire: ENQUEUE's and ENQUEUEMANY's `task`, kept on the job, carried
in QUEST, shown by JOB and LSJOB, and LSJOB's bounded `task` filter."""

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.raw_client import RawClient, enqueue
from tests.support.server_process import ServerProcess

SUBSCRIBE, ADDQUEUE, ENQUEUE, JOB, LSJOB, ENQUEUEMANY = 6, 9, 14, 15, 17, 30
QUEST = 106


async def worker(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="tasks-test")
    return client


async def task_page(client: RawClient, queue: str, task: str, **fields: Any
                    ) -> dict[str, Any]:
    return await client.ok(LSJOB, {"q": queue, "status": "waiting", "task": task, **fields})


def test_task_is_stored_shown_and_carried_in_quest(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> tuple[str, str]:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "emails"})
        await client.ok(ADDQUEUE, {"name": "big"})
        named = await enqueue(client, "emails", job_payload={"to": "a"},
                              task="billing.send_invoice")
        plain = await enqueue(client, "emails", job_payload=1)
        assert (await client.ok(JOB, {"jid": named}))["task"] == "billing.send_invoice"
        assert (await client.ok(JOB, {"jid": plain}))["task"] is None
        listing = await client.ok(LSJOB, {"q": "emails", "status": "waiting"})
        assert [(job["jid"], job["task"]) for job in listing["jobs"]] == [
            (named, "billing.send_invoice"), (plain, None)]
        assert listing["task"] is None
        # A frame above 16 KiB takes the byte-scanning path (its payload kept as sent).
        big = await enqueue(client, "big", job_payload="x" * 40_000, task="bulk")
        assert (await client.ok(JOB, {"jid": big}))["task"] == "bulk"

        await client.ok(SUBSCRIBE, {"q": "emails", "credits": 2})
        quests = [(await client.next_push(QUEST))["p"] for _ in range(2)]
        by_jid = {quest["jid"]: quest for quest in quests}
        assert by_jid[named]["task"] == "billing.send_invoice"
        assert "task" not in by_jid[plain]  # only when the job has one
        await client.close()
        return named, plain

    named, plain = asyncio.run(scenario())
    # The task is part of the stored record: it survives a restart (and the recovery of
    # the job that was active when the server was killed).
    server.kill()
    restarted = start_server()

    async def after_restart() -> None:
        client = await worker(restarted.port)
        assert (await client.ok(JOB, {"jid": named}))["task"] == "billing.send_invoice"
        assert (await client.ok(JOB, {"jid": plain}))["task"] is None
        await client.close()

    asyncio.run(after_restart())


def test_bad_task_names_are_refused_and_nothing_is_added(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "emails"})
        for bad, code in (("bad name", "TASK_NAME_INVALID"), ("-x", "TASK_NAME_INVALID"),
                          ("é", "TASK_NAME_INVALID"), ("t" * 129, "TASK_NAME_INVALID"),
                          ("a/b", "TASK_NAME_INVALID"), ("", "INVALID_PAYLOAD"),
                          (7, "INVALID_PAYLOAD"), (["x"], "INVALID_PAYLOAD")):
            assert await client.err(ENQUEUE, {"q": "emails", "task": bad}) == code, bad
            reply = await client.request(ENQUEUEMANY, {"q": "emails", "jobs": [
                {"task": "fine"}, {"task": bad}]})
            assert reply["p"]["code"] == code, bad
            assert reply["p"]["details"] == {"index": 1}
            assert await client.err(LSJOB, {"q": "emails", "status": "waiting",
                                            "task": bad}) == code, bad
        # The longest name and every allowed character are accepted; nil is no task.
        longest = "_" + "a" * 127
        jid = await enqueue(client, "emails", task=longest)
        assert (await client.ok(JOB, {"jid": jid}))["task"] == longest
        mixed = await enqueue(client, "emails", task="Mod_1.sub-part:run")
        assert (await client.ok(JOB, {"jid": mixed}))["task"] == "Mod_1.sub-part:run"
        none = await enqueue(client, "emails", task=None)
        assert (await client.ok(JOB, {"jid": none}))["task"] is None
        jids = (await client.ok(ENQUEUEMANY, {"q": "emails", "jobs": [
            {"task": "a"}, {}, {"task": "b", "job_payload": 2}]}))["jids"]
        assert [(await client.ok(JOB, {"jid": j}))["task"] for j in jids] == ["a", None, "b"]
        listing = await client.ok(LSJOB, {"q": "emails", "status": "waiting",
                                          "page_size": 100})
        assert len(listing["jobs"]) == 6  # nothing of the refused requests was added
        # A filter pages with `after`, not with `page`.
        assert await client.err(LSJOB, {"q": "emails", "status": "waiting", "task": "a",
                                        "page": 2}) == "INVALID_PAYLOAD"
        await client.close()

    asyncio.run(scenario())


def test_lsjob_task_filter_reads_a_bounded_number_of_jobs_per_page(
        start_server: Callable[..., ServerProcess]) -> None:
    """With more jobs than one page may read, a filtered walk goes on with `next_after`
    (pages may be short, even empty) and finds every job of the task exactly once."""
    server = start_server("--pagination.max_filter_scan", "7")

    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "mixed"})
        tasks = ["rare" if index in (2, 3, 17, 29) else "common" for index in range(30)]
        jids = (await client.ok(ENQUEUEMANY, {"q": "mixed", "jobs": [
            {"task": task, "job_payload": index} for index, task in enumerate(tasks)]}
        ))["jids"]
        rare = [jid for jid, task in zip(jids, tasks, strict=True) if task == "rare"]

        first = await task_page(client, "mixed", "rare", page_size=10)
        # Seven jobs read: jobs 2 and 3 match, the page stops at the bound.
        assert [job["jid"] for job in first["jobs"]] == rare[:2]
        assert first["next_after"] == jids[6] and first["task"] == "rare"
        # The second reads jobs 7..13: none matches, and the walk still goes on.
        second = await task_page(client, "mixed", "rare", page_size=10,
                                 after=first["next_after"])
        assert second["jobs"] == [] and second["next_after"] == jids[13]

        seen: list[str] = []
        pages = 0
        listing = await task_page(client, "mixed", "rare", page_size=1)
        while True:
            pages += 1
            assert pages <= 40, "the walk does not end"
            assert len(listing["jobs"]) <= 1
            assert all(job["task"] == "rare" for job in listing["jobs"])
            seen += [job["jid"] for job in listing["jobs"]]
            if listing["next_after"] is None:
                break
            listing = await task_page(client, "mixed", "rare", page_size=1,
                                      after=listing["next_after"])
        assert seen == rare
        # A task with no job walks to the end in bounded pages, all empty.
        empty = await task_page(client, "mixed", "nothing", after=jids[27])
        assert empty["jobs"] == [] and empty["next_after"] is None
        # A page that finds its `page_size` stops at its last job.
        common = await task_page(client, "mixed", "common", page_size=3)
        assert [job["jid"] for job in common["jobs"]] == [*jids[:2], jids[4]]
        assert common["next_after"] == jids[4]
        await client.close()

    asyncio.run(scenario())
