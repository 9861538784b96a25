"""Back-pressure: a peer that does not read makes the server stop pushing to it (its jobs
stay waiting) and resume when it reads again; a peer that does not read its replies is not
read from until it does; other connections are not harmed either way."""

import asyncio
import time

from tests.support.raw_client import RawClient, tight_client
from tests.support.server_process import ServerProcess

ADDQUEUE, SUBSCRIBE, ENQUEUE, JOB, QSTATS, PING, PONG, QUEST = 9, 6, 14, 15, 18, 3, 105, 106
LIMITS = ("--server.write_buffer_high_bytes", "4096",
          "--server.write_buffer_max_bytes", "65536")
BLOB = b"x" * 16_384
JOBS = 400  # 6.4 MB of QUESTs: more than loopback socket buffers hold
SETTLE_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2




async def active_when_settled(admin: RawClient, queue: str) -> dict[str, int]:
    """QSTATS counts once dispatch has stopped moving (two equal readings in a row)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    previous = None
    while True:
        stats = (await admin.ok(QSTATS, {"q": queue}))["stats"]
        if stats == previous:
            return stats
        previous = stats
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(POLL_INTERVAL_S)  # poll interval between real requests


def test_a_peer_that_does_not_read_is_not_pushed_to_until_it_reads(start_server) -> None:
    server: ServerProcess = start_server(*LIMITS)

    async def scenario() -> None:
        admin = await RawClient.connect(server.port)
        await admin.register(name="admin")
        await admin.ok(ADDQUEUE, {"name": "bp"})
        sleeper = await tight_client(server.port)
        await sleeper.register(name="sleeper")
        await sleeper.ok(SUBSCRIBE, {"q": "bp", "credits": JOBS})
        rids = [await admin.send(ENQUEUE, {"q": "bp", "job_payload": BLOB})
                for _ in range(JOBS)]
        for rid in rids:
            assert (await admin.reply_to(rid))["t"] == 101
        stalled = await active_when_settled(admin, "bp")
        # The server held jobs back although the subscription had credit for all of them.
        assert stalled["waiting"] > 0, stalled
        assert stalled["active"] + stalled["waiting"] == JOBS
        assert (await admin.request(PING))["t"] == PONG  # others are served meanwhile

        received = 0
        while received < JOBS:  # reading again: every job is pushed in the end
            await sleeper.next_push(QUEST, timeout=SETTLE_TIMEOUT_S)
            received += 1
        assert (await admin.ok(QSTATS, {"q": "bp"}))["stats"]["active"] == JOBS

    asyncio.run(scenario())


def test_a_peer_that_does_not_read_its_replies_is_not_read_until_it_does(start_server
                                                                        ) -> None:
    server: ServerProcess = start_server(*LIMITS)

    async def scenario() -> None:
        admin = await RawClient.connect(server.port)
        await admin.register(name="admin")
        await admin.ok(ADDQUEUE, {"name": "big"})
        jid = (await admin.ok(ENQUEUE, {"q": "big", "job_payload": BLOB}))["jid"]
        hoarder = await tight_client(server.port)
        await hoarder.register(name="hoarder")
        rids = [await hoarder.send(JOB, {"jid": jid}) for _ in range(JOBS)]
        # 6.4 MB of JOB replies it does not read: the server stops reading its requests
        # instead of building them all, and serves the others meanwhile.
        for _ in range(5):
            assert (await admin.request(PING))["t"] == PONG
        assert not server.events("slow_peer_dropped")
        for rid in rids:  # reading again: every request is answered in the end
            reply = await hoarder.reply_to(rid, timeout=SETTLE_TIMEOUT_S)
            assert reply["t"] == 101 and reply["p"]["jid"] == jid
        assert (await admin.ok(JOB, {"jid": jid}))["jid"] == jid

    asyncio.run(scenario())
