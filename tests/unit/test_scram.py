"""SCRAM-SHA-256: the server's module and the SDK's client reproduce protocol/vectors/scram.json
(RFC 7677's example first) byte for byte; broken messages are refused; permissions and the
message -> verb table."""

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from overhop_client.auth import AuthenticationError, ScramClient, derive_credentials

from overhop.auth import scram
from overhop.auth.permissions import Permission, Verb, allows, parse_permission
from overhop.auth.users import fake_credentials
from overhop.errors import RequestError
from overhop.server.authentication import FailureThrottle
from overhop.server.authorization import RULES
from overhop.wire.messages import CLIENT_TYPES

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocol" / "vectors"
                      / "scram.json").read_text())["vectors"]


def b64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_server_side_reproduces_the_vector(v: dict[str, Any]) -> None:
    credentials = scram.derive_credentials(v["password"], b64(v["salt"]), v["iterations"])
    assert scram.b64(credentials.stored_key) == v["stored_key"]
    assert scram.b64(credentials.server_key) == v["server_key"]
    first = scram.parse_client_first(v["client_first"])
    assert first.user == v["user"] and first.nonce == v["client_nonce"]
    server_first = scram.server_first_message(first.nonce + v["server_nonce"],
                                              b64(v["salt"]), v["iterations"])
    assert server_first == v["server_first"]
    final = scram.parse_client_final(v["client_final"])
    message = scram.auth_message(first.bare, server_first, final.without_proof)
    assert scram.verify_proof(credentials.stored_key, message, final.proof)
    assert scram.server_final_message(credentials.server_key, message) == v["server_final"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_both_clients_reproduce_the_vector(v: dict[str, Any]) -> None:
    first = scram.client_first_message(v["user"], v["client_nonce"])
    assert first == v["client_first"]
    final, signature = scram.client_final_message(v["password"], first, v["server_first"],
                                                  v["client_nonce"])
    assert final == v["client_final"]
    scram.verify_server_final(v["server_final"], signature)
    sdk = ScramClient(v["user"], v["password"], nonce=v["client_nonce"])
    assert sdk.first() == v["client_first"]
    assert sdk.final(v["server_first"]) == v["client_final"]
    sdk.verify(v["server_final"])
    keys = derive_credentials(v["password"], v["iterations"], b64(v["salt"]))
    assert scram.b64(keys.stored_key) == v["stored_key"]


def test_a_wrong_server_signature_is_refused_by_the_sdk() -> None:
    v = VECTORS[0]
    sdk = ScramClient(v["user"], v["password"], nonce=v["client_nonce"])
    sdk.final(v["server_first"])
    with pytest.raises(AuthenticationError):
        sdk.verify("v=" + scram.b64(bytes(32)))
    with pytest.raises(AuthenticationError):  # a server nonce that does not extend ours
        ScramClient("user", "pencil", nonce="abc").final("r=xyz123,s=AAAA,i=4096")


def test_a_wrong_password_fails_the_proof() -> None:
    v = VECTORS[0]
    wrong, _ = scram.client_final_message("pencil!", v["client_first"], v["server_first"],
                                          v["client_nonce"])
    credentials = scram.derive_credentials("pencil", b64(v["salt"]), 4096)
    final = scram.parse_client_final(wrong)
    message = scram.auth_message(v["client_first"][3:], v["server_first"], final.without_proof)
    assert not scram.verify_proof(credentials.stored_key, message, final.proof)
    assert not scram.verify_proof(credentials.stored_key, message, b"short")


@pytest.mark.parametrize("text", [
    "", "y,,n=user,r=abc", "p=tls-unique,,n=user,r=abc", "n,a=admin,n=user,r=abc",
    "n,,r=abc,n=user", "n,,n=,r=abc", "n,,n=us=41r,r=abc", "n,,n=user,r=", "n,,n=user",
    "n,,n=user,r=abc,m=ext", "n,,n=" + "u" * 300 + ",r=abc",
])
def test_bad_client_first_messages_are_refused(text: str) -> None:
    with pytest.raises(scram.ScramError):
        scram.parse_client_first(text)


@pytest.mark.parametrize("text", [
    "c=eSws,r=abc,p=AAAA", "r=abc,c=biws,p=AAAA", "c=biws,r=abc", "c=biws,r=abc,p=***",
    "c=biws,r=abc,p=AAAA,x=1",
])
def test_bad_client_final_messages_are_refused(text: str) -> None:
    with pytest.raises(scram.ScramError):
        scram.parse_client_final(text)


def test_unknown_names_get_a_stable_salt_from_the_secret() -> None:
    one = fake_credentials(b"s" * 32, "ghost", 4096)
    assert one == fake_credentials(b"s" * 32, "ghost", 4096)
    assert one.salt != fake_credentials(b"s" * 32, "ghost2", 4096).salt
    assert one.salt != fake_credentials(b"t" * 32, "ghost", 4096).salt
    assert len(one.salt) == 16


def test_the_iteration_floor() -> None:
    with pytest.raises(ValueError):
        scram.derive_credentials("pw", b"0" * 16, 4095)


# -- permissions -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "queue", "expected"), [
    ("produce:emails", "emails", True), ("produce:emails", "emails2", False),
    ("produce:billing-*", "billing-eu", True), ("produce:billing-*", "billing", False),
    ("produce", "anything", True), ("produce:*", None, True),
    ("produce:billing-*", None, False), ("produce:q?", "q1", True),
])
def test_patterns(text: str, queue: str | None, expected: bool) -> None:
    assert allows(frozenset({parse_permission(text)}), Verb.PRODUCE, queue) is expected
    assert not allows(frozenset({parse_permission(text)}), Verb.CONSUME, queue)


@pytest.mark.parametrize("text", ["write:x", "produce:[ab]", "produce:a b", "", ":x", 7])
def test_bad_permissions_are_refused(text: object) -> None:
    with pytest.raises(RequestError):
        parse_permission(text)


def test_a_permission_prints_as_it_is_written() -> None:
    assert str(Permission(Verb.READ, "a-*")) == "read:a-*"


def test_every_client_message_has_a_rule() -> None:
    assert set(RULES) == set(CLIENT_TYPES)


# -- the failed-login throttle ------------------------------------------------------------


def test_failures_double_and_are_forgotten() -> None:
    throttle = FailureThrottle(100, 1000, 60_000)
    now = 1_000_000
    delays = []
    for _ in range(6):
        delays.append(throttle.failed("10.0.0.1", now))
        now += delays[-1]  # the client waited for each answer
    assert delays == [100, 200, 400, 800, 1000, 1000]
    assert throttle.failed("10.0.0.2", now) == 100  # per address
    assert throttle.failed("10.0.0.1", now + 60_000) == 100  # forgotten after quiet
    throttle.succeeded("10.0.0.2")
    assert throttle.failed("10.0.0.2", now) == 100


def test_parallel_failures_from_one_address_are_answered_one_after_another() -> None:
    throttle = FailureThrottle(100, 1000, 60_000)
    # Ten connections fail at the same moment: their answers are spread out.
    delays = [throttle.failed("10.0.0.1", 0) for _ in range(10)]
    assert delays == [100, 300, 700, 1500, 2500, 3500, 4500, 5500, 6500, 7500]
