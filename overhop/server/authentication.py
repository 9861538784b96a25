"""Authentication on a connection: what HELLO's reply says, the SCRAM-SHA-256 exchange in
two AUTH messages, client certificates, the failed-login delay, and the users in memory.

The exchange (protocol/PROTOCOL.md section 4):

    C: AUTH {mechanism: "SCRAM-SHA-256", data: client-first}   S: OK {data: server-first}
    C: AUTH {data: client-final}                               S: OK {data: server-final, user}

An unknown name is given a salt and keys derived from the server's secret, so it costs the
same work and gets the same AUTH_FAILED as a wrong password. Every failure's reply waits
(`loop.call_later`, never blocking the loop) for a delay that doubles with each failure
from the same address; the failure is logged with the address and the name, never the
password (which the server never sees: the client sends a proof). The server runs no
PBKDF2: the proof is checked with two HMACs and a SHA-256 (the keys were derived by the
client at `overhop users add`).
"""

import asyncio
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from overhop.auth import scram
from overhop.auth.permissions import Permission
from overhop.auth.scram import Credentials, ScramError
from overhop.auth.users import USER_NAME, UserRecord, fake_credentials, usual_iterations
from overhop.clock import now_ms
from overhop.config.schema import Config, is_loopback
from overhop.errors import ErrorCode, OverhopError
from overhop.logs import get_logger
from overhop.wire.encoding import encode_frame
from overhop.wire.messages import MessageType

if TYPE_CHECKING:
    from overhop.server.connection import Connection

log = get_logger("overhop.auth")
# Addresses whose failures are remembered at once; the oldest is forgotten beyond this, so
# a spray from many addresses cannot grow the server's memory without bound.
MAX_TRACKED_ADDRESSES = 65_536
MECHANISMS = [scram.MECHANISM]


class FailureThrottle:
    """Failed logins per address, and when the reply to the next one may go out.

    Each failure's delay doubles (from `base_ms`, up to `max_ms`), and failures from one
    address are answered one after another: a failure is answered `delay` after the
    previous one's answer, not after its own arrival. So many connections guessing in
    parallel from one address get their answers no faster than one guessing alone.
    """

    def __init__(self, base_ms: int, max_ms: int, memory_ms: int) -> None:
        self._base_ms = base_ms
        self._max_ms = max_ms
        self._memory_ms = memory_ms
        # address -> (failures, time of the last one, when its answer goes out)
        self._failures: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def failed(self, address: str, now_ms: int) -> int:
        """Count a failure from `address`; the ms to wait before answering it."""
        count, last_ms, answer_at = self._failures.pop(address, (0, now_ms, now_ms))
        if now_ms - last_ms >= self._memory_ms:
            count, answer_at = 0, now_ms
        count += 1
        delay = min(self._base_ms << min(count - 1, 32), self._max_ms)
        answer_at = max(answer_at, now_ms) + delay
        self._failures[address] = (count, now_ms, answer_at)
        if len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return answer_at - now_ms

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class AuthService:
    """The users in memory (the store holds them; admin messages change both), the
    server's secret, the throttle, and whether this listener is open to anyone."""

    def __init__(self, config: Config, users: list[UserRecord], secret: bytes) -> None:
        self.users: dict[str, UserRecord] = {user.name: user for user in users}
        self.secret = secret
        self._loopback = is_loopback(config.server.host)
        self._allow_unauthenticated = config.server.allow_unauthenticated
        auth = config.auth
        self.throttle = FailureThrottle(auth.failure_delay_ms, auth.failure_delay_max_ms,
                                        auth.failure_memory_seconds * 1000)

    @property
    def open_access(self) -> bool:
        """No users, and a listener that may serve without them: nothing is asked and
        every connection may do everything (how the server starts on a fresh machine)."""
        return not self.users and (self._loopback or self._allow_unauthenticated)

    def credentials_for(self, name: str) -> tuple[UserRecord | None, Credentials]:
        """The user and its credentials, or None and made-up ones. Both are computed
        either way, so a known name takes as long as an unknown one."""
        iterations = usual_iterations(list(self.users.values()))
        fake = fake_credentials(self.secret, name, iterations)
        user = self.users.get(name)
        return (user, user.credentials) if user is not None else (None, fake)


