"""A registered connection that many tasks share: a background reader matches replies to
requests by rid (so several tasks may await replies at once, which RawClient's `reply_to`
cannot) and queues QUESTs and SUBENDs, then None on each queue once the connection closed."""

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from tests.support.raw_client import RawClient

OK, QUEST, SUBEND = 101, 106, 108
# A reply on a loaded 2-core machine during a stress run; a hung server still fails fast.
REPLY_TIMEOUT_S = 20.0
# How long the reader waits for any frame before it gives the connection up.
RUN_TIMEOUT_S = 90.0


class SharedConnection:
    """A registered connection: replies matched by rid, QUESTs queued, None once closed."""

    def __init__(self, client: RawClient,
                 on_quest: Callable[[dict[str, Any]], None] = lambda quest: None) -> None:
        self.client = client
        self.on_quest = on_quest
        self.quests: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subends: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = False
        self._rids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, name: str,
                   on_quest: Callable[[dict[str, Any]], None] = lambda quest: None,
                   host: str = "127.0.0.1") -> "SharedConnection":
        client = await RawClient.connect(port, host)
        await client.register(name=name)
        return cls(client, on_quest)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.client.read_frame(timeout=RUN_TIMEOUT_S)
                if message is None:
                    break
                if message["rid"] == "0":
                    if message["t"] == QUEST:
                        self.on_quest(message["p"])
                        self.quests.put_nowait(message["p"])
                    elif message["t"] == SUBEND:
                        self.subends.put_nowait(message["p"])
                    continue
                waiter = self._waiters.pop(message["rid"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self.closed = True
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("connection closed"))
            self._waiters.clear()
            self.quests.put_nowait(None)
            self.subends.put_nowait(None)

    async def request(self, message_type: int, payload: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise ConnectionError("connection closed")
        rid = f"r{next(self._rids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = waiter
        try:
            await self.client.send(message_type, payload, rid=rid)
        except OSError as exc:
            raise ConnectionError(str(exc)) from exc
        return await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)

    async def ok(self, message_type: int, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await self.request(message_type, payload)
        assert reply["t"] == OK, reply
        return reply["p"]

    def abort(self) -> None:
        """Close abruptly (RST), whatever is in flight."""
        self.client.writer.transport.abort()

    async def close(self) -> None:
        self.client.writer.close()
        await asyncio.gather(self._reader, return_exceptions=True)
