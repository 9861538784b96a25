"""A lean benchmark client: asyncio.Protocol, pipelined requests, pushes by callback.

Deliberately independent of the SDK so that the numbers measure the broker, with the
client doing the least work a real client must do: frame, pack, unpack, match by rid.
"""

import asyncio
import itertools
import os
import ssl
import struct
from collections.abc import Callable
from typing import Any

import msgpack

HEADER = struct.Struct(">I")


class BenchConnection(asyncio.Protocol):
    def __init__(self, on_push: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._rids = itertools.count(1)
        self._on_push = on_push
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        self.errors: list[dict[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for future in self._futures.values():
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            (length,) = HEADER.unpack_from(buffer, offset)
            end = offset + 4 + length
            if end > size:
                break
            message = msgpack.unpackb(buffer[offset + 4:end], raw=False)
            offset = end
            rid = message["rid"]
            if rid == "0":
                if self._on_push is not None:
                    self._on_push(message)
                continue
            future = self._futures.pop(rid, None)
            if future is None:
                continue
            if future is _IGNORED:
                if message["t"] == 102:
                    self.errors.append(message["p"])
                continue
            if callable(future):
                future(message)
            elif not future.done():
                future.set_result(message)
        del buffer[:offset]

    def send(self, message_type: int, payload: dict[str, Any], want_reply: bool = True,
             on_reply: Callable[[dict[str, Any]], None] | None = None,
             ) -> "asyncio.Future[dict[str, Any]] | None":
        rid = str(next(self._rids))
        body = msgpack.packb({"v": 2, "t": message_type, "rid": rid, "p": payload},
                             use_bin_type=True)
        self._out.append(HEADER.pack(len(body)) + body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        if on_reply is not None:
            self._futures[rid] = on_reply  # type: ignore[assignment]
            return None
        if not want_reply:
            self._futures[rid] = _IGNORED
            return None
        future = self.loop.create_future()
        self._futures[rid] = future
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and self._out:
            self.transport.writelines(self._out)
        self._out.clear()

    async def request(self, message_type: int, payload: dict[str, Any]) -> dict[str, Any]:
        future = self.send(message_type, payload)
        assert future is not None
        reply = await future
        if reply["t"] == 102:
            raise RuntimeError(f"ERR {reply['p']}")
        return reply["p"]


_IGNORED: Any = object()


async def connect(port: int, on_push: Callable[[dict[str, Any]], None] | None = None,
                  name: str = "bench") -> BenchConnection:
    """HELLO and REGISTER; over TLS trusting the CA in `$OVERHOP_BENCH_TLS_CA`, and logged
    in with SCRAM-SHA-256 as `$OVERHOP_BENCH_USER` / `$OVERHOP_BENCH_PASSWORD`, when set
    (the variables reach the benchmark's client processes too)."""
    loop = asyncio.get_running_loop()
    ca_file = os.environ.get("OVERHOP_BENCH_TLS_CA")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    _, conn = await loop.create_connection(lambda: BenchConnection(on_push), "127.0.0.1", port,
                                           ssl=context,
                                           server_hostname="127.0.0.1" if context else None)
    await conn.request(1, {})
    user = os.environ.get("OVERHOP_BENCH_USER")
    if user:
        await log_in(conn, user, os.environ["OVERHOP_BENCH_PASSWORD"])
    await conn.request(2, {"name": name})
    return conn


async def log_in(conn: BenchConnection, user: str, password: str) -> None:
    """The two AUTH messages (the client's PBKDF2 included, as every real client pays it)."""
    from overhop.auth import scram

    nonce = scram.new_nonce()
    first = scram.client_first_message(user, nonce)
    challenge = await conn.request(31, {"mechanism": "SCRAM-SHA-256", "data": first})
    final, signature = scram.client_final_message(password, first, challenge["data"], nonce)
    outcome = await conn.request(31, {"data": final})
    scram.verify_server_final(outcome["data"], signature)
