"""One connection to a running server per command, and the options that choose it.

Each command that talks to a server opens one connection with the Python SDK
(`overhop_client`), does its work and closes it. Every such command takes `--url` (default
`127.0.0.1:9876`, or `$OVERHOP_URL`), `--tls-ca FILE` and `--json`. A URL may carry a login
and ask for TLS: `overhop://user:password@host:port`, `overhops://user@host:port` (the
password then from `$OVERHOP_PASSWORD`). TLS trusts the system's store (and
`$SSL_CERT_FILE`), or the CA in `--tls-ca`. Passwords never appear in messages. The brokers
of a cluster are given as one comma-separated list (`host1:9876,host2:9877`, or
`overhop://user@host1:9876,host2:9877` with one login for all): the command connects to the
first that answers and the SDK sends each request to its queue's owner.

Failures are one line on stderr (see `exits`): a server ERR is
`overhop: <CODE>: <message>` (exit 1); a server that cannot be reached or drops the
connection, exit 1; a malformed address, exit 2.
"""

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from overhop_client import AsyncClient, ConnectionLost, OverhopError, ServerUnreachable
from overhop_client.addresses import parse_brokers, redact_urls
from overhop_client.client import DEFAULT_URL

from overhop.cli.exits import ERROR_EXIT, USAGE_EXIT, CliFailure, fail

T = TypeVar("T")

URL_ENV = "OVERHOP_URL"
CLIENT_NAME = "overhop-cli"
# A local server answers in milliseconds; these bound a hung one, not a slow network.
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
TLS_CA_KEY = "overhop_tls_ca"


def call(url: str, action: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect to `url`, run `action` with the client, close; its result. Every failure
    ends the process with one line (see the module documentation)."""
    try:
        parse_brokers(url)
    except ValueError as exc:
        fail(str(exc), USAGE_EXIT)
    shown = redact_urls(url)
    try:
        return asyncio.run(_session(url, action, _tls_context(url)))
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    except OverhopError as exc:
        fail(f"{exc.code}: {exc.message}", ERROR_EXIT)
    except ConnectionLost as exc:
        fail(f"the connection to {shown} was lost: {exc}", ERROR_EXIT)
    except TimeoutError:
        fail(f"{shown} did not answer within {CALL_TIMEOUT_S:g} s", ERROR_EXIT)
    except Exception as exc:  # a bug must still not print a traceback at an operator
        fail(f"unexpected error: {exc!r}", ERROR_EXIT)


def _tls_context(url: str) -> ssl.SSLContext | None:
    """`--tls-ca FILE` (which implies TLS), else None: the URL's scheme decides."""
    context = click.get_current_context(silent=True)
    ca_file = context.meta.get(TLS_CA_KEY) if context is not None else None
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        fail(f"--tls-ca {ca_file}: {getattr(exc, 'strerror', None) or exc}", USAGE_EXIT)


async def _session(url: str, action: Callable[[AsyncClient], Awaitable[T]],
                   tls: ssl.SSLContext | None = None) -> T:
    shown = redact_urls(url)
    try:
        client = await AsyncClient.connect(url, name=CLIENT_NAME, timeout=CONNECT_TIMEOUT_S,
                                           tls=tls)
    except TimeoutError:
        raise CliFailure(f"cannot connect to {shown}: no answer within "
                         f"{CONNECT_TIMEOUT_S:g} s", ERROR_EXIT) from None
    except ServerUnreachable as exc:
        raise CliFailure(f"cannot connect to {shown}: {exc.reason}", ERROR_EXIT) from None
    except OSError as exc:  # dropped during HELLO, TLS or the login
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CliFailure(f"cannot connect to {shown}: {reason}", ERROR_EXIT) from None
    async with client:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await action(client)


def _remember_tls_ca(context: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        context.meta[TLS_CA_KEY] = value


def url_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--url URL`, from `$OVERHOP_URL` when not given, and `--tls-ca FILE`."""
    with_ca = click.option(
        "--tls-ca", metavar="FILE", expose_value=False, callback=_remember_tls_ca,
        envvar="OVERHOP_TLS_CA",
        help="Connect with TLS, trusting the CA certificates in FILE (or $OVERHOP_TLS_CA).")
    return with_ca(click.option(
        "--url", default=DEFAULT_URL, envvar=URL_ENV, show_default=True, metavar="URL",
        help=f"Server address: host:port, overhop://user:password@host:port, or "
             f"overhops://... for TLS; a cluster's brokers comma-separated, "
             f"host1:port,host2:port (or ${URL_ENV}; the password may come from "
             f"$OVERHOP_PASSWORD).")(function))


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`: print the server's reply (or what a write did) as JSON."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the server's reply) instead of a table.")(function)


def common(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that talks to a server takes: `--url` and `--json`."""
    return url_option(json_option(function))
