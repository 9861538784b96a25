"""One client connection: bytes in, envelopes to handlers, replies and pushes out.

This is the only place exceptions become ERR frames. PING is answered here, before any
handler runs. Output is gathered and written once per loop iteration.

What one peer can make the server hold is bounded, whether or not it reads:
- input: frames are taken one at a time, and only while the peer's unsent output is below
  `server.write_buffer_high_bytes` and fewer than `server.max_requests_in_flight` requests
  (`server.max_request_bytes_in_flight` bytes) wait for their replies; otherwise reading
  stops and the rest stays unparsed bytes until replies drain. A turn handles at most
  FRAMES_PER_TURN frames (FRAMES_PER_TURN_ALONE while no other connection waits for a
  commit; BYTES_PER_TURN bytes) before other connections get the loop.
- partial frames: one must complete within `wire.frame_timeout_ms`, and the bytes held
  across all connections stay under `wire.max_buffered_input_bytes` (the connection
  holding the most is closed).
- output: above the high-water mark the broker stops pushing to it; above
  `server.write_buffer_max_bytes` (only one very large reply can get there) it is dropped.
"""

import asyncio
import socket
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from overhop.auth.permissions import Permission
from overhop.broker.events import (
    CancelRequested,
    JobAssigned,
    JobFinished,
    SubscriptionEnded,
    WorkerControlled,
)
from overhop.broker.workers import Worker
from overhop.clock import now_ms, to_rfc3339
from overhop.errors import DeferredRefusal, ErrorCode, OverhopError, ProtocolError
from overhop.logs import VERBOSE, get_logger
from overhop.model.jobs import AttemptOutcome
from overhop.server.authentication import ConnectionAuth
from overhop.server.authorization import authorize, filter_reply, is_listing
from overhop.server.context import ServerContext
from overhop.server.handlers import HANDLERS
from overhop.server.pushes import (
    encode_abort,
    encode_control,
    encode_quest,
    encode_result,
    encode_subend,
)
from overhop.session.states import Session
from overhop.wire.codec import Body, FrameDecoder, decode_envelope
from overhop.wire.encoding import encode_frame
from overhop.wire.messages import PUSH_RID, MessageType

