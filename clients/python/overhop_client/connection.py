"""One connection to the server: requests out, replies matched by rid, pushes handed on.

An `asyncio.Protocol` (no streams): frames written in the same loop iteration go out in
one write, any number of requests may be in flight, and replies, which the server sends
as soon as each is ready (writes after their disk commit), resolve the future of the
request with the same rid. Pushes (rid "0") go to the `on_push` callback, scheduled with
`call_soon` so a failing callback cannot break the connection. When the connection
closes, every request still waiting fails with `ConnectionLost`.
"""

import asyncio
import itertools
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from overhop_client.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    Envelope,
    FrameDecoder,
    WireError,
    decode_envelope,
    encode_frame,
)
from overhop_client.errors import ConnectionLost, OverhopError, ServerUnreachable, error_from_wire
from overhop_client.messages import PUSH_RID, MessageType

DEFAULT_PORT = 9876
URL_SCHEME = "overhop"
TLS_URL_SCHEME = "overhops"

PushHandler = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class Address:
    """A parsed server URL: where, whether over TLS, and the credentials it carries."""

    host: str
    port: int
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never shown


def parse_url(url: str) -> Address:
    """`host:port`, `[::1]:port`, `host`, `overhop://[user[:password]@]host:port`, or
    `overhops://...` (TLS). The user and password are percent-decoded."""
    text = url if "://" in url else f"{URL_SCHEME}://{url}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in (URL_SCHEME, TLS_URL_SCHEME) or not parts.hostname
            or parts.path not in ("", "/")):
        raise ValueError(f"not an Overhop address: {redact(url)!r} (expected host:port or "
                         f"{URL_SCHEME}://host:port)")
    return Address(parts.hostname, port or DEFAULT_PORT, parts.scheme == TLS_URL_SCHEME,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None)


def parse_address(url: str) -> tuple[str, int]:
    """`host:port`, `overhop://host:port`, `host` or `[::1]:port` as (host, port)."""
    address = parse_url(url)
    return address.host, address.port


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostpart}"


class Connection(asyncio.Protocol):
    def __init__(self, on_push: PushHandler, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
                 ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_push = on_push
        self._decoder = FrameDecoder(max_frame_size)
        self._transport: asyncio.Transport | None = None
        self._rids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._error: OverhopError | None = None
        self._lost_cause: BaseException | None = None

    @classmethod
    async def open(cls, host: str, port: int, on_push: PushHandler,
                   max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                   tls: ssl.SSLContext | None = None) -> "Connection":
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: cls(on_push, max_frame_size), host, port, ssl=tls,
                server_hostname=host if tls else None)
        except ConnectionRefusedError:
            raise ServerUnreachable(f"{host}:{port}", "connection refused (is the server "
                                    "running?)") from None
        except ssl.SSLError:
            raise  # a TLS failure is not an unreachable server: its own message says why
        except OSError as exc:  # unreachable network, unknown host name
            raise ServerUnreachable(f"{host}:{port}", exc.strerror or str(exc)
                                    or type(exc).__name__) from exc
        return protocol

    # -- requests --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def writable(self) -> bool:
        """False while the socket's send buffer is above its high-water mark."""
        return self._writable.is_set()

    def request(self, message_type: MessageType | int, payload: Mapping[str, object]
                ) -> "asyncio.Future[dict[str, Any]]":
        """Send one request; the future resolves with the reply's payload or its ERR."""
        if self._transport is None or self.closed or self._transport.is_closing():
            raise self._lost()
        rid = str(next(self._rids))
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[rid] = future
        self._out.append(encode_frame(message_type, rid, payload))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    async def wait_writable(self) -> None:
        """Return once the socket's send buffer is below its high-water mark."""
        await self._writable.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self._decoder.feed(data):
                self._dispatch(decode_envelope(frame))
        except WireError as exc:
            self._lost_cause = exc
            self.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._lost_cause is None:
            self._lost_cause = exc
        self._out.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._lost())
        self._writable.set()
        if not self._closed.done():
            self._closed.set_result(None)

    # -- internals -------------------------------------------------------------------

    def _dispatch(self, envelope: Envelope) -> None:
        if envelope.rid == PUSH_RID:
            if envelope.type == MessageType.ERR:
                # A connection-level error (framing, REGISTER_TIMEOUT, refusal): the server
                # closes the connection next, so it is the answer to everything waiting.
                self._error = error_from_wire(envelope.payload)
                pending, self._pending = self._pending, {}
                for future in pending.values():
                    if not future.done():
                        future.set_exception(self._error)
            else:
                self._loop.call_soon(self._on_push, envelope.type, envelope.payload)
            return
        if envelope.rid not in self._pending:
            return  # the caller stopped waiting (cancelled, timed out)
        future = self._pending.pop(envelope.rid)
        if future.done():
            return  # the caller stopped waiting (cancelled, timed out)
        if envelope.type == MessageType.ERR:
            future.set_exception(error_from_wire(envelope.payload))
        else:
            future.set_result(envelope.payload)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(self._out)
        self._out.clear()

    def _lost(self) -> ConnectionLost:
        lost = ConnectionLost(error=self._error)
        if self._lost_cause is not None:
            lost.__cause__ = self._lost_cause
        return lost