class ConnectionAuth:
    """One connection's authentication: who it is (`user`), and the exchange under way."""

    __slots__ = ("_client_first", "_conn", "_credentials", "_nonce", "_pending_name",
                 "_server_first", "_user_record", "failing", "user")

    def __init__(self, conn: "Connection") -> None:
        self._conn = conn
        self.user: str | None = None
        self.failing = False
        self._user_record: UserRecord | None = None
        self._credentials: Credentials | None = None
        self._client_first = ""
        self._server_first = ""
        self._nonce = ""
        self._pending_name = ""

    @property
    def permissions(self) -> frozenset[Permission] | None:
        """The user's permissions now (None: no user, nothing is checked)."""
        if self.user is None:
            return None
        user = self._conn.ctx.auth.users.get(self.user)
        return frozenset() if user is None else user.permissions

    def hello(self) -> dict[str, Any]:
        """HI's payload; moves the session on when authentication is required or a client
        certificate already named a user. An open server answers `{}` as it always did."""
        service = self._conn.ctx.auth
        named = self._certificate_user()
        if named is not None:
            self._become(named, "certificate")
            self._conn.session.authenticated_by_certificate()
            return {"mechanisms": MECHANISMS, "user": named}
        if service.open_access:
            return {}
        self._conn.session.require_authentication()
        return {"mechanisms": MECHANISMS}

    def _certificate_user(self) -> str | None:
        transport = self._conn.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return None
        names = [str(value) for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
        name = names[0] if len(names) == 1 else None
        if name is None or name not in self._conn.ctx.auth.users:
            self._conn.log.warning("certificate_user_unknown", subject_cn=name,
                                   peer=self._address())
            return None
        return name

    def step(self, rid: str, payload: dict[str, Any]) -> None:
        """One AUTH message: the first or the second of the exchange."""
        if self.failing:
            return
        try:
            if self._credentials is None:
                self._send_challenge(rid, payload)
            else:
                self._verify(rid, payload)
        except ScramError as exc:
            self._conn.reply_error(rid, OverhopError(
                ErrorCode.AUTH_FAILED, f"bad SCRAM message: {exc}", closes=True))

    def _send_challenge(self, rid: str, payload: dict[str, Any]) -> None:
        mechanism = payload.get("mechanism")
        if mechanism != scram.MECHANISM:
            raise ScramError(f"mechanism must be {scram.MECHANISM!r}, not {mechanism!r}")
        first = scram.parse_client_first(_data(payload))
        name = first.user if USER_NAME.fullmatch(first.user) else "?"
        self._user_record, self._credentials = self._conn.ctx.auth.credentials_for(name)
        self._client_first = first.bare
        self._nonce = first.nonce + scram.new_nonce()
        self._server_first = scram.server_first_message(
            self._nonce, self._credentials.salt, self._credentials.iterations)
        self.user = None
        self._pending_name = first.user
        self._conn.session.advance(MessageType.AUTH, now_ms())
        self._conn.send(encode_frame(MessageType.OK, rid, {"data": self._server_first}))

    def _verify(self, rid: str, payload: dict[str, Any]) -> None:
        final = scram.parse_client_final(_data(payload))
        credentials = self._credentials
        assert credentials is not None
        message = scram.auth_message(self._client_first, self._server_first,
                                     final.without_proof)
        proof_ok = scram.verify_proof(credentials.stored_key, message, final.proof)
        record = self._user_record
        current = None if record is None else self._conn.ctx.auth.users.get(record.name)
        if final.nonce != self._nonce or not proof_ok or current is not record:
            self._fail(rid, self._pending_name)
            return
        assert record is not None
        self._conn.ctx.auth.throttle.succeeded(self._address())
        self._become(record.name, "scram")
        self._conn.session.advance(MessageType.AUTH, now_ms())
        final_message = scram.server_final_message(credentials.server_key, message)
        self._conn.send(encode_frame(MessageType.OK, rid,
                                     {"data": final_message, "user": record.name}))

    def _become(self, name: str, method: str) -> None:
        self.user = name
        self._conn.log = self._conn.log.bind(user=name)
        self._conn.log.info("authenticated", method=method, peer=self._address())

    def _fail(self, rid: str, name: str) -> None:
        """AUTH_FAILED after the delay; nothing more is read from this connection."""
        self.failing = True
        address = self._address()
        delay_ms = self._conn.ctx.auth.throttle.failed(address, now_ms())
        self._conn.log.warning("authentication_failed", user=name[:64], peer=address,
                               delay_ms=delay_ms)
        if self._conn.transport is not None:
            self._conn.transport.pause_reading()
        error = OverhopError(ErrorCode.AUTH_FAILED, "authentication failed", closes=True,
                             details={"delay_ms": delay_ms})
        asyncio.get_running_loop().call_later(delay_ms / 1000, self._conn.reply_error, rid,
                                              error)

    def _address(self) -> str:
        transport = self._conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if peer else "?"


def _data(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    if type(data) is not str:
        raise ScramError("'data' must be a string (a SCRAM message)")
    return data


def exposure_refusal(config: Config, service: AuthService) -> str | None:
    """Why the server must not listen as configured, or None. Without users it serves
    loopback only, unless `server.allow_unauthenticated` says otherwise (then a warning
    is logged at every start)."""
    host = config.server.host
    if service.users or is_loopback(host):
        return None
    if config.server.allow_unauthenticated:
        log.warning("unauthenticated_exposure", host=host,
                    reason="server.allow_unauthenticated is true and there are no users: "
                           "anyone who reaches the port may do anything")
        return None
    return (f"refusing to listen on {host} without users: anyone reaching it could read, "
            f"change and delete every job. Start on 127.0.0.1, add a user (overhop users "
            f"add NAME --permit admin), then listen on {host}; or set "
            f"server.allow_unauthenticated = true to serve it open (see docs/security.md)")


def new_secret() -> bytes:
    return secrets.token_bytes(32)
