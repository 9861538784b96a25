"""The SDK's lists of broker addresses (a cluster): parsing, one login and TLS for all,
no password in messages, and the error when no broker of a list answers (SDK and CLI)."""

import asyncio
import socket

import pytest
from click.testing import CliRunner
from overhop_client import AsyncClient, ServerUnreachable
from overhop_client.addresses import Brokers, host_port, parse_brokers, redact_urls, split_url

from overhop.cli import cli


@pytest.fixture
def closed_urls() -> list[str]:
    """Two addresses nothing listens on."""
    urls = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            urls.append(f"127.0.0.1:{probe.getsockname()[1]}")
    return urls


@pytest.mark.parametrize(("urls", "expected"), [
    ("127.0.0.1:7000", Brokers(("127.0.0.1:7000",))),
    ("h1:1,h2:2,h3", Brokers(("h1:1", "h2:2", "h3:9876"))),
    ("overhop://h1:1,h2:2", Brokers(("h1:1", "h2:2"))),
    ("overhops://alice:s3cret@h1:1,h2:2", Brokers(("h1:1", "h2:2"), True, "alice", "s3cret")),
    ("overhop://al%2Cice:p,w@h1:1,h2:2", Brokers(("h1:1", "h2:2"), False, "al,ice", "p,w")),
    ("[::1]:5,[::1]:6", Brokers(("[::1]:5", "[::1]:6"))),
    (["h1:1", "overhop://bob:pw@h2:2"], Brokers(("h1:1", "h2:2"), False, "bob", "pw")),
    (["h1:1,h2:2", "h3:3"], Brokers(("h1:1", "h2:2", "h3:3"))),
    ("h1:1,h2:2,h1:1", Brokers(("h1:1", "h2:2"))),
])
def test_broker_lists(urls: str | list[str], expected: Brokers) -> None:
    assert parse_brokers(urls) == expected


def test_split_url_keeps_the_scheme_and_login_on_every_host() -> None:
    assert split_url("overhop://u:p@h1:1,h2:2") == ["overhop://u:p@h1:1", "overhop://u:p@h2:2"]
    assert split_url("h1,h2") == ["h1", "h2"]


@pytest.mark.parametrize(("urls", "says"), [
    ("h1:1,,h2:2", "an empty address"),
    ("overhop://h1:1,", "an empty address"),
    ([], "no broker address"),
    (["overhop://h1:1", "overhops://h2:2"], "mix overhop:// and overhops://"),
    (["overhop://a:secret@h1:1", "overhop://b:secret@h2:2"], "different logins"),
    (["overhop://a:secret@h1:1", "overhop://a:other@h2:2"], "different logins"),
    ("h1:1,http://h2:2", "not an Overhop address"),
])
def test_bad_lists_are_refused_without_showing_a_password(urls: str | list[str],
                                                          says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_brokers(urls)
    assert "secret" not in str(caught.value)


def test_host_port_brackets_ipv6_hosts() -> None:
    assert host_port("::1", 5) == "[::1]:5"
    assert host_port("broker", 9876) == "broker:9876"


def test_redact_urls_hides_every_password() -> None:
    assert redact_urls("overhop://a:secret@h1:1,h2:2") == "overhop://a:***@h1:1,h2:2"
    assert redact_urls(["overhop://a:secret@h1:1", "h2:2"]) == "overhop://a:***@h1:1,h2:2"
    assert "secret" not in repr(parse_brokers("overhop://a:secret@h1:1,h2:2"))


def test_when_no_broker_answers_the_error_names_each(closed_urls: list[str]) -> None:
    async def main() -> None:
        with pytest.raises(ServerUnreachable) as refused:
            await AsyncClient.connect(",".join(closed_urls))
        first, second = closed_urls
        assert refused.value.address == f"{first},{second}"
        assert str(refused.value) == (
            f"cannot connect to {first},{second}: no broker answered ({first}: connection "
            f"refused (is the server running?); {second}: connection refused (is the server "
            "running?))")

    asyncio.run(main())


def test_the_cli_takes_a_list_and_fails_in_one_line(closed_urls: list[str]) -> None:
    listed = ",".join(closed_urls)
    result = CliRunner().invoke(cli, ["queues", "--url", listed], prog_name="overhop")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"overhop: cannot connect to {listed}: no broker answered")
    assert result.stderr.count("\n") == 1
    bad = CliRunner().invoke(cli, ["queues", "--url", f"{listed},"], prog_name="overhop")
    assert bad.exit_code == 2
    assert bad.stderr == f"overhop: an empty address in '{listed},'\n"
