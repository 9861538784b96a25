"""One client connection: bytes in, envelopes to handlers, replies and pushes out.

This is the only place exceptions become ERR frames. PING is answered here, before any
handler runs. Output is gathered and written once per loop iteration. Back-pressure: above
`server.write_buffer_high_bytes` of unsent output the connection stops reading from its
peer and the broker stops pushing to it; above `server.write_buffer_max_bytes` it is
dropped, so a peer that does not read can never grow the server's memory.
"""

import asyncio
import socket
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from overhop.broker.events import JobAssigned, SubscriptionEnded
from overhop.broker.workers import Worker
from overhop.clock import now_ms, to_rfc3339
from overhop.errors import ErrorCode, OverhopError, ProtocolError
from overhop.logs import VERBOSE, get_logger
from overhop.model.jobs import AttemptOutcome
from overhop.server.authentication import ConnectionAuth
from overhop.server.authorization import authorize, filter_reply
from overhop.server.context import ServerContext
from overhop.server.handlers import HANDLERS
from overhop.server.pushes import encode_quest, encode_subend
from overhop.session.states import Session
from overhop.wire.codec import FrameDecoder, decode_envelope, encode_frame
from overhop.wire.messages import PUSH_RID, MessageType

log = get_logger("overhop.connection")
_PING = MessageType.PING
_HELLO = MessageType.HELLO
_GOODBYE = MessageType.GOODBYE
_OK = MessageType.OK
_AUTH = MessageType.AUTH


