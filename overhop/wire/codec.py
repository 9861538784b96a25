"""Framing and envelopes: bytes in, envelopes out; envelopes in, bytes out. Pure, no I/O.

A frame is a 4-byte big-endian length, then that many bytes of one MessagePack map, the
envelope `{v, t, rid, p}`. `FrameDecoder` checks a frame's declared length before it
buffers the body, so a peer cannot make the server hold more than one maximum-size frame.

Value rules (the draft's): integers in the signed 64-bit range, UTF-8 strings, bool, nil,
arrays, maps with string keys, binary. Floats and extension types are refused, except that
floats may appear inside the application's own data (`OPAQUE_FIELDS`: a job's payload, its
result, error details and progress), which the broker stores and returns without looking at.
Nesting deeper than `MAX_NESTING_DEPTH` is refused everywhere.

Frames up to `FAST_DECODE_BYTES` are decoded whole by the C decoder and then walked. A
larger frame is first checked as bytes (`overhop.wire.scan`, at most `MAX_FRAME_VALUES`
values), and a job payload or a result in it (`RAW_FIELDS`) is kept as the bytes the client
sent (`RawValue`), never built: one frame of millions of tiny values cannot hold the loop.
"""

import struct
from typing import Any, TypeVar

import msgpack
import msgspec

from overhop.errors import ErrorCode, ProtocolError
from overhop.wire.limits import INT64_MAX, INT64_MIN, MAX_NESTING_DEPTH, MAX_RID_LENGTH
from overhop.wire.messages import CLIENT_TYPES, PROTOCOL_VERSION, MessageType
from overhop.wire.scan import Scanner, UnreadableFrame
from overhop.wire.typed import TypedEnvelope, decode_typed

T = TypeVar("T")
# A frame body: the decoder hands out its own buffer rather than copy a large frame.
Body = bytes | bytearray
FRAME_HEADER = struct.Struct(">I")

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
# Opaque fields that large frames keep as raw bytes: the handlers only store them.
RAW_FIELDS: dict[int, str] = {MessageType.ENQUEUE: "job_payload", MessageType.COMPLETE: "result"}
# Frames up to this size are decoded whole: even if every byte were its own value (8 MiB of
# empty arrays take 3.5 s), decoding and walking one costs under 10 ms.
FAST_DECODE_BYTES = 16 * 1024


class RawValue(bytes):
    """An application value kept as the (checked) MessagePack bytes the client sent."""


class Envelope(msgspec.Struct):
    """One decoded client message (a msgspec Struct: made in a third of a dataclass's time)."""

    type: MessageType
    rid: str
    payload: dict[str, Any]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, "extension types are not allowed")


