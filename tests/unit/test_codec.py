"""Framing and envelopes: FrameDecoder, decode_envelope, encode_frame, encode_frame_with_raw.

Fuzz invariant (h11's): any bytes, fed whole or in any chunks, give envelopes or raise
ProtocolError, never anything else.
"""

import itertools
import struct
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.errors import ErrorCode, ProtocolError
from overhop.wire import codec
from overhop.wire.codec import (
    INT64_MAX,
    INT64_MIN,
    MAX_NESTING_DEPTH,
    MAX_RID_LENGTH,
    OPAQUE_FIELDS,
    Envelope,
    FrameDecoder,
    decode_envelope,
)
from overhop.wire.encoding import encode_frame, encode_frame_with_raw, encode_value
from overhop.wire.messages import CLIENT_TYPES, PROTOCOL_VERSION, MessageType
from overhop.wire.scan import MAX_FRAME_VALUES

MAX_FRAME = 65536  # the smallest wire.max_envelope_size_bytes allowed
RID = "r-1"
RAW_FIELDS = dict(codec.RAW_FIELDS)
CLIENT_MESSAGES = sorted(CLIENT_TYPES)
SERVER_MESSAGES = sorted(set(MessageType) - CLIENT_TYPES)
OPAQUE_PAIRS = [(t, field) for t, fields in OPAQUE_FIELDS.items() for field in sorted(fields)]


def pack(document: Any, **options: Any) -> bytes:
    """MessagePack bytes as a client would send them (bin type, no datetime conversion)."""
    return msgpack.packb(document, use_bin_type=True, datetime=False, **options)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def envelope_doc(t: int = MessageType.PING, rid: Any = RID, p: Any = None,
                 **extra: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "t": t, "rid": rid, "p": {} if p is None else p, **extra}


def body_of(t: int = MessageType.PING, rid: Any = RID, p: Any = None, **extra: Any) -> bytes:
    return pack(envelope_doc(t, rid, p, **extra))


