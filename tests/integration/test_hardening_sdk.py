"""The Python SDK pipelines within the bound the server announces in REGISTER's
`limits.max_requests_in_flight`: more requests than that at once wait in the client, not in
the server's socket, and all of them are answered."""

import asyncio
from collections.abc import Callable

from overhop_client import AsyncClient

from tests.support.server_process import ServerProcess

BOUND = 8
REQUESTS = 200


def test_the_sdk_keeps_its_requests_in_flight_within_the_servers_bound(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server("--server.max_requests_in_flight", str(BOUND))

    async def scenario() -> None:
        client = await AsyncClient.connect(f"127.0.0.1:{server.port}", name="pipeliner")
        await client.add_queue("sdk")
        connection = client._connection
        assert connection is not None
        most = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, len(connection._pending))
                await asyncio.sleep(0)  # once per loop iteration, while requests fly

        watcher = asyncio.create_task(watch())
        jids = await asyncio.gather(*(client.enqueue("sdk", {"n": n}) for n in range(REQUESTS)))
        done.set()
        await watcher
        await client.close()
        assert len(set(jids)) == REQUESTS
        assert 1 < most <= BOUND, most

    asyncio.run(scenario())
