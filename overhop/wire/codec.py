"""Framing and envelopes: bytes in, envelopes out; envelopes in, bytes out. Pure, no I/O.

A frame is a 4-byte big-endian length, then that many bytes of one MessagePack map, the
envelope `{v, t, rid, p}`. `FrameDecoder` checks a frame's declared length before it
buffers the body, so a peer cannot make the server hold more than one maximum-size frame.

Value rules (the draft's): integers in the signed 64-bit range, UTF-8 strings, bool, nil,
arrays, maps with string keys, binary. Floats and extension types are refused, except that
floats may appear inside the application's own data (`OPAQUE_FIELDS`: a job's payload, its
result, error details and progress), which the broker stores and returns without looking at.
Nesting deeper than `MAX_NESTING_DEPTH` is refused everywhere.
"""

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from overhop.errors import ErrorCode, ProtocolError
from overhop.wire.messages import CLIENT_TYPES, PROTOCOL_VERSION, PUSH_RID, MessageType

FRAME_HEADER = struct.Struct(">I")
# Deep enough for any realistic job payload, shallow enough that walking it is cheap and a
# hostile frame cannot exhaust the C unpacker's stack (msgpack gives up near 1,024).
MAX_NESTING_DEPTH = 64
# Request ids are correlation tokens, not data: 128 characters hold any UUID or counter scheme.
MAX_RID_LENGTH = 128
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Fields whose values are the application's data: floats allowed, stored as given.
OPAQUE_FIELDS: dict[int, frozenset[str]] = {
    MessageType.ENQUEUE: frozenset({"job_payload"}),
    # Each job's fields are checked by the handler (the integers as integers), so floats
    # are allowed throughout `jobs`, as inside each `job_payload`.
    MessageType.ENQUEUEMANY: frozenset({"jobs"}),
    MessageType.COMPLETE: frozenset({"result"}),
    MessageType.FAIL: frozenset({"error"}),
    MessageType.JOBBEAT: frozenset({"progress"}),
}
_NO_OPAQUE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Envelope:
    """One decoded client message."""

    type: MessageType
    rid: str
    payload: dict[str, Any]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, "extension types are not allowed")


class FrameDecoder:
    """Splits a byte stream into frame bodies; raises ProtocolError on a bad length."""

    __slots__ = ("_buffer", "_error", "_max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._error: ProtocolError | None = None
        self._max_frame_size = max_frame_size

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame body now complete, in order.

        A bad length header raises ProtocolError; frames completed before it in the same
        call are returned first, and the error is raised by `check()` (and by any later
        `feed`), so what reaches the server does not depend on how TCP split the stream.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 4:
            (length,) = FRAME_HEADER.unpack_from(buffer, offset)
            if length == 0 or length > self._max_frame_size:
                self._error = (
                    ProtocolError(ErrorCode.FRAME_EMPTY, "frame length 0") if length == 0
                    else ProtocolError(ErrorCode.FRAME_TOO_LARGE,
                                       f"frame length {length} exceeds {self._max_frame_size}")
                )
                del buffer[:]
                if not frames:
                    raise self._error
                return frames
            end = offset + 4 + length
            if end > available:
                break
            frames.append(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    def check(self) -> None:
        """Raise the framing error found after the frames last returned, if any."""
        if self._error is not None:
            raise self._error

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _check_value(value: Any, depth: int, floats_allowed: bool) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise ProtocolError(ErrorCode.MALFORMED, f"nesting deeper than {MAX_NESTING_DEPTH}")
    kind = type(value)
    if kind is str or kind is bool or kind is bytes or value is None:
        return
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise ProtocolError(ErrorCode.MALFORMED, "integer outside the signed 64-bit range")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
            _check_value(item, depth + 1, floats_allowed)
        return
    if kind is list:
        for item in value:
            _check_value(item, depth + 1, floats_allowed)
        return
    if kind is float and floats_allowed:
        return
    raise ProtocolError(ErrorCode.MALFORMED, f"{kind.__name__} values are not allowed")


def decode_envelope(frame: bytes) -> Envelope:
    """Parse one frame body into an Envelope, or raise ProtocolError saying what is wrong.

    The rid is read first, so that every error after it can be answered with it.
    """
    try:
        document = msgpack.unpackb(
            frame, raw=False, strict_map_key=False, ext_hook=_refuse_ext, timestamp=0,
            use_list=True,
        )
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise ProtocolError(ErrorCode.MALFORMED, "nesting too deep") from None
    except (ValueError, TypeError) as exc:  # FormatError, ExtraData, UnicodeDecodeError...
        raise ProtocolError(ErrorCode.MALFORMED, f"not valid MessagePack: {exc}") from None
    if type(document) is not dict:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "the envelope must be a map")
    rid = document.get("rid")
    readable_rid = rid if type(rid) is str and 0 < len(rid) <= MAX_RID_LENGTH else None
    try:
        return _decode_document(document, readable_rid)
    except ProtocolError as exc:
        exc.rid = readable_rid
        raise


def _decode_document(document: dict[Any, Any], rid: str | None) -> Envelope:
    payload = document.get("p")
    version = document.get("v")
    type_number = document.get("t")
    if not (document.keys() == _ENVELOPE_KEYS and rid is not None
            and type(version) is int and INT64_MIN <= version <= INT64_MAX
            and type(type_number) is int and INT64_MIN <= type_number <= INT64_MAX):
        # Not the usual envelope: check every value first, so what is wrong is reported
        # the same way whatever else the envelope holds.
        for key, value in document.items():
            if type(key) is not str:
                raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
            if key != "p":
                _check_value(value, 1, False)
    if type(payload) is msgpack.Timestamp:
        raise ProtocolError(ErrorCode.MALFORMED, "extension types are not allowed")
    if type(version) is not int:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "'v' must be an integer")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"protocol version {version} is not supported (2)"
        )
    if type(type_number) is not int:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "'t' must be an integer")
    if rid is None:
        raw_rid = document.get("rid")
        if type(raw_rid) is str and len(raw_rid) > MAX_RID_LENGTH:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"'rid' longer than {MAX_RID_LENGTH}")
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "'rid' must be a non-empty string")
    if type(payload) is not dict:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "'p' must be a map")
    message_type = _CLIENT_TYPES_BY_NUMBER.get(type_number)
    if message_type is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown client message type {type_number}")
    opaque = OPAQUE_FIELDS.get(message_type, _NO_OPAQUE)
    for key, item in payload.items():
        if type(key) is not str:
            raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
        if type(item) is not str:  # a string is always valid: no walk needed
            _check_value(item, 2, key in opaque)
    return Envelope(message_type, rid, payload)


