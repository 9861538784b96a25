import asyncio

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess


def test_server_starts_registers_and_stops_cleanly(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        wid = await client.register(name="smoke")
        assert len(wid) == 36
        await client.close()

    asyncio.run(scenario())
    assert server.stop() == 0
    assert server.events("server_stopped")
