"""The exception classes against the server's list of ERR codes."""

import pytest
from overhop_client import (
    ERROR_CLASSES,
    ConnectionLost,
    InvalidPayloadError,
    MessageType,
    OverhopError,
    QueueNotFoundError,
    error_from_wire,
)

from overhop.errors import ErrorCode
from overhop.wire.messages import MessageType as ServerMessageType


def test_there_is_one_class_per_server_error_code() -> None:
    assert set(ERROR_CLASSES) == {code.value for code in ErrorCode}
    assert len(set(ERROR_CLASSES.values())) == len(ERROR_CLASSES)
    for code, cls in ERROR_CLASSES.items():
        assert issubclass(cls, OverhopError)
        assert cls.code == code


def test_message_types_match_the_server_catalogue() -> None:
    assert {t.name: t.value for t in MessageType} == {
        t.name: t.value for t in ServerMessageType}


def test_error_from_wire_builds_the_class_of_the_code() -> None:
    error = error_from_wire({"code": "QUEUE_NOT_FOUND", "msg": "no queue 'x'",
                             "details": {"q": "x"}})
    assert type(error) is QueueNotFoundError
    assert (error.code, error.message, error.details) == (
        "QUEUE_NOT_FOUND", "no queue 'x'", {"q": "x"})
    assert str(error) == "QUEUE_NOT_FOUND: no queue 'x'"


def test_an_unknown_code_becomes_the_base_class_with_that_code() -> None:
    error = error_from_wire({"code": "SOMETHING_NEW", "msg": "later server"})
    assert type(error) is OverhopError
    assert error.code == "SOMETHING_NEW"
    assert error.message == "later server"


def test_a_missing_message_is_an_empty_string() -> None:
    error = error_from_wire({"code": "INVALID_PAYLOAD"})
    assert type(error) is InvalidPayloadError
    assert error.message == ""
    assert error.details is None


def test_connection_lost_is_a_connection_error_carrying_the_server_reason() -> None:
    reason = error_from_wire({"code": "REGISTER_TIMEOUT", "msg": "too slow"})
    lost = ConnectionLost(error=reason)
    assert isinstance(lost, ConnectionError)
    assert lost.error is reason
    assert reason.closes_connection
    with pytest.raises(ConnectionError, match="REGISTER_TIMEOUT"):
        raise lost
