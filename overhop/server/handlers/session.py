"""REGISTER and GOODBYE: a connection becoming a worker, and leaving."""

from typing import TYPE_CHECKING, Any

from overhop.errors import ErrorCode, RequestError
from overhop.server.context import ServerContext
from overhop.wire.payloads import (
    parse_optional_int,
    parse_optional_map,
    parse_optional_str,
)

if TYPE_CHECKING:
    from overhop.server.connection import Connection

from overhop.server.handlers.jobs import QUEST_OVERHEAD_BYTES
from overhop.server.handlers.replies import EMPTY, Reply

# Worker metadata is for people reading STATUS: short strings, a few labels.
MAX_METADATA_STRING = 256


MAX_LABELS = 32


def handle_register(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    metadata: dict[str, Any] = {}
    for key in ("name", "host"):
        value = parse_optional_str(p, key, max_length=MAX_METADATA_STRING)
        if value is not None:
            metadata[key] = value
    pid = parse_optional_int(p, "pid", low=0)
    if pid is not None:
        metadata["pid"] = pid
    labels = parse_optional_map(p, "labels")
    if labels is not None:
        if len(labels) > MAX_LABELS or not all(
            len(k) <= MAX_METADATA_STRING and type(v) is str and len(v) <= MAX_METADATA_STRING
            for k, v in labels.items()
        ):
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               f"'labels' must map at most {MAX_LABELS} keys to short strings")
        metadata["labels"] = labels
    worker = conn.become_worker(metadata)
    config = ctx.config
    return {
        "wid": worker.worker_id,
        # What a client needs to pace itself: how long it may stay silent, how fast it
        # must ACK, and the sizes the server accepts.
        "limits": {
            "heartbeat_interval_ms": config.heartbeat.interval_ms,
            "stale_after_ms": config.worker.stale_after_ms,
            "ack_timeout_ms": config.dispatch.ack_timeout_ms,
            "max_envelope_size_bytes": config.wire.max_envelope_size_bytes,
            "max_job_payload_bytes": config.wire.max_envelope_size_bytes - QUEST_OVERHEAD_BYTES,
            "max_result_bytes": config.jobs.max_result_bytes,
            "max_log_line_bytes": config.jobs.max_log_line_bytes,
            "max_enqueue_batch": config.jobs.max_enqueue_batch,
            "max_requests_in_flight": config.server.max_requests_in_flight,
        },
    }


def handle_goodbye(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    reason = parse_optional_str(p, "reason", max_length=MAX_METADATA_STRING)
    conn.say_goodbye(reason or "")
    return EMPTY
