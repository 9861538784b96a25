"""Opening a registered connection to one broker: connect, HELLO, log in, REGISTER.

A `Dialer` holds what every connection of one client shares (the login, TLS, what
REGISTER says, the frame bound, the timeout) and opens a `Session` to any broker with it,
so the brokers of a cluster see one client log in the same way everywhere.
`open_first` tries a list of brokers in turn until one answers.
"""

import asyncio
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from overhop_client.auth import MECHANISM, AuthenticationError, ScramClient
from overhop_client.codec import parse_reply_str
from overhop_client.connection import Connection, PushHandler, parse_address
from overhop_client.errors import (
    ConnectionLost,
    ServerUnreachable,
    ShuttingDownError,
    TooManyConnectionsError,
)
from overhop_client.messages import MessageType
from overhop_client.results import ServerLimits

PASSWORD_ENV = "OVERHOP_PASSWORD"
# Requests kept unanswered at once when the server does not announce its bound
# (`limits.max_requests_in_flight`, the server's default): more would only wait in the socket.
DEFAULT_MAX_REQUESTS_IN_FLIGHT = 2048
# Failures after which another broker is tried: this one is down, busy or leaving. A
# refused login, a TLS failure or a bad answer would be the same everywhere.
UNAVAILABLE = (ServerUnreachable, ConnectionLost, TimeoutError, ShuttingDownError,
               TooManyConnectionsError)


class Register(TypedDict, total=False):
    """The REGISTER payload: who this client is, shown in the server's STATUS."""

    host: str
    pid: int
    name: str
    labels: dict[str, str]


@dataclass(eq=False)
class Session:
    """One registered connection to one broker."""

    address: str
    """The broker as `host:port`, as it was dialled."""
    connection: Connection
    worker_id: str
    """The id the broker gave this connection at REGISTER (`wid`)."""
    user: str | None
    """The user logged in as (None on an open server)."""
    limits: ServerLimits | None
    in_flight: asyncio.Semaphore
    """Requests unanswered at once, within the broker's `max_requests_in_flight`."""

    @property
    def closed(self) -> bool:
        return self.connection.closed

    async def send(self, message_type: MessageType | int, payload: Mapping[str, object]
                   ) -> dict[str, Any] | None:
        """The reply's payload (an ERR raises its exception); None when the connection was
        closed before the request could be written, so it was not sent at all."""
        connection = self.connection
        async with self.in_flight:
            if not connection.writable:
                await connection.wait_writable()
            try:
                future = connection.request(message_type, payload)
            except ConnectionLost:
                return None
            return await future


@dataclass(frozen=True)
class Dialer:
    """How one client connects to any broker: the same login, TLS and REGISTER for all."""

    register: Register
    user: str | None
    password: str | None = field(repr=False)  # never shown
    tls: ssl.SSLContext | None
    max_frame_size: int
    timeout: float
    """Seconds for one broker's connect, HELLO, login and REGISTER together."""

    async def open(self, address: str, on_push: PushHandler) -> Session:
        """A registered session to the broker at `host:port`."""
        host, port = parse_address(address)
        async with asyncio.timeout(self.timeout):
            connection = await Connection.open(host, port, on_push, self.max_frame_size,
                                               self.tls)
            try:
                hi = await connection.request(MessageType.HELLO, {})
                user = await _log_in(connection, hi, self.user, self.password)
                reply = await connection.request(MessageType.REGISTER, dict(self.register))
            except BaseException:
                connection.close()
                raise
        limits = ServerLimits.from_wire(reply["limits"]) if reply.get("limits") else None
        bound = (reply.get("limits") or {}).get("max_requests_in_flight")
        in_flight = asyncio.Semaphore(bound if type(bound) is int and bound > 0
                                      else DEFAULT_MAX_REQUESTS_IN_FLIGHT)
        return Session(address, connection, parse_reply_str(reply, "wid"), user, limits,
                       in_flight)

    async def open_first(self, addresses: Sequence[str], on_push: PushHandler) -> Session:
        """A session to the first of `addresses` that answers, tried in order. One address
        fails as `open` does; with several, a broker down, busy or leaving is skipped, and
        when none answers `ServerUnreachable` names each with its reason."""
        if len(addresses) == 1:
            return await self.open(addresses[0], on_push)
        reasons: list[str] = []
        for address in addresses:
            try:
                return await self.open(address, on_push)
            except UNAVAILABLE as exc:
                reasons.append(f"{address}: {_reason(exc)}")
        raise ServerUnreachable(",".join(addresses),
                                "no broker answered (" + "; ".join(reasons) + ")")


def _reason(error: BaseException) -> str:
    if isinstance(error, ServerUnreachable):
        return error.reason
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


async def _log_in(connection: Connection, hi: Mapping[str, Any], user: str | None,
                  password: str | None) -> str | None:
    """After HI: SCRAM-SHA-256 when a user is given (unless a client certificate has
    logged in already); the user logged in as."""
    if hi.get("user"):
        return str(hi["user"])  # the TLS client certificate named it
    if user is None:
        if hi.get("mechanisms"):
            raise AuthenticationError(
                "the server requires a login: give a user and password (in the URL "
                f"overhop://user:password@host:port, or user= with ${PASSWORD_ENV})")
        return None
    if password is None:
        raise AuthenticationError(f"no password for user {user!r} (give it in the URL, "
                                  f"as password=, or in ${PASSWORD_ENV})")
    exchange = ScramClient(user, password)
    challenge = await connection.request(MessageType.AUTH,
                                         {"mechanism": MECHANISM, "data": exchange.first()})
    server_first = parse_reply_str(challenge, "data")
    # PBKDF2 takes milliseconds: in a thread, so other connections of this loop go on.
    final = await asyncio.get_running_loop().run_in_executor(None, exchange.final,
                                                             server_first)
    outcome = await connection.request(MessageType.AUTH, {"data": final})
    exchange.verify(parse_reply_str(outcome, "data"))
    return user


def password_from_env(user: str | None, password: str | None) -> str | None:
    """The password given, else `$OVERHOP_PASSWORD` when a user is given."""
    if password is None and user is not None:
        return os.environ.get(PASSWORD_ENV)
    return password
