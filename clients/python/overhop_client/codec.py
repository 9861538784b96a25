"""Framing and envelopes, client side: pure, no I/O.

A frame is a 4-byte big-endian length, then that many bytes of one MessagePack map, the
envelope `{v, t, rid, p}`. `FrameDecoder` checks a frame's declared length before it
buffers the body. `check_value` refuses, before anything is sent, the application values
the server would refuse with a MALFORMED error that closes the whole connection (and so
fails every other request in flight on it): integers outside the signed 64-bit range, map
keys that are not strings, nesting deeper than the server allows, and types MessagePack
cannot carry.
"""

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# msgpack ships no type information; its two calls here are typed by what they return.
import msgpack

from overhop_client.messages import PROTOCOL_VERSION

FRAME_HEADER = struct.Struct(">I")
# The server refuses requests above its `wire.max_envelope_size_bytes` (at most 32 MiB),
# but its replies are not bounded by that setting (an LSJOB page of large payloads can be
# bigger), so the client accepts more; 256 MiB still stops a corrupt length from making it
# buffer without limit.
DEFAULT_MAX_FRAME_SIZE = 256 * 1024 * 1024
# The server's limit: nesting deeper than 64 is refused, counting the envelope map as 0,
# `p` as 1, and a payload field's value as 2.
MAX_NESTING_DEPTH = 64
FIELD_DEPTH = 2
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class WireError(Exception):
    """The server sent bytes that are not a valid frame or envelope, or a reply without a
    field it must have."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded server message."""

    type: int
    rid: str
    payload: dict[str, Any]
    """The decoded `p` map. Its values are whatever MessagePack held: the code that knows
    the message reads them (`results`, `jobs`, `parse_reply_str`)."""


class FrameDecoder:
    """Splits a byte stream into frame bodies; raises WireError on a bad length."""

    __slots__ = ("_buffer", "_max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self._max_frame_size = max_frame_size

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame body now complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 4:
            (length,) = FRAME_HEADER.unpack_from(buffer, offset)
            if length == 0:
                raise WireError("frame length 0")
            if length > self._max_frame_size:
                raise WireError(f"frame length {length} exceeds {self._max_frame_size}")
            end = offset + 4 + length
            if end > available:
                break
            frames.append(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames


def encode_frame(message_type: int, rid: str, payload: Mapping[str, object]) -> bytes:
    """One complete frame (length prefix included) for a client message."""
    body: bytes = msgpack.packb(
        {"v": PROTOCOL_VERSION, "t": message_type, "rid": rid, "p": payload}, use_bin_type=True
    )
    return FRAME_HEADER.pack(len(body)) + body


def decode_envelope(frame: bytes) -> Envelope:
    """Parse one frame body into an Envelope, or raise WireError saying what is wrong."""
    try:
        document = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.StackError) as exc:
        raise WireError(f"not valid MessagePack: {exc}") from None
    if type(document) is not dict:
        raise WireError("the envelope must be a map")
    if document.get("v") != PROTOCOL_VERSION:
        raise WireError(f"unsupported protocol version {document.get('v')!r}")
    message_type = document.get("t")
    rid = document.get("rid")
    payload = document.get("p", {})
    if type(message_type) is not int or type(rid) is not str or type(payload) is not dict:
        raise WireError("the envelope needs an integer 't', a string 'rid' and a map 'p'")
    return Envelope(message_type, rid, payload)


def parse_reply_str(reply: Mapping[str, object], key: str) -> str:
    """The string field `key` of a reply (an id the client returns); WireError when the
    server left it out or sent something else."""
    value = reply.get(key)
    if not isinstance(value, str):
        raise WireError(f"the reply's {key!r} must be a string, not {type(value).__name__}")
    return value


def check_value(value: object, *, depth: int = FIELD_DEPTH) -> None:
    """Raise TypeError or ValueError unless the server accepts `value` as application data.

    Floats are accepted: the server allows them in the application's own data (job
    payloads, results, error details, progress), which is the only place this is used.
    """
    if depth > MAX_NESTING_DEPTH:
        raise ValueError(f"nesting deeper than the server allows ({MAX_NESTING_DEPTH})")
    if value is None or isinstance(value, str | bool | float | bytes | bytearray):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {value} is outside the signed 64-bit range")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"map keys must be strings, not {type(key).__name__}")
            check_value(item, depth=depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_value(item, depth=depth + 1)
        return
    raise TypeError(f"{type(value).__name__} values cannot be sent to Overhop")
