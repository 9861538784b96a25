"""Checking MessagePack bytes without building them: where a value ends, and whether it
obeys the value rules. Pure, no I/O.

`decode_envelope` decodes small frames whole (C speed). A large frame could hold millions
of tiny values (8 MiB of nils or of empty arrays), which the C decoder would turn into
millions of objects and a walk would then visit: seconds on the event loop. This module
instead walks the bytes, stops at `MAX_FRAME_VALUES`, and reports each value's extent, so
the application's data (a job payload, a result) can be kept as the bytes the client sent.
"""

import re
import struct

from overhop.errors import ErrorCode, ProtocolError

# Values one frame may hold (every scalar, string, array, map, and map key counts one).
# Checking a value here costs about 0.3-0.5 us, so no frame is checked for more than about
# 15 ms; 32,768 values is far more than a job description needs, and holds an ENQUEUEMANY
# of 1000 jobs of about 30 values each.
MAX_FRAME_VALUES = 32_768
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")

# What each first byte starts, and how many bytes follow it before the value's data.
_ONE, _STR, _BIN, _MAP, _ARRAY, _FIXED, _FLOAT, _UINT64, _EXT, _RESERVED = range(10)
_KIND = [_RESERVED] * 256
_WIDTH = [0] * 256
for _b in range(256):
    if _b <= 0x7f or _b >= 0xe0 or _b in (0x80, 0x90, 0xc0, 0xc2, 0xc3):
        _KIND[_b] = _ONE  # fixints, nil, bools, the empty fixmap and fixarray
    elif 0xa0 <= _b <= 0xbf:
        _KIND[_b] = _STR
    elif 0x81 <= _b <= 0x8f:
        _KIND[_b] = _MAP
    elif 0x91 <= _b <= 0x9f:
        _KIND[_b] = _ARRAY
for _b, (_kind, _width) in {
        0xd9: (_STR, 1), 0xda: (_STR, 2), 0xdb: (_STR, 4),
        0xc4: (_BIN, 1), 0xc5: (_BIN, 2), 0xc6: (_BIN, 4),
        0xde: (_MAP, 2), 0xdf: (_MAP, 4), 0xdc: (_ARRAY, 2), 0xdd: (_ARRAY, 4),
        0xcc: (_FIXED, 1), 0xcd: (_FIXED, 2), 0xce: (_FIXED, 4), 0xcf: (_UINT64, 8),
        0xd0: (_FIXED, 1), 0xd1: (_FIXED, 2), 0xd2: (_FIXED, 4), 0xd3: (_FIXED, 8),
        0xca: (_FLOAT, 4), 0xcb: (_FLOAT, 8)}.items():
    _KIND[_b], _WIDTH[_b] = _kind, _width
for _b in (0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8):
    _KIND[_b] = _EXT
# A run of one-byte values inside an array is counted and skipped by the regex engine.
_ONE_BYTE = re.compile(rb"[\x00-\x80\x90\xc0\xc2\xc3\xe0-\xff]*")


class UnreadableFrame(ProtocolError):
    """The bytes are not MessagePack at all (truncated, a reserved byte, bad UTF-8): unlike a
    value that breaks a rule, nothing in the frame, its rid included, can be trusted."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.MALFORMED, message)


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, message)


def _unreadable(message: str) -> UnreadableFrame:
    return UnreadableFrame(message)


class Scanner:
    """Walks values of one frame, sharing the frame's budget of values."""

    __slots__ = ("data", "max_depth", "values_left")

    def __init__(self, data: bytes | bytearray, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.values_left = MAX_FRAME_VALUES

    def _length(self, pos: int, size: int) -> int:
        data = self.data
        if pos + size > len(data):
            raise _unreadable("not valid MessagePack: truncated")
        if size == 1:
            return data[pos]
        if size == 2:
            return int(_UINT16.unpack_from(data, pos)[0])
        return int(_UINT32.unpack_from(data, pos)[0])

    def skip(self, pos: int, depth: int, floats_allowed: bool) -> int:
        """Check the value starting at `pos` (at nesting `depth`); return where it ends.

        Raises ProtocolError: MALFORMED for anything the value rules refuse (an
        UnreadableFrame when the bytes are not MessagePack), TOO_MANY_VALUES once the
        frame has used up its budget.
        """
        data = self.data
        end = len(data)
        max_depth = self.max_depth
        budget = self.values_left
        stack: list[tuple[int, bool]] = []  # the enclosing levels: (values left, is a map)
        left, in_map, level = 1, False, depth  # values left here, a map's 2n, their depth
        while True:
            if not left:
                if not stack:
                    break
                left, in_map = stack.pop()
                level -= 1
                continue
            left -= 1
            if level > max_depth:
                raise _malformed(f"nesting deeper than {max_depth}")
            if pos >= end:
                raise _unreadable("not valid MessagePack: truncated")
            b = data[pos]
            kind = _KIND[b]
            if in_map and left & 1 and kind != _STR:  # a key (maps count 2n, keys first)
                raise _malformed("map keys must be strings")
            if kind == _ONE:
                pos += 1
                budget -= 1
                if left and not in_map and pos < end and _KIND[data[pos]] == _ONE:
                    # The one-byte values that follow in the array, in one regex match.
                    match = _ONE_BYTE.match(data, pos, pos + min(left, budget + 1))
                    run = match.end() - pos if match else 0
                    left -= run
                    budget -= run
                    pos += run
                if budget < 0:
                    break
                continue
            budget -= 1
            if budget < 0:
                break
            width = _WIDTH[b]
            if kind == _STR:
                if width:
                    start = pos + 1 + width
                    pos = start + self._length(pos + 1, width)
                else:
                    start = pos + 1
                    pos = start + (b & 0x1f)
                if pos > end:
                    raise _unreadable("not valid MessagePack: truncated")
                try:
                    data[start:pos].decode()
                except UnicodeDecodeError:
                    raise _unreadable("a string is not valid UTF-8") from None
            elif kind in (_MAP, _ARRAY):
                count = self._length(pos + 1, width) if width else b & 0x0f
                pos += 1 + width
                stack.append((left, in_map))
                left, in_map = (2 * count, True) if kind == _MAP else (count, False)
                level += 1
            elif kind == _FIXED:
                pos += 1 + width
            elif kind == _BIN:
                pos += 1 + width + self._length(pos + 1, width)
            elif kind == _UINT64:
                if pos + 1 < end and data[pos + 1] >= 0x80:
                    raise _malformed("integer outside the signed 64-bit range")
                pos += 9
            elif kind == _FLOAT:
                if not floats_allowed:
                    raise _malformed("float values are not allowed")
                pos += 1 + width
            elif kind == _EXT:
                raise _malformed("extension types are not allowed")
            else:
                raise _unreadable("not valid MessagePack: reserved byte 0xc1")
        self.values_left = budget
        if budget < 0:
            raise ProtocolError(ErrorCode.TOO_MANY_VALUES,
                                f"a frame may hold at most {MAX_FRAME_VALUES} values")
        if pos > end:
            raise _unreadable("not valid MessagePack: truncated")
        return pos

    def map_header(self, pos: int) -> tuple[int, int]:
        """(entries, position of the first key) of the map at `pos`, or (-1, pos)."""
        if pos >= len(self.data):
            raise _unreadable("not valid MessagePack: truncated")
        b = self.data[pos]
        if 0x80 <= b <= 0x8f:
            return b & 0x0f, pos + 1
        if b == 0xde or b == 0xdf:
            return self._length(pos + 1, _WIDTH[b]), pos + 1 + _WIDTH[b]
        return -1, pos