# Frames one connection handles before the others get the loop, while connections share
# the writer (below): a burst holds the others up about a millisecond, and the writer's
# commits stay small, so another client's write does not queue behind thousands of this
# one's. Beside a flooding producer, a client's ENQUEUE -> QUEST -> COMPLETE took 114 ms
# (median) with turns of 512 frames throughout, 38 ms with these two bounds.
FRAMES_PER_TURN = 64
# ... and while no other connection waits for a commit: the writer takes what a turn
# submitted as one commit, and turns of 64 frames made four times as many commits (400 for
# 50,000 pipelined ENQUEUEs instead of 97) and 4-8 us more CPU per job.
FRAMES_PER_TURN_ALONE = 512
# While connections share the writer (two had requests waiting for commits within the last
# SHARED_FOR_S), each may have at most this many waiting: a competing client's write then
# queues behind at most this many of a flooding one's, not a whole window of them.
SHARED_REQUESTS_IN_FLIGHT = 256
# Longer than a commit, so a client between two of its writes still counts as waiting.
SHARED_FOR_S = 0.1
# Bytes of frames per turn: decoding costs up to about half a microsecond per byte (a frame
# of empty arrays), so 32 KiB is at most about 15 ms; a larger frame is a turn of its own.
BYTES_PER_TURN = 32 * 1024

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
        self._paused = False  # the transport's buffer is above its high-water mark
        self._reading_stopped = False  # we paused the transport's reading
        self._turn_scheduled = False
        server = ctx.config.server
        self._max_in_flight = server.max_requests_in_flight
        self._max_in_flight_bytes = server.max_request_bytes_in_flight
        self._in_flight = 0  # requests whose reply waits for a commit
        self._in_flight_bytes = 0
        self.held_bytes = 0  # received bytes not yet handed out as frames, counted in ctx
        self.frame_started_ms = 0  # when the partial frame now held began (0: none)
        self._loop = asyncio.get_running_loop()
        self._verbose = False
        self._max_buffered = ctx.config.wire.max_buffered_input_bytes
        self.auth = ConnectionAuth(self)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)  # uvloop's TCPTransport
        self.transport = tcp
        server = self.ctx.config.server
        if self.ctx.shutting_down or len(self.ctx.connections) >= server.max_connections:
            self.ctx.connections_refused += 1
            code = (ErrorCode.SHUTTING_DOWN if self.ctx.shutting_down
                    else ErrorCode.TOO_MANY_CONNECTIONS)
            tcp.write(encode_frame(MessageType.ERR, PUSH_RID,
                                   {"code": code.value, "msg": "connection refused"}))
            tcp.close()
            self._closing = True
            self.log.warning("connection_refused", code=code.value)
            return
        tcp.set_write_buffer_limits(high=server.write_buffer_high_bytes,
                                    low=server.write_buffer_high_bytes // 4)
        if server.tcp_keepalive_seconds:
            enable_keepalive(transport.get_extra_info("socket"), server.tcp_keepalive_seconds)
        self.ctx.connections.add(self)
        self.log.debug("connection_opened", peer=str(transport.get_extra_info("peername")))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.decoder.append(data)
        if self._turn_scheduled or self._reading_stopped:
            self._account_input()  # a turn is due: the frames wait for it
        else:
            self._process()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._paused = True
        self._stop_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._schedule_turn()
        if self.worker is not None:
            self.ctx.broker.peer_writable(self.worker)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._forget_input()
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

    def job_finished(self, event: JobFinished) -> None:
        self.send(encode_result(event))

    def worker_controlled(self, event: WorkerControlled) -> None:
        self.log.info("worker_controlled", action=event.action.value,
                      concurrency=event.concurrency, grace_ms=event.grace_ms)
        self.send(encode_control(event))

    def cancel_requested(self, event: CancelRequested) -> None:
        self.send(encode_abort(event))

    def close(self) -> None:
        self._closing = True
        self._forget_input()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    # -- input flow ------------------------------------------------------------------------

    def _process(self) -> None:
        """Handle the frames received, one turn's worth, while the peer may take more."""
        self._verbose = self.log.is_enabled_for(VERBOSE)
        decoder = self.decoder
        next_frame = decoder.next_frame
        high, most, most_bytes = self._high_water, self._max_in_flight, self._max_in_flight_bytes
        ctx = self.ctx
        if self._loop.time() < ctx.shared_until:  # others wait for commits: stay small
            turn, most = FRAMES_PER_TURN, min(most, SHARED_REQUESTS_IN_FLIGHT)
        else:
            turn = FRAMES_PER_TURN_ALONE
        frames = size = 0
        while True:
            if (self._paused or self._out_bytes >= high or self._in_flight >= most
                    or self._in_flight_bytes >= most_bytes or ctx.halted):
                self._stop_reading()  # resumed when output drains or replies go out
                break
            if frames >= turn or size >= BYTES_PER_TURN:
                self._stop_reading()
                self._schedule_turn()  # after the other connections' callbacks
                break
            try:
                frame = next_frame()
            except ProtocolError as exc:
                self.reply_error(PUSH_RID, exc)
                return
            if frame is None:
                self._start_reading()
                break
            frames += 1
            size += len(frame)
            self.frame_started_ms = 0
            self._handle_frame(frame)
            if self._closing:
                return
        self._account_input()

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled and not self._closing:
            self._turn_scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_scheduled = False
        if not self._closing:
            self._process()

    def _stop_reading(self) -> None:
        if not self._reading_stopped:
            self._reading_stopped = True
            self.frame_started_ms = 0  # the peer cannot finish a frame we do not read
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()

    def _start_reading(self) -> None:
        if self._reading_stopped and not self._closing and not self.ctx.halted:
            self._reading_stopped = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def halt(self) -> None:
        """Read nothing more from this peer (the server is going down)."""
        self._stop_reading()

    def _account_input(self) -> None:
        """Count the bytes held for this peer in the server's total, enforce the bound, and
        start the frame deadline if the peer is mid-frame."""
        held = self.decoder.buffered
        grown = held - self.held_bytes
        if grown:
            self.held_bytes = held
            self.ctx.input_buffered_bytes += grown
            if grown > 0 and self.ctx.input_buffered_bytes > self._max_buffered:
                shed_input(self.ctx, self._max_buffered)
        if (not self.frame_started_ms and not self._reading_stopped and not self._closing
                and self.decoder.partial):
            self.frame_started_ms = now_ms()

    def _forget_input(self) -> None:
        if self.held_bytes:
            self.ctx.input_buffered_bytes -= self.held_bytes
            self.held_bytes = 0
            self.decoder = FrameDecoder(self.ctx.config.wire.max_envelope_size_bytes)
        self.frame_started_ms = 0

    def expire_partial_frame(self, now: int) -> None:
        """Close the connection if the frame it is sending is overdue (heartbeat)."""
        timeout = self.ctx.config.wire.frame_timeout_ms
        if self.frame_started_ms and now - self.frame_started_ms >= timeout:
            self.log.warning("frame_timed_out", buffered=self.held_bytes)
            self.reply_error(PUSH_RID, ProtocolError(
                ErrorCode.FRAME_TIMEOUT, f"a frame was not complete within {timeout} ms"))

    # -- frames ----------------------------------------------------------------------------

    def _handle_frame(self, frame: Body) -> None:
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
                          envelope.payload, self.worker, self.ctx.broker.schedule_queue)
            reply = HANDLERS[message_type](self.ctx, self, envelope.payload)
            if permissions is not None and is_listing(message_type):
                if isinstance(reply, dict):
                    reply = filter_reply(permissions, message_type, reply)
                else:  # read from storage first: cut when it is read
                    future, shape = reply
                    reply = (future, partial(_filtered, permissions, message_type, shape))
        except DeferredRefusal as deferred:
            reply = (asyncio.ensure_future(deferred.decide()), _no_payload)
        except OverhopError as exc:
            if message_type is MessageType.REGISTER:
                exc.closes = True
            self.reply_error(rid, exc)
            return
        except Exception:
            self.log.exception("handler_failed", message=message_type.name)
            self.reply_error(rid, OverhopError(ErrorCode.INTERNAL, "internal error"))
            return
        if isinstance(reply, dict):
            self.send(encode_frame(_OK, rid, reply))
        else:
            future, shape = reply
            ctx = self.ctx
            if ctx.requests_in_flight > self._in_flight:  # another connection waits too
                ctx.shared_until = self._loop.time() + SHARED_FOR_S
            self._in_flight += 1
            self._in_flight_bytes += len(frame)
            ctx.requests_in_flight += 1
            future.add_done_callback(partial(self._reply_later, rid, shape, len(frame)))
        if message_type is _GOODBYE:
            self.close()

    def _reply_later(self, rid: str, shape: Callable[[Any], dict[str, Any]], size: int,
                     future: "asyncio.Future[Any]") -> None:
        self._in_flight -= 1
        self._in_flight_bytes -= size
        self.ctx.requests_in_flight -= 1
        if self._reading_stopped:
            self._schedule_turn()
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
        if was_over_mark and not self._paused:
            # Gathered output held reading and dispatch back, and the socket took it all:
            # go on (the transport calls resume_writing only after a pause_writing).
            self._schedule_turn()
            if self.worker is not None:
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
        # Debug: every CLI call registers too; a worker shows at INFO when it subscribes.
        self.log.debug("worker_registered", **metadata)
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


def shed_input(ctx: ServerContext, bound: int) -> None:
    """Close the connections holding the most unprocessed input until the total is within
    `bound` (`wire.max_buffered_input_bytes`): partial frames cannot pin unbounded memory."""
    while ctx.input_buffered_bytes > bound:
        victim = max(ctx.connections, key=lambda conn: conn.held_bytes, default=None)
        if victim is None or victim.held_bytes == 0:
            return
        victim.log.warning("input_buffer_full_closed", buffered=victim.held_bytes,
                           total=ctx.input_buffered_bytes)
        victim.reply_error(PUSH_RID, ProtocolError(
            ErrorCode.INPUT_BUFFER_FULL,
            "the server holds too many partial frames; this connection held the most"))


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


def _no_payload(_: object) -> dict[str, Any]:
    """The shape of a deferred refusal's reply (never used: it always fails)."""
    return {}


def _filtered(permissions: frozenset[Permission], message_type: MessageType,
              shape: Callable[[Any], dict[str, Any]], result: Any) -> dict[str, Any]:
    return filter_reply(permissions, message_type, shape(result))