def refused(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(body)
    return caught.value


def without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def same(left: Any, right: Any) -> bool:
    """Equality that also requires equal types, so True != 1 and b"a" != "a"."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


def wrap(leaf: Any, levels: int, kind: str = "list") -> Any:
    for _ in range(levels):
        leaf = [leaf] if kind == "list" else {"k": leaf}
    return leaf


def at_depth(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    """A value for p["x"] whose innermost `leaf` sits inside `depth` containers.

    The envelope map is the first container and p the second, so p["x"] is at depth 2.
    """
    return wrap(leaf, depth - 2, kind)


def cuts(data: bytes, points: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(decoder: FrameDecoder, chunks: Iterable[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


def frames_before_error(chunks: Iterable[bytes]) -> tuple[list[bytes], ErrorCode | None]:
    """Every frame the decoder hands out before its first error, and that error's code.

    A final empty feed gives a decoder that defers an error to its next call the chance
    to report it.
    """
    decoder = FrameDecoder(MAX_FRAME)
    frames: list[bytes] = []
    try:
        for chunk in [*chunks, b""]:
            frames.extend(decoder.feed(chunk))
    except ProtocolError as exc:
        return frames, exc.code
    return frames, None


# -- FrameDecoder ---------------------------------------------------------------------------------

STREAM_BODIES = [
    body_of(MessageType.HELLO, "1"),
    body_of(MessageType.ENQUEUE, "2", {"q": "emails", "job_payload": {"blob": b"\x00" * 300}}),
    body_of(MessageType.PING, "3"),
]
STREAM = b"".join(frame(b) for b in STREAM_BODIES)


def test_one_frame_fed_whole() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    assert decoder.feed(frame(STREAM_BODIES[0])) == [STREAM_BODIES[0]]
    assert decoder.buffered == 0


def test_several_frames_in_one_chunk_keep_their_order() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    partial = frame(STREAM_BODIES[1])[:7]
    assert decoder.feed(STREAM + partial) == STREAM_BODIES
    assert decoder.buffered == len(partial)
    assert decoder.feed(frame(STREAM_BODIES[1])[7:]) == [STREAM_BODIES[1]]
    assert decoder.buffered == 0


def test_every_split_point_gives_the_same_frames() -> None:
    for point in range(len(STREAM) + 1):
        decoder = FrameDecoder(MAX_FRAME)
        assert feed_all(decoder, cuts(STREAM, [point])) == STREAM_BODIES, point
        assert decoder.buffered == 0


def test_one_byte_at_a_time_gives_the_same_envelopes() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    frames = feed_all(decoder, (bytes((b,)) for b in STREAM))
    assert frames == STREAM_BODIES
    envelopes = [decode_envelope(f) for f in frames]
    assert [(e.type, e.rid) for e in envelopes] == [
        (MessageType.HELLO, "1"), (MessageType.ENQUEUE, "2"), (MessageType.PING, "3")
    ]
    assert envelopes[1].payload == {"q": "emails", "job_payload": {"blob": b"\x00" * 300}}


def test_empty_feed_returns_nothing() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"") == []
    assert decoder.buffered == 2


def test_zero_length_frame() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b"\x00\x00\x00\x00")
    assert caught.value.code is ErrorCode.FRAME_EMPTY
    assert caught.value.closes


def test_zero_length_frame_after_a_good_one_fed_separately() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    assert decoder.feed(frame(STREAM_BODIES[0])) == [STREAM_BODIES[0]]
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b"\x00\x00\x00\x00")
    assert caught.value.code is ErrorCode.FRAME_EMPTY


@pytest.mark.parametrize("declared", [MAX_FRAME + 1, 2**24, 2**32 - 1])
def test_oversized_length_is_refused_from_the_header_alone(declared: int) -> None:
    decoder = FrameDecoder(MAX_FRAME)
    header = struct.pack(">I", declared)
    for i in range(3):
        assert decoder.feed(header[i : i + 1]) == []
        assert decoder.buffered == i + 1
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(header[3:])
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered <= 4  # no body was needed, none was held


def test_oversized_length_with_the_start_of_a_body_buffers_only_that_chunk() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(struct.pack(">I", MAX_FRAME + 1) + b"\x80" * 16)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered <= 4 + 16


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    body = b"\xc0" * MAX_FRAME
    header = struct.pack(">I", MAX_FRAME)
    assert decoder.feed(header) == []
    assert decoder.feed(body[:-1]) == []
    assert decoder.feed(body[-1:]) == [body]
    assert decoder.buffered == 0


def test_maximum_size_envelope_decodes() -> None:
    def body_with(blob: bytes) -> bytes:
        return body_of(MessageType.ENQUEUE, RID, {"q": "big", "job_payload": blob})

    # 300 bytes already take a bin16 header, the one the final blob needs.
    overhead = len(body_with(b"\xab" * 300)) - 300
    blob = b"\xab" * (MAX_FRAME - overhead)
    body = body_with(blob)
    assert len(body) == MAX_FRAME
    (got,) = FrameDecoder(MAX_FRAME).feed(frame(body))
    value = decode_envelope(got).payload["job_payload"]  # kept raw: the frame is large
    assert (msgpack.unpackb(value) if type(value) is codec.RawValue else value) == blob
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder(MAX_FRAME - 1).feed(frame(body))
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("bad_header", [b"\x00\x00\x00\x00", struct.pack(">I", MAX_FRAME + 1)],
                         ids=["zero-length", "too-large"])
def test_frames_before_a_bad_header_do_not_depend_on_chunking(bad_header: bytes) -> None:
    stream = STREAM + bad_header
    one_at_a_time = frames_before_error(bytes((b,)) for b in stream)
    assert one_at_a_time[0] == STREAM_BODIES
    assert frames_before_error([stream]) == one_at_a_time


# -- decode_envelope: the envelope ------------------------------------------------------------


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: m.name)
def test_every_client_type_decodes(message: MessageType) -> None:
    got = decode_envelope(body_of(message, "abc", {"k": [1, "two", None, True, b"\x03"]}))
    assert got == Envelope(message, "abc", {"k": [1, "two", None, True, b"\x03"]})
    assert type(got.type) is MessageType


@pytest.mark.parametrize("document", [
    [2, 3, RID, {}], 2, "envelope", None, b"\x84", True,
], ids=["array", "int", "str", "nil", "bin", "bool"])
def test_envelope_must_be_a_map(document: Any) -> None:
    error = refused(pack(document))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.rid is None


@pytest.mark.parametrize("key", ["v", "t", "rid", "p"])
def test_missing_envelope_key(key: str) -> None:
    assert refused(pack(without(envelope_doc(), key))).code is ErrorCode.BAD_ENVELOPE


@pytest.mark.parametrize("value", ["2", None, True, False, [2], {}, b"\x02"])
def test_bad_v(value: Any) -> None:
    assert refused(pack(envelope_doc() | {"v": value})).code is ErrorCode.BAD_ENVELOPE


@pytest.mark.parametrize("value", [0, 1, 3, -2, 100, INT64_MAX, INT64_MIN])
def test_unsupported_version(value: int) -> None:
    error = refused(pack(envelope_doc() | {"v": value}))
    assert error.code is ErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize("value", ["3", None, True, [3], {}, b"\x03"])
def test_bad_t(value: Any) -> None:
    assert refused(body_of(t=value)).code is ErrorCode.BAD_ENVELOPE


@pytest.mark.parametrize("value", [0, -1, 36, 99, 100, 108, 255, INT64_MAX, INT64_MIN])
def test_unknown_type(value: int) -> None:
    error = refused(body_of(t=value))
    assert error.code is ErrorCode.UNKNOWN_TYPE
    assert error.rid == RID


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m.name)
def test_server_types_from_a_client_are_unknown(message: MessageType) -> None:
    error = refused(body_of(t=message))
    assert error.code is ErrorCode.UNKNOWN_TYPE
    assert error.rid == RID


@pytest.mark.parametrize("value", ["", 1, None, True, b"r-1", ["r"], {"r": 1}])
def test_bad_rid(value: Any) -> None:
    error = refused(body_of(rid=value))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.rid is None


def test_rid_length_limit() -> None:
    longest = "r" * MAX_RID_LENGTH
    assert decode_envelope(body_of(rid=longest)).rid == longest
    error = refused(body_of(rid=longest + "r"))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.rid is None


@pytest.mark.parametrize("value", [[], None, "p", 1, True, b"\x80"])
def test_bad_p(value: Any) -> None:
    error = refused(pack(envelope_doc() | {"p": value}))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.rid == RID


def test_unknown_extra_envelope_keys_are_ignored() -> None:
    document = {"trace": "abc", "v": 2, "t": 6, "x-hop": [1, {"a": b"\x00"}], "rid": RID,
                "p": {"q": "emails", "credits": 3}, "zz": None}
    assert decode_envelope(pack(document)) == Envelope(
        MessageType.SUBSCRIBE, RID, {"q": "emails", "credits": 3}
    )


def test_envelope_key_order_does_not_matter() -> None:
    document = {"p": {"q": "a"}, "rid": RID, "t": 4, "v": 2}
    assert decode_envelope(pack(document)) == Envelope(MessageType.QUEUE, RID, {"q": "a"})


# -- decode_envelope: value rules ---------------------------------------------------------------


@pytest.mark.parametrize("single", [False, True], ids=["float64", "float32"])
@pytest.mark.parametrize("payload", [
    {"credits": 1.0}, {"x": [1, 2.5]}, {"x": {"y": {"z": -0.0}}}, {"x": float("inf")},
])
def test_float_outside_application_data_is_malformed(payload: dict[str, Any],
                                                     single: bool) -> None:
    error = refused(pack(envelope_doc(MessageType.SUBSCRIBE, RID, payload),
                         use_single_float=single))
    assert error.code is ErrorCode.MALFORMED
    assert error.rid == RID


@pytest.mark.parametrize("single", [False, True], ids=["float64", "float32"])
@pytest.mark.parametrize(("message", "field"), OPAQUE_PAIRS, ids=lambda x: str(x))
def test_floats_inside_application_data_are_accepted(message: MessageType, field: str,
                                                     single: bool) -> None:
    value = {"score": 0.5, "series": [1.25, -2.0, {"deep": [3.5]}], "n": 1}
    for data in (value, 0.75):
        got = decode_envelope(pack(envelope_doc(message, RID, {field: data, "other": 1}),
                                   use_single_float=single))
        assert got.payload == {field: data, "other": 1}


def test_opaque_fields_are_the_documented_ones() -> None:
    assert sorted((int(t), f) for t, f in OPAQUE_PAIRS) == [
        (MessageType.ENQUEUE, "job_payload"), (MessageType.COMPLETE, "result"),
        (MessageType.FAIL, "error"), (MessageType.JOBBEAT, "progress"),
        (MessageType.ENQUEUEMANY, "jobs"),
    ]


@pytest.mark.parametrize(("message", "field"), [
    (MessageType.ENQUEUE, "result"), (MessageType.COMPLETE, "job_payload"),
    (MessageType.FAIL, "progress"), (MessageType.JOBBEAT, "error"),
    (MessageType.ENQUEUE, "q"), (MessageType.PING, "job_payload"),
    (MessageType.ENQUEUEMANY, "job_payload"), (MessageType.ENQUEUE, "jobs"),
])
def test_opaque_field_names_of_another_type_keep_floats_out(message: MessageType,
                                                            field: str) -> None:
    assert refused(body_of(message, RID, {field: 1.5})).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("field", ["v", "t", "rid"])
def test_float_in_an_envelope_field_is_refused(field: str) -> None:
    # Either code is a refusal; which check runs first is the codec's choice.
    error = refused(pack(envelope_doc() | {field: 2.0}))
    assert error.code in (ErrorCode.MALFORMED, ErrorCode.BAD_ENVELOPE)




@pytest.mark.parametrize("value", [
    pytest.param(1.5, id="float"),
    pytest.param(2**63, id="uint64"),
    pytest.param(msgpack.Timestamp(1), id="timestamp"),
    pytest.param(at_depth(100), id="too-deep"),
])
def test_value_rules_apply_to_extra_envelope_keys(value: Any) -> None:
    error = refused(pack(envelope_doc(extra=value)))
    assert error.code is ErrorCode.MALFORMED


@pytest.mark.parametrize("code", [0, 5, 127, -2, -128])
@pytest.mark.parametrize("where", ["payload", "nested", "opaque", "v", "p", "extra", "key"])
def test_extension_types_are_malformed_anywhere(code: int, where: str) -> None:
    ext = msgpack.ExtType(code, b"\x01\x02") if code >= 0 else None
    packed_ext = pack(ext) if ext is not None else b"\xd5" + struct.pack(">b", code) + b"\x01\x02"
    documents = {
        "payload": envelope_doc(p={"x": "MARKER"}),
        "nested": envelope_doc(p={"x": [{"y": "MARKER"}]}),
        "opaque": envelope_doc(MessageType.ENQUEUE, p={"q": "a", "job_payload": "MARKER"}),
        "v": envelope_doc() | {"v": "MARKER"},
        "p": envelope_doc(p="MARKER"),
        "extra": envelope_doc(extra="MARKER"),
        "key": envelope_doc(p={"MARKER": 1}),
    }
    assert refused(splice(documents[where], packed_ext)).code is ErrorCode.MALFORMED


TIMESTAMPS = [
    pytest.param(b"\xd6\xff" + struct.pack(">I", 1_700_000_000), id="ts32"),
    pytest.param(b"\xd7\xff" + struct.pack(">Q", (5 << 34) | 1_700_000_000), id="ts64"),
    pytest.param(b"\xc7\x0c\xff" + struct.pack(">Iq", 5, -1), id="ts96"),
    pytest.param(b"\xc7\x03\xff\x00\x00\x00", id="bad-length"),
    pytest.param(b"\xd7\xff" + b"\xff" * 8, id="bad-nanoseconds"),
]


def splice(document: dict[str, Any], value: bytes) -> bytes:
    """The document packed with the string "MARKER" replaced by raw MessagePack bytes."""
    marker = pack("MARKER")
    body = pack(document)
    assert body.count(marker) == 1
    return body.replace(marker, value)


@pytest.mark.parametrize("timestamp", TIMESTAMPS)
@pytest.mark.parametrize("payload", [
    {"x": "MARKER"}, {"x": [1, {"y": "MARKER"}]}, {"q": "a", "job_payload": "MARKER"},
    {"q": "a", "job_payload": {"when": ["MARKER"]}},
], ids=["payload", "nested", "opaque", "opaque-nested"])
def test_timestamp_extension_is_malformed_in_the_payload(payload: dict[str, Any],
                                                         timestamp: bytes) -> None:
    body = splice(envelope_doc(MessageType.ENQUEUE, RID, payload), timestamp)
    assert refused(body).code is ErrorCode.MALFORMED




@pytest.mark.parametrize("field", ["v", "t", "rid", "p", "extra"])
def test_timestamp_extension_is_malformed_in_the_envelope(field: str) -> None:
    document = envelope_doc() | {field: "MARKER"}
    body = splice(document, b"\xd6\xff" + struct.pack(">I", 1_700_000_000))
    assert refused(body).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
@pytest.mark.parametrize("place", ["payload", "nested", "opaque"])
def test_integers_above_int64_are_malformed(value: int, place: str) -> None:
    payload = {
        "payload": {"n": value},
        "nested": {"n": [{"m": value}]},
        "opaque": {"q": "a", "job_payload": {"n": value}},
    }[place]
    error = refused(body_of(MessageType.ENQUEUE, RID, payload))
    assert error.code is ErrorCode.MALFORMED
    assert error.rid == RID


def test_int64_bounds_are_accepted_in_any_encoding() -> None:
    payload = {"min": INT64_MIN, "max": INT64_MAX, "neg": -1, "zero": 0}
    assert decode_envelope(body_of(p=payload)).payload == payload
    # 1 written as uint64 (0xcf) and as int64 (0xd3): the value counts, not the width.
    body = splice(envelope_doc(p={"n": "MARKER"}), b"\xcf" + struct.pack(">Q", 1))
    assert decode_envelope(body).payload == {"n": 1}
    body = splice(envelope_doc(p={"n": "MARKER"}), b"\xd3" + struct.pack(">q", INT64_MIN))
    assert decode_envelope(body).payload == {"n": INT64_MIN}


@pytest.mark.parametrize("field", ["v", "t"])
def test_uint64_in_an_envelope_field_is_refused(field: str) -> None:
    error = refused(pack(envelope_doc() | {field: 2**64 - 1}))
    assert error.code in (ErrorCode.MALFORMED, ErrorCode.UNSUPPORTED_VERSION,
                          ErrorCode.UNKNOWN_TYPE)


@pytest.mark.parametrize("key", [1, -1, b"k", True, None, 1.5],
                         ids=["int", "negint", "bin", "bool", "nil", "float"])
@pytest.mark.parametrize("place", ["payload", "nested", "in-list", "opaque", "envelope"])
def test_non_string_map_keys_are_malformed(key: Any, place: str) -> None:
    document = {
        "payload": envelope_doc(p={key: 1}),
        "nested": envelope_doc(p={"a": {key: 1}}),
        "in-list": envelope_doc(p={"a": [1, {"b": 2, key: 3}]}),
        "opaque": envelope_doc(MessageType.ENQUEUE, p={"q": "a", "job_payload": {key: 1}}),
        "envelope": envelope_doc() | {key: 1},
    }[place]
    assert refused(pack(document)).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("body", [
    pytest.param(b"\x81\x91\x01\x01", id="array-key"),
    pytest.param(b"\x81\x80\x01", id="map-key"),
    pytest.param(b"\x81\xd6\xff\x00\x00\x00\x05\x01", id="timestamp-key-only"),
])
def test_unhashable_or_odd_keys_are_refused(body: bytes) -> None:
    assert refused(body).code in (ErrorCode.MALFORMED, ErrorCode.BAD_ENVELOPE)


@pytest.mark.parametrize("kind", ["list", "map"])
@pytest.mark.parametrize("opaque", [False, True], ids=["plain", "opaque"])
@pytest.mark.parametrize("leaf", [1, "s", []], ids=["int", "str", "empty-list"])
def test_nesting_up_to_the_maximum(kind: str, opaque: bool, leaf: Any) -> None:
    message, field = (MessageType.ENQUEUE, "job_payload") if opaque else (MessageType.PING, "x")
    deepest = at_depth(MAX_NESTING_DEPTH, leaf, kind)
    got = decode_envelope(body_of(message, RID, {field: deepest}))
    assert got.payload[field] == deepest
    error = refused(body_of(message, RID, {field: at_depth(MAX_NESTING_DEPTH + 1, leaf, kind)}))
    assert error.code is ErrorCode.MALFORMED
    assert error.rid == RID


def test_nesting_the_unpacker_cannot_hold_is_malformed() -> None:
    body = splice(envelope_doc(p={"x": "MARKER"}), b"\x91" * 5000 + b"\x01")
    assert refused(body).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"ok\xe2\x82",
], ids=["ff", "bad-continuation", "surrogate", "overlong", "five-byte", "truncated"])
@pytest.mark.parametrize("place", ["value", "key", "rid", "opaque", "extra"])
def test_invalid_utf8_is_malformed(bad: bytes, place: str) -> None:
    document = {
        "value": envelope_doc(p={"x": "MARKER"}),
        "key": envelope_doc(p={"MARKER": 1}),
        "rid": envelope_doc(rid="MARKER"),
        "opaque": envelope_doc(MessageType.ENQUEUE, p={"q": "a", "job_payload": ["MARKER"]}),
        "extra": envelope_doc(extra="MARKER"),
    }[place]
    string = bytes((0xA0 | len(bad),)) + bad
    assert refused(splice(document, string)).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("tail", [b"\xc0", b"\x00", pack({"v": 2}), b"\xff\xff"])
def test_trailing_bytes_inside_a_frame_are_malformed(tail: bytes) -> None:
    error = refused(body_of() + tail)
    assert error.code is ErrorCode.MALFORMED


@pytest.mark.parametrize("cut", [1, 5, -1])
def test_truncated_envelope_is_malformed(cut: int) -> None:
    assert refused(body_of()[:cut]).code is ErrorCode.MALFORMED


@pytest.mark.parametrize("body", [b"\xc1", b"\x81\xa1v\xc1", b"\xdd\xff\xff\xff\xff",
                                  b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"])
def test_invalid_msgpack_is_malformed(body: bytes) -> None:
    assert refused(body).code is ErrorCode.MALFORMED


# -- ProtocolError.rid ------------------------------------------------------------------------



@pytest.mark.parametrize(("body", "code"), [
    pytest.param(body_of(t=99), ErrorCode.UNKNOWN_TYPE, id="unknown-type"),
    pytest.param(body_of(p=[]), ErrorCode.BAD_ENVELOPE, id="p-not-map"),
    pytest.param(body_of(p={"x": 1.5}), ErrorCode.MALFORMED, id="float"),
    pytest.param(body_of(p={"x": 2**63}), ErrorCode.MALFORMED, id="uint64"),
    pytest.param(body_of(p={"x": at_depth(MAX_NESTING_DEPTH + 1)}), ErrorCode.MALFORMED,
                 id="too-deep"),
    pytest.param(body_of(p={"x": {1: 2}}), ErrorCode.MALFORMED, id="nested-int-key"),
    pytest.param(body_of(p={"x": msgpack.Timestamp(1)}), ErrorCode.MALFORMED, id="timestamp"),
    pytest.param(body_of(p={1: 2}), ErrorCode.MALFORMED, id="payload-int-key"),
    pytest.param(pack(envelope_doc() | {1: 2}), ErrorCode.MALFORMED, id="envelope-int-key"),
    pytest.param(pack(envelope_doc() | {"v": 3}), ErrorCode.UNSUPPORTED_VERSION,
                 id="version"),
    pytest.param(pack(envelope_doc() | {"t": "3"}), ErrorCode.BAD_ENVELOPE, id="bad-t"),
])
def test_error_carries_the_rid_when_it_was_readable(body: bytes, code: ErrorCode) -> None:
    error = refused(body)
    assert (error.code, error.rid) == (code, RID)


@pytest.mark.parametrize("body", [
    pytest.param(pack([1]), id="not-a-map"),
    pytest.param(pack(without(envelope_doc(), "rid")), id="no-rid"),
    pytest.param(body_of(rid=""), id="empty-rid"),
    pytest.param(body_of(rid=7), id="int-rid"),
    pytest.param(body_of(rid="r" * (MAX_RID_LENGTH + 1)), id="long-rid"),
    pytest.param(body_of()[:-1], id="truncated"),
])
def test_error_has_no_rid_when_none_was_readable(body: bytes) -> None:
    assert refused(body).rid is None


# -- encoding -------------------------------------------------------------------------------------


def test_encode_frame_layout() -> None:
    payload = {"q": "emails", "stats": {"new": 1, "blob": b"\x00\x01"}, "f": 0.5}
    data = encode_frame(MessageType.OK, "42", payload)
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    decoded = msgpack.unpackb(data[4:], raw=False)
    assert list(decoded) == ["v", "t", "rid", "p"]
    assert same(decoded, {"v": 2, "t": 101, "rid": "42", "p": payload})
    assert FrameDecoder(MAX_FRAME).feed(data) == [data[4:]]


RAW_VALUES: list[Any] = [None, 7, -3, "text", b"\x00\xff", [1, 2.5, "x"], {"a": {"b": [True]}},
                         1.25, 2**63 - 1, "é" * 40]


@pytest.mark.parametrize("plain_count", [0, 1, 5, 10, 14, 15, 16, 40, 65535])
@pytest.mark.parametrize("raw_count", [0, 1, 3])
def test_encode_frame_with_raw_matches_encode_frame(plain_count: int, raw_count: int) -> None:
    payload = {f"k{i}": RAW_VALUES[i % len(RAW_VALUES)] for i in range(plain_count)}
    raw_values = {f"raw{i}": RAW_VALUES[(i * 3 + 1) % len(RAW_VALUES)] for i in range(raw_count)}
    raw_fields = {key: encode_value(value) for key, value in raw_values.items()}
    spliced = encode_frame_with_raw(MessageType.QUEST, "0", payload, raw_fields)
    direct = encode_frame(MessageType.QUEST, "0", payload | raw_values)
    (length,) = struct.unpack(">I", spliced[:4])
    assert length == len(spliced) - 4
    decoded = msgpack.unpackb(spliced[4:], raw=False)
    assert same(decoded, msgpack.unpackb(direct[4:], raw=False))
    assert same(decoded["p"], payload | raw_values)
    assert spliced == direct
    total = plain_count + raw_count
    map_header = spliced[4:].split(b"\xa1p", 1)[1][:1]
    if total < 16:
        assert map_header == bytes((0x80 | total,))
    elif total < 0x10000:
        assert map_header == b"\xde"
    else:
        assert map_header == b"\xdf"


def test_encode_frame_with_raw_keeps_raw_bytes_verbatim() -> None:
    # A stored payload encoded differently from how msgpack would encode it (1 as uint64)
    # is copied as given, not re-encoded.
    stored = b"\xcf" + struct.pack(">Q", 1)
    data = encode_frame_with_raw(MessageType.QUEST, "0", {"jid": "q:1"}, {"job_payload": stored})
    assert data.endswith(b"\xabjob_payload" + stored)
    assert msgpack.unpackb(data[4:], raw=False)["p"] == {"jid": "q:1", "job_payload": 1}


def test_encode_frame_with_raw_map32_header() -> None:
    payload = {f"k{i}": i for i in range(0x10000)}
    data = encode_frame_with_raw(MessageType.OK, "9", payload, {"r": encode_value([1])})
    decoded = msgpack.unpackb(data[4:], raw=False)
    assert len(decoded["p"]) == 0x10001
    assert decoded["p"]["r"] == [1]
    assert data == encode_frame(MessageType.OK, "9", payload | {"r": [1]})


# -- hypothesis: round trip --------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
           | st.text(max_size=20) | st.binary(max_size=20))
FLOATS = st.floats(allow_nan=False) | st.floats(allow_nan=False, width=32)
KEYS = st.text(max_size=8)


def values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=4),
        max_leaves=12,
    )


PLAIN_VALUES = values(SCALARS)
OPAQUE_VALUES = values(SCALARS | FLOATS)
RIDS = st.text(min_size=1, max_size=MAX_RID_LENGTH)


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[dict[str, Any], Envelope]:
    message = draw(st.sampled_from(CLIENT_MESSAGES))
    rid = draw(RIDS)
    payload = draw(st.dictionaries(KEYS, PLAIN_VALUES, max_size=5))
    for field in sorted(OPAQUE_FIELDS.get(message, ())):
        if draw(st.booleans()):
            payload[field] = draw(OPAQUE_VALUES)
    extra = draw(st.dictionaries(st.text(min_size=2, max_size=6), PLAIN_VALUES, max_size=2))
    document = {**extra, "v": PROTOCOL_VERSION, "t": int(message), "rid": rid, "p": payload}
    return document, Envelope(message, rid, payload)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(envelopes(), min_size=1, max_size=4), data=st.data())
def test_round_trip_in_any_chunking(items: list[tuple[dict[str, Any], Envelope]],
                                    data: st.DataObject) -> None:
    stream = b"".join(frame(pack(document)) for document, _ in items)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = FrameDecoder(MAX_FRAME)
    frames = feed_all(decoder, cuts(stream, points))
    assert decoder.buffered == 0
    assert len(frames) == len(items)
    for got_frame, (_, expected) in zip(frames, items, strict=True):
        got = decode_envelope(got_frame)
        assert got.type is expected.type
        assert got.rid == expected.rid
        assert same(got.payload, expected.payload)


# -- hypothesis: garbage ---------------------------------------------------------------------------

ANY_SCALAR = (SCALARS | st.floats() | st.integers(INT64_MIN, 2**64 - 1)
              | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
              | st.builds(msgpack.Timestamp, st.integers(-(2**33), 2**34),
                          st.integers(0, 10**9 - 1)))
ANY_KEY = st.text(max_size=4) | st.integers(-5, 5) | st.binary(max_size=3) | st.booleans()
ANY_VALUE = st.recursive(
    ANY_SCALAR,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(ANY_KEY, children, max_size=3),
    max_leaves=10,
)


@st.composite
def loose_documents(draw: st.DrawFn) -> bytes:
    """Maps shaped like envelopes whose fields may hold anything MessagePack can say."""
    document: dict[Any, Any] = {}
    fields = (
        ("v", st.sampled_from([2, 2, 1, 3])),
        ("t", st.sampled_from(list(MessageType))),
        ("rid", RIDS),
        ("p", st.dictionaries(ANY_KEY, ANY_VALUE, max_size=4)),
    )
    for key, good in fields:
        choice = draw(st.integers(0, 4))
        if choice < 3:
            document[key] = draw(good)
        elif choice == 3:
            document[key] = draw(ANY_VALUE)
    document.update(draw(st.dictionaries(ANY_KEY, ANY_VALUE, max_size=2)))
    return pack(document)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not data:
            data[position:position] = draw(st.binary(min_size=1, max_size=3))
        elif action == "flip":
            data[min(position, len(data) - 1)] ^= draw(st.integers(1, 255))
        else:
            del data[min(position, len(data) - 1)]
    return bytes(data)


VALID_BODIES = envelopes().map(lambda item: pack(item[0]))
BODIES = (st.binary(max_size=200) | loose_documents() | VALID_BODIES
          | mutated(VALID_BODIES | loose_documents()))
STREAMS = (
    st.binary(max_size=2000)
    | st.lists(BODIES.map(frame), min_size=1, max_size=4).map(b"".join)
    | mutated(st.lists(BODIES.map(frame), min_size=1, max_size=3).map(b"".join))
)


def assert_valid_value(value: Any, depth: int, floats_allowed: bool) -> None:
    assert depth <= MAX_NESTING_DEPTH
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str
            assert_valid_value(item, depth + 1, floats_allowed)
    elif type(value) is list:
        for item in value:
            assert_valid_value(item, depth + 1, floats_allowed)
    elif type(value) is int:
        assert INT64_MIN <= value <= INT64_MAX
    elif type(value) is float:
        assert floats_allowed
    else:
        assert value is None or type(value) in (str, bytes, bool)


def decode_or_refuse(frames: list[bytes]) -> list[Envelope | ErrorCode]:
    """decode_envelope on each frame: an Envelope that obeys every rule, or ProtocolError."""
    outcomes: list[Envelope | ErrorCode] = []
    for body in frames:
        try:
            got = decode_envelope(body)
        except ProtocolError as exc:
            assert type(exc.code) is ErrorCode
            outcomes.append(exc.code)
            continue
        assert got.type in CLIENT_TYPES
        assert type(got.rid) is str
        assert 1 <= len(got.rid) <= MAX_RID_LENGTH
        opaque = OPAQUE_FIELDS.get(got.type, frozenset())
        for key, item in got.payload.items():
            assert type(key) is str
            assert_valid_value(item, 2, key in opaque)
        outcomes.append(got)
    return outcomes


Outcome = tuple[int, str, bytes] | ErrorCode


def run_stream(chunks: Iterable[bytes]) -> tuple[list[Outcome], ErrorCode | None]:
    """Outcomes of every frame, envelopes as comparable bytes (NaN != NaN), then any error.

    The final empty feed lets a decoder that defers a framing error report it.
    """
    decoder = FrameDecoder(MAX_FRAME)
    outcomes: list[Outcome] = []
    try:
        for chunk in [*chunks, b""]:
            for got in decode_or_refuse(decoder.feed(chunk)):
                if type(got) is Envelope:
                    outcomes.append((int(got.type), got.rid, pack(got.payload)))
                else:
                    outcomes.append(got)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.FRAME_EMPTY, ErrorCode.FRAME_TOO_LARGE)
        return outcomes, exc.code
    return outcomes, None


@settings(max_examples=400, deadline=None)
@given(stream=STREAMS, data=st.data())
def test_garbage_parses_or_raises_protocol_error(stream: bytes, data: st.DataObject) -> None:
    whole = run_stream([stream])
    one_at_a_time = run_stream(bytes((b,)) for b in stream)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    chunked = run_stream(cuts(stream, points))
    # The same framing error, or none, however the bytes arrive; before it, bigger chunks
    # may hand out fewer frames but never different ones.
    assert whole[1] == one_at_a_time[1] == chunked[1]
    for outcomes, _ in (whole, chunked):
        assert outcomes == one_at_a_time[0][: len(outcomes)]
    if whole[1] is None:
        assert whole == one_at_a_time == chunked


@settings(max_examples=300, deadline=None)
@given(body=BODIES)
def test_garbage_frame_bodies_decode_or_raise_protocol_error(body: bytes) -> None:
    decode_or_refuse([body])


# -- large frames: checked as bytes, application data kept raw --------------------------------


@pytest.fixture(params=["whole", "scanned"], autouse=True)
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with frames decoded whole, then with every frame taking the large-frame
    path (checked as bytes first), which must accept and refuse exactly the same."""
    if request.param == "scanned":
        monkeypatch.setattr(codec, "FAST_DECODE_BYTES", 0)
        monkeypatch.setattr(codec, "RAW_FIELDS", {})
    return str(request.param)


def large_body(message: MessageType, payload: dict[str, Any]) -> bytes:
    """An envelope over FAST_DECODE_BYTES (padded with an ignored envelope key)."""
    return body_of(message, RID, payload, pad="x" * (codec.FAST_DECODE_BYTES + 1))


@pytest.mark.parametrize(("message", "field"), [(MessageType.ENQUEUE, "job_payload"),
                                                (MessageType.COMPLETE, "result")])
def test_a_large_frame_keeps_application_data_as_the_bytes_sent(
        message: MessageType, field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "RAW_FIELDS", RAW_FIELDS)
    value = {"f32": 1.5, "list": [1, None, "s", b"b", {"k": [True]}], "n": -(2**40)}
    sent = pack(value, use_single_float=True)
    body = large_body(message, {"q": "a", "did": "d", "jid": "j", field: "MARKER"})
    body = body.replace(pack("MARKER"), sent)
    envelope = decode_envelope(body)
    raw = envelope.payload[field]
    assert type(raw) is codec.RawValue and bytes(raw) == sent  # float 32 stays float 32
    assert encode_value(raw) == sent
    assert envelope.payload["q"] == "a" and envelope.rid == RID


def test_other_fields_of_a_large_frame_are_decoded() -> None:
    jobs = [{"job_payload": {"i": i, "x": 0.5}, "delay_ms": i} for i in range(500)]
    envelope = decode_envelope(large_body(MessageType.ENQUEUEMANY, {"q": "a", "jobs": jobs}))
    assert envelope.payload == {"q": "a", "jobs": jobs}


@pytest.mark.parametrize("filler", [None, [], 0, {}], ids=["nil", "empty-array", "int", "map"])
def test_a_frame_of_too_many_values_is_refused(filler: Any) -> None:
    """8 MiB of nils once held the loop for 1.5 s; the bytes are checked and refused."""
    payload = [filler] * (MAX_FRAME_VALUES + 1)
    error = refused(body_of(MessageType.ENQUEUE, RID, {"q": "a", "job_payload": payload}))
    assert error.code is ErrorCode.TOO_MANY_VALUES
    assert error.closes


def test_a_frame_of_as_many_values_as_allowed_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "RAW_FIELDS", RAW_FIELDS)
    payload = [None] * (MAX_FRAME_VALUES - 20)
    envelope = decode_envelope(body_of(MessageType.ENQUEUE, RID,
                                       {"q": "a", "job_payload": payload}))
    assert msgpack.unpackb(envelope.payload["job_payload"]) == payload
