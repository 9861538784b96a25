"""protocol/vectors/frames.json: the language-neutral frame vectors agree with the codec.

Client vectors go through FrameDecoder and decode_envelope exactly as the server reads them;
server vectors are decoded with plain msgpack and re-encoded with encode_frame, byte for byte.
"""

import json
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from overhop.errors import ErrorCode, ProtocolError
from overhop.wire.codec import FrameDecoder, decode_envelope
from overhop.wire.encoding import encode_frame, encode_frame_with_raw, encode_value
from overhop.wire.messages import PROTOCOL_VERSION, PUSH_RID, MessageType

VECTORS_PATH = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "frames.json"
DOCUMENT = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
ENVELOPE_KEYS = ("v", "t", "rid", "p")


def from_json(value: Any) -> Any:
    """The MessagePack value a vector's JSON stands for: {"$bin": hex} becomes bytes."""
    if type(value) is dict:
        if list(value) == ["$bin"]:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if type(value) is list:
        return [from_json(item) for item in value]
    return value


def same(left: Any, right: Any) -> bool:
    """Equality that also requires equal types (so True != 1) and equal map key order."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if type(left) is list:
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


def select(direction: str, kind: str) -> list[Any]:
    chosen = [v for v in VECTORS if v["direction"] == direction and kind in v]
    return [pytest.param(v, id=v["name"]) for v in chosen]


def split_frame(vector: dict[str, Any]) -> tuple[int, bytes]:
    raw = bytes.fromhex(vector["hex"])
    (length,) = struct.unpack(">I", raw[:4])
    return length, raw[4:]


# -- the document itself --------------------------------------------------------------------


def test_document_header() -> None:
    assert DOCUMENT["version"] == 1
    assert DOCUMENT["protocol_version"] == PROTOCOL_VERSION
    assert type(DOCUMENT["max_frame_size"]) is int
    assert DOCUMENT["description"]


def test_every_vector_is_well_formed() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    for vector in VECTORS:
        assert vector["direction"] in ("client", "server"), vector["name"]
        assert vector["description"], vector["name"]
        assert ("envelope" in vector) != ("error" in vector), vector["name"]
        assert bytes.fromhex(vector["hex"]).hex() == vector["hex"], vector["name"]
        if "error" in vector:
            assert vector["direction"] == "client", vector["name"]
            assert vector["error"] in ErrorCode.__members__, vector["name"]
        else:
            envelope = vector["envelope"]
            assert list(envelope)[:4] == list(ENVELOPE_KEYS), vector["name"]
            is_client = MessageType(envelope["t"]).is_client_type
            assert is_client == (vector["direction"] == "client"), vector["name"]


def test_vectors_cover_what_clients_need() -> None:
    types = {(v["direction"], v["envelope"]["t"]) for v in VECTORS if "envelope" in v}
    for needed in (MessageType.HELLO, MessageType.REGISTER, MessageType.PING,
                   MessageType.ENQUEUE, MessageType.SUBSCRIBE):
        assert ("client", needed) in types
    for needed in (MessageType.OK, MessageType.ERR, MessageType.HI, MessageType.IDENT,
                   MessageType.PONG, MessageType.QUEST):
        assert ("server", needed) in types
    errors = {v["error"] for v in VECTORS if "error" in v}
    assert errors >= {"FRAME_EMPTY", "FRAME_TOO_LARGE", "MALFORMED", "BAD_ENVELOPE",
                      "UNSUPPORTED_VERSION", "UNKNOWN_TYPE"}
    too_large = next(v for v in VECTORS if v["name"] == "frame_too_large")
    assert struct.unpack(">I", bytes.fromhex(too_large["hex"])[:4])[0] == (
        DOCUMENT["max_frame_size"] + 1
    )


# -- client vectors: the server's decoder -----------------------------------------------------


@pytest.mark.parametrize("vector", select("client", "envelope"))
def test_client_vector_decodes_to_its_envelope(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder(DOCUMENT["max_frame_size"])
    frames = decoder.feed(bytes.fromhex(vector["hex"]))
    assert len(frames) == 1
    assert decoder.buffered == 0
    envelope = decode_envelope(frames[0])
    expected = from_json(vector["envelope"])
    got = {"v": PROTOCOL_VERSION, "t": int(envelope.type), "rid": envelope.rid,
           "p": envelope.payload}
    assert same(got, {key: expected[key] for key in ENVELOPE_KEYS})


@pytest.mark.parametrize("vector", select("client", "envelope"))
def test_client_vector_bytes_are_the_canonical_encoding(vector: dict[str, Any]) -> None:
    length, body = split_frame(vector)
    assert length == len(body)
    assert body == msgpack.packb(from_json(vector["envelope"]), use_bin_type=True)


@pytest.mark.parametrize("vector", select("client", "error"))
def test_client_error_vector_is_refused_with_its_code(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder(DOCUMENT["max_frame_size"])
    with pytest.raises(ProtocolError) as caught:
        for frame in decoder.feed(bytes.fromhex(vector["hex"])):
            decode_envelope(frame)
    assert caught.value.code == ErrorCode(vector["error"])


@pytest.mark.parametrize("vector", select("client", "error"))
def test_client_error_vector_fed_byte_by_byte_gives_the_same_code(
    vector: dict[str, Any],
) -> None:
    decoder = FrameDecoder(DOCUMENT["max_frame_size"])
    with pytest.raises(ProtocolError) as caught:
        for byte in bytes.fromhex(vector["hex"]):
            for frame in decoder.feed(bytes((byte,))):
                decode_envelope(frame)
    assert caught.value.code == ErrorCode(vector["error"])


# -- server vectors: what the server encodes ---------------------------------------------------


@pytest.mark.parametrize("vector", select("server", "envelope"))
def test_server_vector_decodes_to_its_envelope(vector: dict[str, Any]) -> None:
    length, body = split_frame(vector)
    assert length == len(body)
    decoded = msgpack.unpackb(body, raw=False)
    assert same(decoded, from_json(vector["envelope"]))


@pytest.mark.parametrize("vector", select("server", "envelope"))
def test_encode_frame_gives_the_server_vector_bytes(vector: dict[str, Any]) -> None:
    envelope = from_json(vector["envelope"])
    assert list(envelope) == list(ENVELOPE_KEYS)
    frame = encode_frame(envelope["t"], envelope["rid"], envelope["p"])
    assert frame.hex() == vector["hex"]


def test_quest_vector_matches_the_raw_splicing_encoder() -> None:
    """QUEST frames are built with the stored job payload spliced in as raw bytes."""
    quests = [v for v in VECTORS
              if "envelope" in v and v["envelope"]["t"] == MessageType.QUEST]
    assert quests
    for vector in quests:
        envelope = from_json(vector["envelope"])
        assert envelope["rid"] == PUSH_RID
        payload = dict(envelope["p"])
        job_payload = payload.pop("job_payload")
        frame = encode_frame_with_raw(MessageType.QUEST, PUSH_RID, payload,
                                      {"job_payload": encode_value(job_payload)})
        assert frame.hex() == vector["hex"]
