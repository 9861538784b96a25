"""The msgspec shortcut of `decode_envelope` (`overhop/wire/typed.py`) against the checking
path it skips: for any frame, both give the same envelope (the same types all the way
down) or the same error (code, message and rid)."""

from typing import Any, get_args

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.errors import ProtocolError
from overhop.wire import codec
from overhop.wire.codec import decode_checking, decode_envelope
from overhop.wire.limits import INT64_MAX, INT64_MIN, MAX_NESTING_DEPTH, MAX_RID_LENGTH
from overhop.wire.messages import CLIENT_TYPES, PROTOCOL_VERSION, MessageType
from overhop.wire.typed import TypedEnvelope, decode_typed


def pack(document: Any) -> bytes:
    return msgpack.packb(document, use_bin_type=True, datetime=False)


def strictly_equal(left: Any, right: Any) -> bool:
    """Equality that also requires equal types all the way down (True is not 1)."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return list(left) == list(right) and all(
            strictly_equal(left[key], right[key]) for key in left)
    if type(left) is list:
        return len(left) == len(right) and all(map(strictly_equal, left, right))
    return bool(left == right)


def outcome(decode: Any, body: bytes) -> tuple[Any, ...]:
    try:
        envelope = decode(body)
    except ProtocolError as exc:
        return ("refused", exc.code, exc.message, exc.rid)
    return ("decoded", envelope.type, envelope.rid, envelope.payload)


def assert_same_outcome(body: bytes) -> None:
    shortcut, checking = outcome(decode_envelope, body), outcome(decode_checking, body)
    assert shortcut[:3] == checking[:3]
    assert strictly_equal(shortcut[3], checking[3])


# Values within the rules, and values near every rule's edge: integer range, floats,
# binary, extension types (a timestamp too), non-string keys; nesting about the limit below.
valid_scalars = st.one_of(st.none(), st.booleans(), st.text(max_size=20),
                          st.integers(INT64_MIN, INT64_MAX))
edge_scalars = st.one_of(
    st.binary(max_size=8), st.sampled_from([INT64_MAX + 1, 2**64 - 1]),
    st.floats(allow_nan=False),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    st.just(msgpack.Timestamp(1, 0)),
)


def values(edges: bool) -> st.SearchStrategy[Any]:
    leaves = st.one_of(valid_scalars, valid_scalars, valid_scalars, edge_scalars) if edges \
        else valid_scalars
    keys = st.one_of(st.text(max_size=5), st.text(max_size=5), st.integers(0, 3)) if edges \
        else st.text(max_size=5)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


field_names = st.sampled_from(["q", "job_payload", "result", "error", "progress", "jobs", "did",
                               "jid", "x"])
bad_rids = st.one_of(st.just(""), st.just("r" * (MAX_RID_LENGTH + 1)),
                     st.integers(INT64_MIN, 2**64 - 1), st.none())
bad_types = st.one_of(st.sampled_from(sorted(int(t) for t in MessageType)), st.integers(-2, 300),
                      st.just(2**64 - 1), st.text(max_size=2), st.floats(allow_nan=False))
bad_versions = st.one_of(st.integers(-1, 4), st.just(2.0), st.just("2"), st.just(2**64 - 1))


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Envelopes: a usual one with values within the rules, or with values at their edges,
    or one whose envelope itself breaks a rule in one or more ways."""
    style = draw(st.sampled_from(["usual", "edge values", "bad envelope"]))
    edges = style != "usual"
    document: dict[Any, Any] = {
        "v": PROTOCOL_VERSION, "t": draw(st.sampled_from(sorted(int(t) for t in CLIENT_TYPES))),
        "rid": draw(st.text(min_size=1, max_size=12) | st.just("r" * MAX_RID_LENGTH)),
        "p": draw(st.dictionaries(field_names, values(edges), max_size=4))}
    if style == "bad envelope":
        for key, bad in draw(st.lists(st.sampled_from([
                ("v", bad_versions), ("t", bad_types), ("rid", bad_rids),
                ("p", values(True))]), min_size=1, max_size=3)):
            document[key] = draw(bad)
        for key in draw(st.lists(st.sampled_from(["v", "t", "rid", "p"]), max_size=2)):
            document.pop(key, None)
        if draw(st.booleans()):
            document[draw(st.text(max_size=3) | st.integers(0, 3))] = draw(values(True))
    keys = draw(st.permutations(list(document)))
    return {key: document[key] for key in keys}


@settings(max_examples=3000, deadline=None)
@given(documents())
def test_the_shortcut_decodes_as_the_checking_path_does(document: Any) -> None:
    assert_same_outcome(pack(document))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_are_decoded_or_refused_as_the_checking_path_does(body: bytes) -> None:
    assert_same_outcome(body)


@pytest.mark.parametrize("depth", range(MAX_NESTING_DEPTH - 3, MAX_NESTING_DEPTH + 3))
@pytest.mark.parametrize("leaf", [1, "s", [], {}, 1.5], ids=["int", "str", "list", "map", "float"])
@pytest.mark.parametrize("message, field", [(MessageType.PING, "x"),
                                             (MessageType.ENQUEUE, "job_payload")])
def test_nesting_about_the_limit_is_judged_alike(depth: int, leaf: Any, message: MessageType,
                                                 field: str) -> None:
    value = leaf
    for _ in range(depth - 2):  # the envelope and p are the first two levels
        value = [value]
    assert_same_outcome(pack({"v": PROTOCOL_VERSION, "t": message, "rid": "r",
                              "p": {field: value}}))


def test_the_usual_frames_take_the_shortcut() -> None:
    """ENQUEUE, ACK and COMPLETE as clients send them decode without the checking path; a
    job payload sent as binary too."""
    for message, payload in [
        (MessageType.ENQUEUE, {"q": "emails", "job_payload": {"to": "a@b", "n": [1, {"x": None}]}}),
        (MessageType.ENQUEUE, {"q": "emails", "job_payload": b"\x00" * 100}),
        (MessageType.ACK, {"did": "d-1", "jid": "j-1"}),
        (MessageType.COMPLETE, {"did": "d-1", "jid": "j-1", "result": {"ok": True, "t": 1.5}}),
        (MessageType.CREDIT, {"sid": "s-1", "credits": 64}),
    ]:
        typed = decode_typed(pack({"v": PROTOCOL_VERSION, "t": message, "rid": "7", "p": payload}))
        assert typed is not None
        envelope = codec._plainly_valid(typed)
        assert envelope == codec.Envelope(message, "7", payload)


def test_the_typed_version_is_the_protocol_version() -> None:
    assert get_args(TypedEnvelope.__annotations__["v"]) == (PROTOCOL_VERSION,)


def test_only_client_types_take_the_shortcut() -> None:
    for message in MessageType:
        typed = decode_typed(pack({"v": PROTOCOL_VERSION, "t": message, "rid": "7", "p": {}}))
        assert typed is not None
        assert (codec._plainly_valid(typed) is not None) == (message in CLIENT_TYPES)
