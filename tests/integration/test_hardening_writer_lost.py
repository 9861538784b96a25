"""When the storage writer dies, the server takes nothing more in at once (it used to answer
for the whole grace period): it closes the listener, stops reading every connection, and
exits 1 without waiting out the grace period, for a supervisor to restart it."""

import asyncio
import os
import signal
import time
from collections.abc import Callable

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

PING, PONG, ADDQUEUE, SUBSCRIBE, ENQUEUE, QUEST, ACK = 3, 105, 9, 6, 14, 106, 19
GRACE_MS = 60_000  # a grace period it must not wait out
EVENT_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05


def test_a_lost_writer_stops_the_server_taking_requests_at_once(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server("--shutdown.grace_ms", str(GRACE_MS))
    assert server.process is not None
    (started,) = server.events("server_started")
    writer_pid = started["writer_pid"]
    assert isinstance(writer_pid, int)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="worker")
        await client.ok(ADDQUEUE, {"name": "q"})
        await client.ok(SUBSCRIBE, {"q": "q", "credits": 1})
        await client.ok(ENQUEUE, {"q": "q", "job_payload": "held"})
        quest = (await client.next_push(QUEST))["p"]
        # A job is out: the old shutdown path waited the grace period for its outcome,
        # answering requests all along.
        await client.ok(ACK, {"did": quest["did"], "jid": quest["jid"]})
        killed_at = time.monotonic()
        os.kill(writer_pid, signal.SIGKILL)
        while not server.events("storage_writer_lost"):
            assert time.monotonic() - killed_at < EVENT_TIMEOUT_S
            await asyncio.sleep(POLL_INTERVAL_S)  # poll interval while the server notices
        await client.send(PING)
        replies = []
        while (message := await client.read_frame(timeout=EVENT_TIMEOUT_S)) is not None:
            replies.append(message["t"])
        assert PONG not in replies, replies
        assert server.process is not None
        assert server.process.wait(EVENT_TIMEOUT_S) == 1
        assert time.monotonic() - killed_at < GRACE_MS / 1000 / 2
        assert server.events("server_halted")

    asyncio.run(scenario())
