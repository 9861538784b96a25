"""Encoding server frames and values: the envelope, raw fields spliced in as they are,
and values for storage. Pure; decoding is `codec.py`'s.

msgspec's encoder writes the same MessagePack as `msgpack.Packer(use_bin_type=True)` (the
smallest form of each integer, str8 strings, float64 floats; `tests/unit/test_encoding.py`
holds the two to the same bytes) in about half the time, and splices already-encoded
values (`msgspec.Raw`) without decoding them.
"""

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from overhop.wire.codec import FRAME_HEADER, RawValue
from overhop.wire.messages import PROTOCOL_VERSION

T = TypeVar("T")

# Subclasses of the built-in types, which msgpack packs as their base type and msgspec
# leaves to this hook (enums are msgspec's own: by value, as msgpack packs an IntEnum).
_BASES: tuple[type[Any], ...] = (bytes, str, int, float, list, tuple)


def _as_base_type(value: Any) -> Any:
    for base in _BASES:
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"can not serialize {type(value).__name__!r} object")


# One encoder per thread that encodes: this module encodes on the event loop thread only.
_encode = msgspec.msgpack.Encoder(enc_hook=_as_base_type).encode


def encode_frame(message_type: int, rid: str, payload: dict[str, Any]) -> bytes:
    """One complete frame (length prefix included) for a server message."""
    body = _encode({"v": PROTOCOL_VERSION, "t": message_type, "rid": rid, "p": payload})
    return FRAME_HEADER.pack(len(body)) + body


def encode_frame_with_raw(
    message_type: int, rid: str, payload: dict[str, Any], raw_fields: dict[str, bytes]
) -> bytes:
    """A frame whose payload map also holds already-encoded MessagePack values, after the
    ordinary fields: stored job payloads are kept as the bytes the client sent, and go out
    as they are, never decoded again."""
    fields = dict(payload)
    for key, encoded in raw_fields.items():
        fields[key] = msgspec.Raw(encoded)
    return encode_frame(message_type, rid, fields)


def fitting_prefix(items: Iterable[T], budget: int) -> tuple[list[T], bool]:
    """The longest prefix of `items` whose encodings total at most `budget` bytes (at least
    one item), and whether items were left out: keeps a listing reply within a frame."""
    taken: list[T] = []
    used = 0
    for item in items:
        used += len(_encode(item))
        if used > budget and taken:
            return taken, True
        taken.append(item)
    return taken, False


def encode_value(value: Any) -> bytes:
    """MessagePack bytes of one application value (a job payload, a result); a RawValue
    is those bytes already."""
    if type(value) is RawValue:
        return bytes(value)
    return _encode(value)
