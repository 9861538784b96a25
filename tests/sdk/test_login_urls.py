"""The SDK's URLs with a login and TLS, and that it never shows a password."""

import pytest
from overhop_client.connection import Address, parse_address, parse_url, redact


@pytest.mark.parametrize(("url", "expected"), [
    ("127.0.0.1:7000", Address("127.0.0.1", 7000)),
    ("broker", Address("broker", 9876)),
    ("overhop://alice:s3cret@h:1", Address("h", 1, False, "alice", "s3cret")),
    ("overhops://alice@h", Address("h", 9876, True, "alice", None)),
    ("overhops://al%40ice:p%3Ass%2Fw@[::1]:5", Address("::1", 5, True, "al@ice", "p:ss/w")),
])
def test_urls(url: str, expected: Address) -> None:
    assert parse_url(url) == expected
    assert parse_address(url) == (expected.host, expected.port)


@pytest.mark.parametrize("url", ["http://h:1", "overhop://a:b@h:1/path", "overhop://:1",
                                 "overhop://a:secret@h:99999"])
def test_bad_urls_never_show_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_url(url)
    assert "secret" not in str(caught.value)


def test_repr_and_redact_hide_the_password() -> None:
    assert "s3cret" not in repr(parse_url("overhop://alice:s3cret@h:1"))
    assert redact("overhop://alice:s3cret@h:1") == "overhop://alice:***@h:1"
    assert redact("overhops://alice@h:1") == "overhops://alice@h:1"
    assert redact("h:1") == "h:1"
