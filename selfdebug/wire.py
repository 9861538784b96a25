"""A raw protocol client: frames out and in, every one printed, nothing done on its own.

Framing and envelope decoding come from `overhop_client.codec`; there is no request
bookkeeping beyond rids counting up from 1, no automatic ACK or heartbeat: the walk decides
every message. Frames that arrive while waiting for a particular reply (pushes, other
replies) are kept, in order, for later.
"""

import asyncio
import itertools
from collections import deque
from typing import Any

from overhop_client.codec import Envelope, FrameDecoder, WireError, decode_envelope, encode_frame
from overhop_client.messages import PUSH_RID, MessageType

from selfdebug.frames import FramePrinter

READ_SIZE = 65536


class ConnectionClosed(Exception):
    """The server closed the connection (or sent bytes that are not frames)."""


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 printer: FramePrinter) -> None:
        self._reader = reader
        self._writer = writer
        self._printer = printer
        self._decoder = FrameDecoder()
        self._rids = itertools.count(1)
        self._received: deque[Envelope] = deque()
        self._eof = False

    @classmethod
    async def open(cls, host: str, port: int, printer: FramePrinter) -> "RawClient":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, printer)

    async def send(self, message_type: MessageType, payload: dict[str, Any]) -> str:
        """Send one request; its rid."""
        rid = str(next(self._rids))
        self._printer.frame("OUT", message_type, rid, payload)
        self._writer.write(encode_frame(message_type, rid, payload))
        await self._writer.drain()
        return rid

    async def reply(self, rid: str) -> Envelope:
        """The server's frame carrying `rid`; frames before it are kept for later."""
        return await self._take(lambda envelope: envelope.rid == rid)

    async def push(self) -> Envelope:
        """The next frame the server sent on its own (rid "0")."""
        return await self._take(lambda envelope: envelope.rid == PUSH_RID)

    async def wait_closed(self) -> None:
        """Return once the server has closed the connection (frames before are kept)."""
        while not self._eof:
            await self._read()

    def close(self) -> None:
        self._writer.close()

    async def _take(self, wanted: Any) -> Envelope:
        while True:
            for envelope in self._received:
                if wanted(envelope):
                    self._received.remove(envelope)
                    return envelope
            if self._eof:
                raise ConnectionClosed("the server closed the connection")
            await self._read()

    async def _read(self) -> None:
        data = await self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return
        try:
            frames = self._decoder.feed(data)
            for frame in frames:
                envelope = decode_envelope(frame)
                self._printer.frame("IN", envelope.type, envelope.rid, envelope.payload)
                self._received.append(envelope)
        except WireError as exc:
            self._eof = True
            raise ConnectionClosed(f"the server sent a bad frame: {exc}") from None
