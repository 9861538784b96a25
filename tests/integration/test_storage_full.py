"""A store at its maximum size: new jobs refused with STORAGE_FULL, nothing stored is lost,
completing and clearing still work in the headroom, and new jobs are accepted again once
removals have freed pages (the writer probes again every 10 s)."""

import asyncio
import time

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

ADDQUEUE, SUBSCRIBE, ENQUEUE, QSTATS, ACK, COMPLETE = 9, 6, 14, 18, 19, 20
CLEARQUEUE, QUEST = 28, 106
SMALL_STORE = ("--storage.initial_map_size_bytes", "1048576",
               "--storage.max_map_size_bytes", "4194304",
               "--storage.reserved_headroom_bytes", "524288")
PAYLOAD = {"blob": b"x" * 60_000}
# The probe interval is 10 s; a loaded CI machine gets generous slack on top.
RECOVERY_DEADLINE_S = 40.0
ATTEMPT_INTERVAL_S = 0.25


def test_full_store_refuses_new_jobs_keeps_old_ones_and_recovers(start_server) -> None:
    server: ServerProcess = start_server(*SMALL_STORE)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="filler")
        await client.ok(ADDQUEUE, {"name": "big"})
        sid = (await client.ok(SUBSCRIBE, {"q": "big", "credits": 1}))["sid"]
        accepted = []
        refusal = None
        for _ in range(200):
            reply = await client.request(ENQUEUE, {"q": "big", "job_payload": PAYLOAD})
            if reply["t"] == 102:
                refusal = reply["p"]
                break
            accepted.append(reply["p"]["jid"])
        assert refusal is not None and refusal["code"] == "STORAGE_FULL", refusal
        assert len(accepted) > 40  # the map grew from 1 MiB towards its 4 MiB maximum
        stats = (await client.ok(QSTATS, {"q": "big"}))["stats"]
        assert sum(stats.values()) == len(accepted)  # nothing acknowledged was lost

        # The job handed out before the store filled can still be completed (headroom).
        quest = (await client.next_push(QUEST))["p"]
        assert quest["sid"] == sid
        ref = {"did": quest["did"], "jid": quest["jid"]}
        await client.ok(ACK, ref)
        await client.ok(COMPLETE, ref)

        cleared = await client.ok(CLEARQUEUE, {"q": "big"})
        assert cleared["removed"]["waiting"] == len(accepted) - 1

        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            reply = await client.request(ENQUEUE, {"q": "big", "job_payload": PAYLOAD})
            if reply["t"] == 101:
                break
            assert reply["p"]["code"] == "STORAGE_FULL", reply
            assert time.monotonic() < deadline, "new jobs never accepted again after CLEARQUEUE"
            await asyncio.sleep(ATTEMPT_INTERVAL_S)  # poll interval between real requests
        await client.close()

    asyncio.run(scenario())
    assert server.events("storage_full")
    assert server.events("storage_space_probe")
