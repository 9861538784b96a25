"""The client's framing and value checks, without a server."""

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from overhop_client.codec import (
    FrameDecoder,
    WireError,
    check_value,
    decode_envelope,
    encode_frame,
)
from overhop_client.connection import parse_address
from overhop_client.messages import MessageType

payloads = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
        | st.binary(max_size=20),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4),
        max_leaves=20,
    ),
    max_size=5,
)


def server_frame(message_type: int, rid: str, payload: dict[str, Any]) -> bytes:
    body = msgpack.packb({"v": 2, "t": message_type, "rid": rid, "p": payload},
                         use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_encode_frame_is_a_length_prefixed_envelope() -> None:
    frame = encode_frame(MessageType.ENQUEUE, "7", {"q": "emails"})
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == {"v": 2, "t": 14, "rid": "7", "p": {"q": "emails"}}


@given(st.lists(st.tuples(st.integers(101, 107), st.text(min_size=1, max_size=10), payloads),
                max_size=6),
       st.integers(1, 50))
def test_frames_decode_the_same_however_the_bytes_are_split(
        messages: list[tuple[int, str, dict[str, Any]]], chunk: int) -> None:
    stream = b"".join(server_frame(t, rid, p) for t, rid, p in messages)
    decoder = FrameDecoder()
    envelopes = []
    for start in range(0, len(stream), chunk):
        for frame in decoder.feed(stream[start:start + chunk]):
            envelopes.append(decode_envelope(frame))
    assert [(e.type, e.rid, e.payload) for e in envelopes] == messages


def test_decoder_refuses_an_empty_frame() -> None:
    with pytest.raises(WireError, match="length 0"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_decoder_refuses_a_frame_above_its_limit_before_buffering_it() -> None:
    with pytest.raises(WireError, match="exceeds"):
        FrameDecoder(max_frame_size=100).feed(struct.pack(">I", 101))


@pytest.mark.parametrize("body", [
    msgpack.packb([1, 2]),
    msgpack.packb({"v": 3, "t": 101, "rid": "1", "p": {}}),
    msgpack.packb({"v": 2, "t": "OK", "rid": "1", "p": {}}),
    msgpack.packb({"v": 2, "t": 101, "rid": 1, "p": {}}),
    b"\xc1",
])
def test_decode_envelope_refuses_what_is_not_a_v2_envelope(body: bytes) -> None:
    with pytest.raises(WireError):
        decode_envelope(body)


@pytest.mark.parametrize("value", [
    None, True, 1.5, "text", b"bytes", [1, [2, {"a": None}]], (1, 2), {"k": {"n": -(2**63)}},
])
def test_check_value_accepts_what_the_server_accepts(value: Any) -> None:
    check_value(value)


@pytest.mark.parametrize(("value", "error"), [
    (2**63, ValueError),
    (-(2**63) - 1, ValueError),
    ({1: "integer key"}, TypeError),
    ({"nested": {2: "x"}}, TypeError),
    ({1, 2}, TypeError),
    (object(), TypeError),
])
def test_check_value_refuses_what_would_close_the_connection(value: Any,
                                                             error: type[Exception]) -> None:
    with pytest.raises(error):
        check_value(value)


def test_check_value_refuses_nesting_deeper_than_the_server_allows() -> None:
    deepest_allowed: Any = "leaf"
    for _ in range(62):
        deepest_allowed = [deepest_allowed]
    check_value(deepest_allowed)
    with pytest.raises(ValueError, match="nesting"):
        check_value([deepest_allowed])


@pytest.mark.parametrize(("url", "address"), [
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("overhop://broker.internal:1234", ("broker.internal", 1234)),
    ("broker.internal", ("broker.internal", 9876)),
    ("[::1]:9001", ("::1", 9001)),
])
def test_parse_address(url: str, address: tuple[str, int]) -> None:
    assert parse_address(url) == address


@pytest.mark.parametrize("url", ["http://host:1", "", "host:1/path"])
def test_parse_address_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_address(url)
