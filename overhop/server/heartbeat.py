"""The heartbeat: one periodic tick drives every time-based rule.

Each tick: anonymous connections past their lifetime are closed or sent IDENT, IDENT
deadlines are enforced, connections mid-frame for longer than `wire.frame_timeout_ms` are
closed, and the broker's maintenance runs (acknowledgement timeouts, leases,
stale workers, delayed jobs becoming waiting, retention). Delayed jobs do not wait for a
tick: the broker arms a timer for the earliest one (see `Broker._arm_due_timer`).
"""

import asyncio

from overhop.clock import now_ms, to_rfc3339
from overhop.errors import ErrorCode, ProtocolError
from overhop.logs import get_logger
from overhop.server.context import ServerContext
from overhop.session.states import SessionAction
from overhop.wire.messages import MessageType

log = get_logger("overhop.heartbeat")


def tick_sessions(ctx: ServerContext, now: int) -> None:
    limits = ctx.session_limits
    for conn in list(ctx.connections):
        if conn.frame_started_ms:
            conn.expire_partial_frame(now)
        if conn.worker is not None or conn.transport is None or conn.transport.is_closing():
            continue
        action = conn.session.plan_timeout(now, limits)
        if action is SessionAction.CLOSE:
            conn.log.info("unhelloed_connection_closed")
            conn.close()
        elif action is SessionAction.SEND_IDENT:
            deadline = conn.session.identify(now, limits)
            conn.push(MessageType.IDENT, {
                "register_timeout_seconds": limits.ident_register_timeout_ms // 1000,
                "reply_deadline": to_rfc3339(deadline),
            })
            conn.log.info("ident_sent")
        elif action is SessionAction.REGISTER_TIMEOUT:
            conn.reply_error("0", ProtocolError(ErrorCode.REGISTER_TIMEOUT,
                                                 "REGISTER did not arrive before reply_deadline"))


async def run_heartbeat(ctx: ServerContext) -> None:
    interval_s = ctx.config.heartbeat.interval_ms / 1000
    while True:
        await asyncio.sleep(interval_s)
        now = now_ms()
        try:
            tick_sessions(ctx, now)
            ctx.broker.tick(now)
        except Exception:
            log.exception("heartbeat_failed")
