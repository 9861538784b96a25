"""Server frames are encoded by msgspec (`overhop/wire/encoding.py`): the bytes must be the
ones msgpack's Packer(use_bin_type=True) writes, which clients and the protocol's test
vectors were made with."""

import enum
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.wire.codec import RawValue
from overhop.wire.encoding import encode_frame, encode_frame_with_raw, encode_value, fitting_prefix
from overhop.wire.messages import PROTOCOL_VERSION, MessageType

_packer = msgpack.Packer(use_bin_type=True)


def reference_frame(message_type: int, rid: str, payload: dict[str, Any]) -> bytes:
    body = _packer.pack({"v": PROTOCOL_VERSION, "t": message_type, "rid": rid, "p": payload})
    return struct.pack(">I", len(body)) + body


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
    st.floats(width=32, allow_nan=False), st.text(), st.text(min_size=31, max_size=300),
    st.binary(), st.binary(min_size=255, max_size=300),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner) | st.dictionaries(st.text(max_size=8), inner)
    | st.dictionaries(st.integers(-5, 300), inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values), st.text(max_size=40))
def test_frames_are_the_bytes_msgpack_writes(payload: dict[str, Any], rid: str) -> None:
    assert encode_frame(MessageType.OK, rid, payload) == reference_frame(MessageType.OK, rid,
                                                                         payload)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values, max_size=20),
       st.dictionaries(st.text(max_size=6), values, max_size=3))
def test_raw_fields_go_out_as_the_stored_bytes(plain: dict[str, Any], raw: dict[str, Any]
                                              ) -> None:
    plain = {key: value for key, value in plain.items() if key not in raw}
    stored = {key: _packer.pack(value) for key, value in raw.items()}
    expected = reference_frame(MessageType.QUEST, "0", {**plain, **raw})
    assert encode_frame_with_raw(MessageType.QUEST, "0", plain, stored) == expected


def test_large_containers_and_strings_use_the_same_headers() -> None:
    for payload in ({"a": "x" * 70_000}, {"a": b"x" * 70_000}, {"a": list(range(70_000))},
                    {str(i): i for i in range(70_000)}):
        assert encode_frame(MessageType.OK, "1", payload) == reference_frame(MessageType.OK,
                                                                             "1", payload)


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 7


class Text(str):
    pass


class Number(int):
    pass


@pytest.mark.parametrize("value", [Color.RED, Level.HIGH, Text("t"), Number(5),
                                   RawValue(b"\x01"), (1, "two"), MessageType.QUEST])
def test_enums_subclasses_and_tuples_encode_as_msgpack_packs_them(value: Any) -> None:
    assert encode_frame(MessageType.OK, "1", {"k": value}) == reference_frame(
        MessageType.OK, "1", {"k": value})


def test_what_msgpack_cannot_encode_is_still_refused() -> None:
    with pytest.raises(TypeError):
        encode_frame(MessageType.OK, "1", {"k": object()})


def test_values_and_budgets_use_the_same_encoding() -> None:
    value = {"n": 2**40, "s": "é" * 40, "f": 1.5}
    assert encode_value(value) == _packer.pack(value)
    assert encode_value(RawValue(b"\x93\x01\x02\x03")) == b"\x93\x01\x02\x03"
    items = [{"name": "q" * 20}] * 10
    size = len(_packer.pack(items[0]))
    assert fitting_prefix(items, size * 3) == (items[:3], True)