class Connection(asyncio.Protocol):
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.conn_id = uuid.uuid4().hex[:12]
        self.session = Session(now_ms())
        self.worker: Worker | None = None
        self.decoder = FrameDecoder(ctx.config.wire.max_envelope_size_bytes)
        self.transport: asyncio.Transport | None = None
        self.log = log.bind(conn_id=self.conn_id)
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._high_water = ctx.config.server.write_buffer_high_bytes
        self._flush_scheduled = False
        self._closing = False
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self._verbose = False
        self.auth = ConnectionAuth(self)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        server = self.ctx.config.server
        if self.ctx.shutting_down or len(self.ctx.connections) >= server.max_connections:
            self.ctx.connections_refused += 1
            code = (ErrorCode.SHUTTING_DOWN if self.ctx.shutting_down
                    else ErrorCode.TOO_MANY_CONNECTIONS)
            transport.write(encode_frame(MessageType.ERR, PUSH_RID,
                                         {"code": code.value, "msg": "connection refused"}))
            transport.close()
            self._closing = True
            self.log.warning("connection_refused", code=code.value)
            return
        transport.set_write_buffer_limits(high=server.write_buffer_high_bytes,
                                          low=server.write_buffer_high_bytes // 4)
        if server.tcp_keepalive_seconds:
            enable_keepalive(transport.get_extra_info("socket"), server.tcp_keepalive_seconds)
        self.ctx.connections.add(self)
        self.log.debug("connection_opened", peer=str(transport.get_extra_info("peername")))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            self.reply_error(PUSH_RID, exc)
            return
        self._verbose = self.log.is_enabled_for(VERBOSE)
        for frame in frames:
            self._handle_frame(frame)
            if self._closing:
                return
        try:
            self.decoder.check()
        except ProtocolError as exc:
            self.reply_error(PUSH_RID, exc)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()
        if self.worker is not None:
            self.ctx.broker.peer_writable(self.worker)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.ctx.connections.discard(self)
        if self.worker is not None:
            self.ctx.broker.worker_gone(self.worker, AttemptOutcome.DISCONNECTED)
        self.log.debug("connection_closed")

    # -- Peer (what the broker may do) ---------------------------------------------------

    @property
    def writable(self) -> bool:
        """Below the high-water mark, counting output gathered but not yet written."""
        return not self._paused and not self._closing and self._out_bytes < self._high_water

    def send(self, frame: bytes) -> None:
        if self._closing and not self._out:
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def job_assigned(self, event: JobAssigned) -> None:
        self.send(encode_quest(event))

    def subscription_ended(self, event: SubscriptionEnded) -> None:
        self.send(encode_subend(event))

    def close(self) -> None:
        self._closing = True
        self._flush()
        if self.transport is not None:
            self.transport.close()

    # -- frames ----------------------------------------------------------------------------

    def _handle_frame(self, frame: bytes) -> None:
        if self.auth.failing:  # a failed login: its delayed ERR comes, nothing else
            return
        try:
            envelope = decode_envelope(frame)
        except ProtocolError as exc:
            self.reply_error(exc.rid or PUSH_RID, exc)
            return
        message_type = envelope.type
        rid = envelope.rid
        if self._verbose:
            self.log.verbose("frame_received", message=message_type.name, rid=rid)
        try:
            self.session.check(message_type)
            if message_type is _PING:
                self.send(encode_frame(MessageType.PONG, rid,
                                       {"server_time": to_rfc3339(now_ms())}))
                self.worker.last_seen_ms = now_ms()  # type: ignore[union-attr]
                return
            if message_type is _HELLO:
                self.session.advance(message_type, now_ms())
                self.send(encode_frame(MessageType.HI, rid, self.auth.hello()))
                return
            if message_type is _AUTH:
                self.auth.step(rid, envelope.payload)
                return
            if self.worker is not None:
                self.worker.last_seen_ms = now_ms()
            permissions = self.auth.permissions
            if permissions is not None:
                authorize(self.log, self.auth.user or "", permissions, message_type,
                          envelope.payload, self.worker)
            reply = HANDLERS[message_type](self.ctx, self, envelope.payload)
            if permissions is not None and type(reply) is dict:
                reply = filter_reply(permissions, message_type, reply)
        except OverhopError as exc:
            if message_type is MessageType.REGISTER:
                exc.closes = True
            self.reply_error(rid, exc)
            return
        except Exception:
            self.log.exception("handler_failed", message=message_type.name)
            self.reply_error(rid, OverhopError(ErrorCode.INTERNAL, "internal error"))
            return
        if type(reply) is dict:
            self.send(encode_frame(_OK, rid, reply))
        else:
            future, shape = reply
            future.add_done_callback(partial(self._reply_later, rid, shape))
        if message_type is _GOODBYE:
            self.close()

    def _reply_later(self, rid: str, shape: Callable[[Any], dict[str, Any]],
                     future: "asyncio.Future[Any]") -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self.send(encode_frame(_OK, rid, shape(future.result())))
        elif isinstance(exc, OverhopError):
            self.reply_error(rid, exc)
        else:
            self.log.error("request_failed", error=repr(exc))
            self.reply_error(rid, OverhopError(ErrorCode.INTERNAL, "internal error"))

    def reply_error(self, rid: str, exc: OverhopError) -> None:
        payload: dict[str, Any] = {"code": exc.code.value, "msg": exc.message}
        if exc.details is not None:
            payload["details"] = exc.details
        self.send(encode_frame(MessageType.ERR, rid, payload))
        if exc.closes:
            self.log.info("connection_closed_on_error", code=exc.code.value, msg=exc.message)
            self.close()

    def _flush(self) -> None:
        self._flush_scheduled = False
        was_over_mark = self._out_bytes >= self._high_water
        self._out_bytes = 0
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            return
        self.transport.writelines(self._out)
        self._out.clear()
        if was_over_mark and not self._paused and self.worker is not None:
            # Gathered output held dispatch back, and the socket took it all: serve again
            # (the transport calls resume_writing only after a pause_writing).
            self.ctx.broker.peer_writable(self.worker)
        if self.transport.get_write_buffer_size() > self.ctx.config.server.write_buffer_max_bytes:
            self.log.warning("slow_peer_dropped")
            self._closing = True
            self.transport.abort()

    # -- session helpers used by handlers and the heartbeat --------------------------------

    def become_worker(self, metadata: dict[str, Any]) -> Worker:
        self.session.advance(MessageType.REGISTER, now_ms())
        self.worker = self.ctx.broker.register_worker(self, metadata)
        self.log = self.log.bind(wid=self.worker.worker_id)
        self.log.info("worker_registered", **metadata)
        return self.worker

    def require_worker(self) -> Worker:
        if self.worker is None:
            raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, "not registered")
        return self.worker

    def say_goodbye(self, reason: str) -> None:
        worker = self.require_worker()
        self.log.info("worker_goodbye", reason=reason)
        self.ctx.broker.worker_gone(worker, AttemptOutcome.DISCONNECTED)

    def push(self, message_type: MessageType, payload: dict[str, Any]) -> None:
        self.send(encode_frame(message_type, PUSH_RID, payload))


# Unanswered keepalive probes after which the kernel drops a peer (Redis uses the same).
KEEPALIVE_PROBES = 3


def enable_keepalive(sock: socket.socket, idle_s: int) -> None:
    """Probe a peer silent for `idle_s`, then every third of that; after KEEPALIVE_PROBES
    unanswered probes the kernel closes the connection (`connection_lost` follows). Output
    left unacknowledged as long closes it too (TCP_USER_TIMEOUT): without it, a QUEST sent
    to a dead peer would hold the connection for the kernel's ~15 minutes of retransmits."""
    interval = max(1, idle_s // 3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", interval),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES),
                          ("TCP_USER_TIMEOUT", (idle_s + interval * KEEPALIVE_PROBES) * 1000)):
        if hasattr(socket, option):  # Linux has all four; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
