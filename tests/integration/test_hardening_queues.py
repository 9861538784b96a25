"""Queues are bounded (`queues.max_queues`, ADDQUEUE beyond it is TOO_MANY_QUEUES), and
LSQUEUE and STATUS replies always fit in a frame: LSQUEUE pages by name with `after`,
`limit` and `next_after`, and STATUS cuts its lists (`queues_truncated`). About 44,000
queues once made LSQUEUE pass the 8 MiB frame limit."""

import asyncio
from collections.abc import Callable

import msgpack  # type: ignore[import-untyped]

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

LSQUEUE, ADDQUEUE, STATUS, ERR = 5, 9, 10, 102
ENVELOPE = 65536
QUEUES = 600  # 600 records with 128-character names: more than one 64 KiB frame holds


async def add_queues(client: RawClient, names: list[str]) -> list[dict[str, object]]:
    rids = [await client.send(ADDQUEUE, {"name": name}) for name in names]
    return [await client.reply_to(rid) for rid in rids]


def test_addqueue_beyond_max_queues_is_refused(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server("--queues.max_queues", "5")

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="admin")
        replies = await add_queues(client, [f"q{i}" for i in range(5)])
        assert all(reply["t"] == 101 for reply in replies), replies
        assert await client.err(ADDQUEUE, {"name": "q5"}) == "TOO_MANY_QUEUES"
        await client.ok(11, {"q": "q0"})  # RMQUEUE makes room again
        await client.ok(ADDQUEUE, {"name": "q5"})

    asyncio.run(scenario())


def test_lsqueue_and_status_fit_in_a_frame_and_lsqueue_pages(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server("--wire.max_envelope_size_bytes", str(ENVELOPE))

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="admin")
        names = [f"{i:04d}".ljust(128, "x") for i in range(QUEUES)]
        replies = await add_queues(client, names)
        assert all(reply["t"] == 101 for reply in replies), replies[:3]

        first = await client.ok(LSQUEUE)
        assert len(msgpack.packb(first)) <= ENVELOPE // 2 + 1024
        assert first["next_after"] is not None
        listed: list[str] = []
        page = first
        while True:
            listed.extend(queue["name"] for queue in page["queues"])
            if page["next_after"] is None:
                break
            page = await client.ok(LSQUEUE, {"after": page["next_after"]})
        assert listed == sorted(listed)
        assert set(names) <= set(listed)

        limited = await client.ok(LSQUEUE, {"limit": 2})
        assert [q["name"] for q in limited["queues"]] == listed[:2]
        assert limited["next_after"] == listed[1]

        status = await client.ok(STATUS)
        assert len(msgpack.packb(status)) <= ENVELOPE
        assert status["queues_truncated"] is True
        assert status["pools"]["worker_list_truncated"] is False

    asyncio.run(scenario())
