"""One connection to a running server per command, and the options that choose it.

Each command that talks to a server opens one connection with the Python SDK
(`overhop_client`), does its work and closes it. Every such command takes `--url` (default
`127.0.0.1:9876`, or `$OVERHOP_URL`) and `--json`.

Failures are one line on stderr (see `exits`): a server ERR is
`overhop: <CODE>: <message>` (exit 1); a server that cannot be reached or drops the
connection, exit 1; a malformed address, exit 2.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from overhop_client import AsyncClient, ConnectionLost, OverhopError, ServerUnreachable
from overhop_client.client import DEFAULT_URL
from overhop_client.connection import parse_address

from overhop.cli.exits import ERROR_EXIT, USAGE_EXIT, CliFailure, fail

T = TypeVar("T")

URL_ENV = "OVERHOP_URL"
CLIENT_NAME = "overhop-cli"
# A local server answers in milliseconds; these bound a hung one, not a slow network.
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0


def call(url: str, action: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect to `url`, run `action` with the client, close; its result. Every failure
    ends the process with one line (see the module documentation)."""
    try:
        parse_address(url)
    except ValueError as exc:
        fail(str(exc), USAGE_EXIT)
    try:
        return asyncio.run(_session(url, action))
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    except OverhopError as exc:
        fail(f"{exc.code}: {exc.message}", ERROR_EXIT)
    except ConnectionLost as exc:
        fail(f"the connection to {url} was lost: {exc}", ERROR_EXIT)
    except TimeoutError:
        fail(f"{url} did not answer within {CALL_TIMEOUT_S:g} s", ERROR_EXIT)
    except Exception as exc:  # a bug must still not print a traceback at an operator
        fail(f"unexpected error: {exc!r}", ERROR_EXIT)


async def _session(url: str, action: Callable[[AsyncClient], Awaitable[T]]) -> T:
    try:
        client = await AsyncClient.connect(url, name=CLIENT_NAME, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise CliFailure(f"cannot connect to {url}: no answer within "
                         f"{CONNECT_TIMEOUT_S:g} s", ERROR_EXIT) from None
    except ServerUnreachable as exc:
        raise CliFailure(f"cannot connect to {url}: {exc.reason}", ERROR_EXIT) from None
    except OSError as exc:  # dropped during HELLO
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CliFailure(f"cannot connect to {url}: {reason}", ERROR_EXIT) from None
    async with client:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await action(client)


def url_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--url HOST:PORT`, from `$OVERHOP_URL` when not given."""
    return click.option(
        "--url", default=DEFAULT_URL, envvar=URL_ENV, show_default=True, metavar="HOST:PORT",
        help=f"Server address (or ${URL_ENV}).")(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`: print the server's reply (or what a write did) as JSON."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the server's reply) instead of a table.")(function)


def common(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that talks to a server takes: `--url` and `--json`."""
    return url_option(json_option(function))
