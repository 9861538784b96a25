"""A deliberately plain protocol client for tests: exact frames in, decoded frames out.

It speaks the wire format directly (no SDK), so protocol tests check the server against
`protocol/PROTOCOL.md` and nothing else.
"""

import asyncio
import contextlib
import itertools
import socket
import struct
from datetime import datetime
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
# Generous for a loaded CI machine, still short enough that a hung test fails quickly.
REPLY_TIMEOUT_S = 10.0


def frame(document: Any) -> bytes:
    body = msgpack.packb(document, use_bin_type=True)
    return HEADER.pack(len(body)) + body


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._rids = itertools.count(1)
        self.pushes: list[dict[str, Any]] = []
        self._pending: dict[str, dict[str, Any]] = {}

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "RawClient":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message_type: int, payload: dict[str, Any] | None = None,
                   rid: str | None = None) -> str:
        rid = rid or str(next(self._rids))
        await self.send_raw(frame({"v": 2, "t": message_type, "rid": rid, "p": payload or {}}))
        return rid

    async def read_frame(self, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any] | None:
        """The next frame, or None when the server closed the connection."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
            (length,) = HEADER.unpack(header)
            body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except asyncio.IncompleteReadError:
            return None
        return msgpack.unpackb(body, raw=False)

    async def reply_to(self, rid: str, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """The reply with this rid; pushes (rid "0") and other replies are kept aside."""
        if rid in self._pending:
            return self._pending.pop(rid)
        while True:
            message = await self.read_frame(timeout)
            if message is None:
                raise ConnectionError("server closed the connection")
            if message["rid"] == rid:
                return message
            if message["rid"] == "0":
                self.pushes.append(message)
            else:
                self._pending[message["rid"]] = message

    async def request(self, message_type: int, payload: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        return await self.reply_to(await self.send(message_type, payload))

    async def ok(self, message_type: int, payload: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        reply = await self.request(message_type, payload)
        assert reply["t"] == 101, reply
        return reply["p"]

    async def err(self, message_type: int, payload: dict[str, Any] | None = None) -> str:
        reply = await self.request(message_type, payload)
        assert reply["t"] == 102, reply
        return reply["p"]["code"]

    async def next_push(self, message_type: int, timeout: float = REPLY_TIMEOUT_S
                        ) -> dict[str, Any]:
        for index, message in enumerate(self.pushes):
            if message["t"] == message_type:
                return self.pushes.pop(index)
        while True:
            message = await self.read_frame(timeout)
            if message is None:
                raise ConnectionError("server closed the connection")
            if message["rid"] == "0" and message["t"] == message_type:
                return message
            if message["rid"] == "0":
                self.pushes.append(message)
            else:
                self._pending[message["rid"]] = message

    async def register(self, **metadata: Any) -> str:
        hi = await self.request(1, {})
        assert hi["t"] == 103, hi
        return (await self.ok(2, metadata))["wid"]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def tight_client(port: int) -> RawClient:
    """A client whose socket receive buffer is as small as the kernel allows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    return RawClient(reader, writer)


def ms(text: Any) -> int:
    """Milliseconds since the epoch of an RFC 3339 time as the server writes it."""
    assert type(text) is str and text.endswith("Z"), text
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def server_now(client: RawClient) -> int:
    """The server's clock, in ms, from a PING."""
    reply = await client.request(3, {})
    assert reply["t"] == 105, reply
    return ms(reply["p"]["server_time"])


async def enqueue(client: RawClient, queue: str, **fields: Any) -> str:
    """ENQUEUE into `queue`; the job id."""
    return (await client.ok(14, {"q": queue, **fields}))["jid"]
