"""Encoding server frames and values: the envelope, raw fields spliced in as they are,
and values for storage. Pure; decoding is `codec.py`'s."""

import struct
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgpack

from overhop.wire.codec import FRAME_HEADER, RawValue
from overhop.wire.messages import PROTOCOL_VERSION, PUSH_RID

T = TypeVar("T")


# One Packer per thread that packs (creating one per call costs more than the packing):
# this module packs on the event loop thread only; the writer thread has its own in
# `overhop.storage.records`.
_packer = msgpack.Packer(use_bin_type=True)
_pack: Callable[[Any], bytes] = _packer.pack


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


def fitting_prefix(items: Iterable[T], budget: int) -> tuple[list[T], bool]:
    """The longest prefix of `items` whose encodings total at most `budget` bytes (at least
    one item), and whether items were left out: keeps a listing reply within a frame."""
    taken: list[T] = []
    used = 0
    for item in items:
        used += len(_pack(item))
        if used > budget and taken:
            return taken, True
        taken.append(item)
    return taken, False


def encode_value(value: Any) -> bytes:
    """MessagePack bytes of one application value (a job payload, a result); a RawValue
    is those bytes already."""
    if type(value) is RawValue:
        return bytes(value)
    return _pack(value)