class FrameDecoder:
    """Splits a byte stream into frame bodies; raises ProtocolError on a bad length.

    Two ways to use it: `feed` returns every frame a chunk completes; `append` then
    `next_frame` hands out one frame at a time, so a server that stops early (its peer's
    output is backed up) keeps the remaining frames as unparsed bytes, not as objects.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_size", "_offset")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._offset = 0  # bytes of `_buffer` already handed out by `next_frame`
        self._error: ProtocolError | None = None
        self._max_frame_size = max_frame_size

    def feed(self, data: bytes) -> list[Body]:
        """Add received bytes; return every frame body now complete, in order.

        A bad length header raises ProtocolError; frames completed before it in the same
        call are returned first, and the error is raised by `check()` (and by any later
        `feed`), so what reaches the server does not depend on how TCP split the stream.
        """
        if self._error is not None:
            raise self._error
        self.append(data)
        frames: list[Body] = []
        while True:
            try:
                frame = self.next_frame()
            except ProtocolError:
                if not frames:
                    raise
                return frames
            if frame is None:
                return frames
            frames.append(frame)

    def append(self, data: bytes) -> None:
        """Add received bytes without looking at them."""
        if self._error is None:
            self._buffer += data

    def next_frame(self) -> Body | None:
        """The next complete frame body (bytes, or a bytearray no one else holds), or None
        until more bytes arrive.

        Raises ProtocolError at a bad length header (and at every call after it).
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        offset = self._offset
        available = len(buffer) - offset
        if available >= 4:
            (length,) = FRAME_HEADER.unpack_from(buffer, offset)
            if length == 0 or length > self._max_frame_size:
                self._error = (
                    ProtocolError(ErrorCode.FRAME_EMPTY, "frame length 0") if length == 0
                    else ProtocolError(ErrorCode.FRAME_TOO_LARGE,
                                       f"frame length {length} exceeds {self._max_frame_size}")
                )
                self._buffer = bytearray()
                self._offset = 0
                raise self._error
            if available >= 4 + length:
                end = offset + 4 + length
                if end < len(buffer):
                    self._offset = end
                    return buffer[offset + 4 : end]  # a copy of its own: no need for bytes
                # The frame ends the buffer: hand the buffer itself out, not a copy (a
                # large frame usually arrives alone, and copying 8 MiB takes milliseconds).
                self._buffer = bytearray()
                self._offset = 0
                del buffer[: offset + 4]
                return buffer
        if offset:  # compact once the complete frames are out
            del buffer[:offset]
            self._offset = 0
        return None

    def check(self) -> None:
        """Raise the framing error found after the frames last returned, if any."""
        if self._error is not None:
            raise self._error

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as frames (a partial frame, or frames the
        caller has not asked for yet)."""
        return len(self._buffer) - self._offset

    @property
    def partial(self) -> bool:
        """True when the bytes held do not complete a frame (the peer is mid-frame)."""
        available = len(self._buffer) - self._offset
        if available == 0:
            return False
        if available < 4:
            return True
        length: int = FRAME_HEADER.unpack_from(self._buffer, self._offset)[0]
        return available < 4 + length


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


def decode_envelope(frame: Body) -> Envelope:
    """Parse one frame body into an Envelope, or raise ProtocolError saying what is wrong.

    A small frame that is a plainly valid envelope, as nearly all are, is decoded and
    checked by msgspec (`typed.py`); any other goes the checking way (`decode_checking`),
    which says what is wrong. The rid is read first, so that every error after it can be
    answered with it.
    """
    if len(frame) > FAST_DECODE_BYTES:
        return _decode_large(frame)
    typed = decode_typed(frame)
    if typed is not None:
        envelope = _plainly_valid(typed)
        if envelope is not None:
            return envelope
    return decode_checking(frame)


def decode_checking(frame: Body) -> Envelope:
    """`decode_envelope` of a small frame without the msgspec shortcut: msgpack, then every
    rule checked in Python, so that what is wrong is said precisely."""
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


def _plainly_valid(typed: TypedEnvelope) -> Envelope | None:
    """The envelope msgspec decoded (`typed.py`), once what its types cannot say holds: a
    client message type, and every value of `p` within the value rules. None otherwise:
    the checking path then says what is wrong."""
    message_type = _CLIENT_TYPES_BY_NUMBER.get(typed.t)
    if message_type is None:
        return None
    payload = typed.p
    for key, item in payload.items():
        kind = type(item)
        if kind is str or kind is bytes or kind is bool or item is None:
            continue
        if kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return None
        elif kind is dict or kind is list:
            if not _within_rules(item, 2, key in OPAQUE_FIELDS.get(message_type, _NO_OPAQUE)):
                return None
        else:  # a float or an extension type at the top of `p`
            return None
    return Envelope(message_type, typed.rid, payload)


def _within_rules(value: dict[Any, Any] | list[Any], depth: int, floats_allowed: bool
                  ) -> bool:
    """Whether an array or map keeps `_check_value`'s rules (the same walk, without saying
    what is wrong: the checking path says that)."""
    if depth >= MAX_NESTING_DEPTH and (depth > MAX_NESTING_DEPTH or value):
        return False  # it, or the items in it, nested too deep
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str or kind is bool or kind is bytes or item is None:
            continue
        if kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return False
        elif kind is dict or kind is list:
            if not _within_rules(item, depth + 1, floats_allowed):
                return False
        elif kind is not float or not floats_allowed:
            return False
    return True


def _unpack_checked(data: Body) -> Any:
    """A value already checked by the scanner (so small, or bounded in values)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def _decode_large(frame: Body) -> Envelope:
    """`decode_envelope` for a large frame: check the bytes first, build only what the
    server reads, keep a job payload or a result as raw bytes."""
    scanner = Scanner(frame, MAX_NESTING_DEPTH)
    count, pos = scanner.map_header(0)
    if count < 0:
        if scanner.skip(0, 0, False) != len(frame):
            raise UnreadableFrame("not valid MessagePack: extra data")
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "the envelope must be a map")
    document: dict[str, Any] = {}
    fields: dict[str, tuple[int, int]] = {}  # the extents of p's values
    rid: str | None = None
    type_number: Any = None
    try:
        for _ in range(count):
            key_end = scanner.skip(pos, 1, False)
            key = _unpack_checked(frame[pos:key_end])
            if type(key) is not str:
                raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
            if key != "p":
                pos, start = scanner.skip(key_end, 1, False), key_end
                # Keys other than v, t, rid and p are checked, then ignored.
                document[key] = _unpack_checked(frame[start:pos]) if key in _ENVELOPE_KEYS \
                    else None
                if key == "rid":
                    value = document[key]
                    rid = value if type(value) is str and 0 < len(value) <= MAX_RID_LENGTH \
                        else None
                elif key == "t":
                    type_number = document[key]
                continue
            fields.clear()
            entries, pos = scanner.map_header(key_end)
            if entries < 0:  # not a map: checked, then refused as BAD_ENVELOPE below
                pos, start = scanner.skip(key_end, 1, False), key_end
                document["p"] = _unpack_checked(frame[start:pos])
                continue
            document["p"] = fields
            for _ in range(entries):
                name_end = scanner.skip(pos, 2, False)
                name = _unpack_checked(frame[pos:name_end])
                if type(name) is not str:
                    raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
                pos = scanner.skip(name_end, 2, True)
                fields[name] = (name_end, pos)
        if pos != len(frame):
            raise UnreadableFrame("not valid MessagePack: extra data")
    except ProtocolError as exc:
        # A value breaking a rule is answered with the rid if it was read before it; bytes
        # that are not MessagePack, with none (as when a small frame does not decode).
        exc.rid = None if isinstance(exc, UnreadableFrame) else rid
        raise
    try:
        if document.get("p") is fields:
            document["p"] = _build_payload(frame, fields, type_number)
        return _decode_document(document, rid, checked=True)
    except ProtocolError as exc:
        exc.rid = rid
        raise