_ENVELOPE_KEYS = frozenset({"v", "t", "rid", "p"})
_CLIENT_TYPES_BY_NUMBER: dict[int, MessageType] = {int(t): t for t in CLIENT_TYPES}



# One Packer per thread that packs (creating one per call costs more than the packing):
# this module packs on the event loop thread only; the writer thread has its own in
# `overhop.storage.records`.
_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack


def encode_frame(message_type: int, rid: str, payload: dict[str, Any]) -> bytes:
    """One complete frame (length prefix included) for a server message."""
    body = _pack({"v": PROTOCOL_VERSION, "t": message_type, "rid": rid, "p": payload})
    return FRAME_HEADER.pack(len(body)) + body


def encode_frame_with_raw(
    message_type: int, rid: str, payload: dict[str, Any], raw_fields: dict[str, bytes]
) -> bytes:
    """A frame whose payload map also holds already-encoded MessagePack values.

    Stored job payloads are kept as the bytes the client sent; this splices them into the
    outgoing map without decoding them again: `p` is the envelope's last key, so the
    envelope is the packed `{v, t, rid}` part, then the packed ordinary fields with their
    map header widened to count the raw fields too, then the raw fields.
    """
    head = _envelope_head(message_type, rid)
    fields = _pack(payload)
    count = len(payload)
    skip = 1 if count < 16 else 3 if count < 0x10000 else 5  # the packed map's header
    parts = [head, _map_header(count + len(raw_fields)), fields[skip:]]
    for key, encoded in raw_fields.items():
        parts.append(_pack(key))
        parts.append(encoded)
    body = b"".join(parts)
    return FRAME_HEADER.pack(len(body)) + body


_envelope_heads: dict[tuple[int, str], bytes] = {}


def _envelope_head(message_type: int, rid: str) -> bytes:
    """The packed envelope up to the value of `p` (cached for pushes, whose rid is fixed)."""
    head = _envelope_heads.get((message_type, rid))
    if head is None:
        head = _pack({"v": PROTOCOL_VERSION, "t": message_type, "rid": rid, "p": None})[:-1]
        if rid == PUSH_RID:
            _envelope_heads[(message_type, rid)] = head
    return head


def _map_header(size: int) -> bytes:
    if size < 16:
        return bytes((0x80 | size,))
    if size < 0x10000:
        return b"\xde" + struct.pack(">H", size)
    return b"\xdf" + struct.pack(">I", size)


def encode_value(value: Any) -> bytes:
    """MessagePack bytes of one application value (a job payload, a result)."""
    return _pack(value)


def decode_value(data: bytes) -> Any:
    """The value of bytes made by `encode_value`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