def _build_payload(frame: Body, fields: dict[str, tuple[int, int]], type_number: Any
                   ) -> dict[str, Any]:
    """p's fields: the raw field of this message type as RawValue, the rest decoded; floats
    outside the opaque fields refused (they were scanned before the type was known)."""
    message_type = _CLIENT_TYPES_BY_NUMBER.get(type_number) if type(type_number) is int \
        else None
    opaque = OPAQUE_FIELDS.get(message_type, _NO_OPAQUE) if message_type else _NO_OPAQUE
    raw = RAW_FIELDS.get(message_type) if message_type else None
    payload: dict[str, Any] = {}
    for name, (start, end) in fields.items():
        if name not in opaque:
            Scanner(frame, MAX_NESTING_DEPTH).skip(start, 2, False)
        payload[name] = (RawValue(frame[start:end]) if name == raw
                         else _unpack_checked(frame[start:end]))
    return payload


def _decode_document(document: dict[Any, Any], rid: str | None, checked: bool = False
                     ) -> Envelope:
    payload = document.get("p")
    version = document.get("v")
    type_number = document.get("t")
    if not checked and not (document.keys() == _ENVELOPE_KEYS and rid is not None
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
    if checked:
        return Envelope(message_type, rid, payload)
    opaque = OPAQUE_FIELDS.get(message_type, _NO_OPAQUE)
    for key, item in payload.items():
        if type(key) is not str:
            raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
        if type(item) is not str:  # a string is always valid: no walk needed
            _check_value(item, 2, key in opaque)
    return Envelope(message_type, rid, payload)


_ENVELOPE_KEYS = frozenset({"v", "t", "rid", "p"})
_CLIENT_TYPES_BY_NUMBER: dict[int, MessageType] = {int(t): t for t in CLIENT_TYPES}


def decode_value(data: bytes) -> Any:
    """The value of bytes made by `encode_value`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
